"""How much does notebook 07's "what digit" accuracy move when the whole GPU recipe is run again?

    python bench/vlm_repeats.py                                   # the notebook's GPU recipe, MDM arm, tuning seeds 0 1 2
    python bench/vlm_repeats.py --arms all                        # every arm and data fraction, in the notebook's order
    python bench/vlm_repeats.py --set batch_size=256 tune_steps=800 --no-amp   # change the recipe
    python bench/vlm_repeats.py --text-seeds 0 1 2 --tune-seeds 0 1          # a fresh text-pretrained LM per seed
    python bench/vlm_repeats.py --quick                           # CPU smoke run (numbers meaningless)

The encoder is pretrained once (seed 0). For each text seed, the language models are pretrained on text; for each
tuning seed, stages 2-3 run on a copy and every held-out image is scored. With one text seed and ``--arms all``
this is exactly the computation of notebook 07's GPU preset. Each line printed gives exact match per question
kind, and the sum of the text-pretrained LM's weights: the same seed giving a different sum in two processes
shows that training on the GPU is not bit-reproducible. Results: bench/results/vlm_repeats_h100.txt.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from field_settings import field_changes
from minimdm.presets import default_device
from minimdm.vlm.dialogues import (DialogueTokenizer, encode_dialogues, evaluation_dialogues, load_digit_images,
                                   make_dialogues)
from minimdm.vlm.encoder import classifier_accuracy
from minimdm.vlm.sampling import evaluate
from minimdm.vlm.stages import RecipeConfig, build_model, pretrain_encoder, pretrain_text, visual_tuning

NOTEBOOK_GPU_RECIPE = RecipeConfig(d_model=128, n_layers=4, n_heads=4, batch_size=1024, encoder_steps=600,
                                   text_steps=400, align_steps=60, tune_steps=450, lr=2e-3, tune_lr=2e-3,
                                   text_dialogues=30000)
QUICK_SIZES = dict(d_model=32, n_layers=1, batch_size=16, encoder_steps=5, text_steps=3, align_steps=2, tune_steps=3,
                   text_dialogues=300)
ARMS = {"MDM": ("bidirectional", "bidirectional"), "MDM dialogue-causal": ("bidirectional", "dialogue_causal"),
        "AR": ("causal", None)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", choices=("mdm", "all"), default="mdm", help="all: also the fractions 0.1 and 0.3")
    parser.add_argument("--text-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="change the recipe")
    parser.add_argument("--no-amp", action="store_true", help="train in float32 (no bf16 autocast)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 20 questions")
    args = parser.parse_args()

    device = default_device()
    recipe = dataclasses.replace(NOTEBOOK_GPU_RECIPE, device=str(device), amp=not args.no_amp,
                                 **(QUICK_SIZES if args.quick else {}))
    recipe = dataclasses.replace(recipe, **field_changes(recipe, args.set, "--set", fixed=("device", "amp", "progress")))
    print(recipe, flush=True)
    tokenizer, data = DialogueTokenizer(), load_digit_images()
    pool = encode_dialogues(tokenizer, make_dialogues(data, data.train_index, 20000, seed=1))
    held_out = evaluation_dialogues(data, data.test_index, seed=2)[: 20 if args.quick else None]
    arms = ARMS if args.arms == "all" else {"MDM": ARMS["MDM"]}
    start = time.time()
    encoder, _ = pretrain_encoder(data, recipe, 0)
    test_images, test_digits = data.images[data.test_index].to(device), data.digits[data.test_index].to(device)
    print(f"classifier {classifier_accuracy(encoder, test_images, test_digits):.4f}", flush=True)
    digits = {arm: [] for arm in arms}
    for text_seed in args.text_seeds:
        text_models = {}
        for base in sorted({base for base, _ in arms.values()}, key=("bidirectional", "causal").index):
            text_models[base] = build_model(encoder, tokenizer, recipe, base, seed=text_seed)
            pretrain_text(text_models[base], tokenizer, recipe, seed=text_seed)
        weights = sum(p.double().sum().item() for p in text_models["bidirectional"].lm.parameters())
        for tune_seed in args.tune_seeds:
            for arm, (base, attention) in arms.items():
                fractions = [0.1, 0.3, 1.0] if args.arms == "all" and arm != "MDM dialogue-causal" else [1.0]
                for fraction in fractions:  # the smaller fractions only keep the notebook's order of runs
                    model, _, _ = visual_tuning(text_models[base], tokenizer, data, pool, recipe, seed=tune_seed,
                                                fraction=fraction, attention=attention)
                score = evaluate(model, tokenizer, held_out, data)
                digits[arm].append(score["digit"])
                print(f"{arm}, text seed {text_seed} (MDM text LM weights sum {weights:.6f}), tuning seed {tune_seed}: "
                      + ", ".join(f"{kind} {value:.3f}" for kind, value in score.items())
                      + f" ({time.time() - start:.0f} s)", flush=True)
    for arm, values in digits.items():
        spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
        print(f"{arm}: digit {np.mean(values):.4f} ± {spread:.4f} (std over {len(values)} runs), "
              f"range {min(values):.3f} to {max(values):.3f}", flush=True)


if __name__ == "__main__":
    main()
