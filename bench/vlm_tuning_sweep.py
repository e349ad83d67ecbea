"""Which visual-tuning setting brings the MDM's "what digit" accuracy within 2 points of the frozen classifier.

    python bench/vlm_tuning_sweep.py                  # one GPU: notebook 07's GPU recipe, 3 seeds per variant
    SWEEP_QUICK=1 python bench/vlm_tuning_sweep.py    # CPU smoke run (numbers meaningless)

The encoder and the text-pretrained LM are trained once; each variant then changes one field of the recipe for
stages 2-3 (alignment, full tuning) and reports exact match per question kind on every held-out image, mean and
std over seeds. Results: bench/results/vlm_tuning_sweep_h100.txt.
"""
import argparse
import dataclasses
import os
import time

import numpy as np

from minimdm.presets import default_device
from minimdm.vlm.dialogues import (DialogueTokenizer, encode_dialogues, evaluation_dialogues, load_digit_images,
                                   make_dialogues)
from minimdm.vlm.encoder import classifier_accuracy
from minimdm.vlm.sampling import evaluate
from minimdm.vlm.stages import RecipeConfig, build_model, pretrain_encoder, pretrain_text, visual_tuning

argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()  # --help
QUICK = os.environ.get("SWEEP_QUICK") == "1"
KINDS = ("digit", "parity", "plus", "describe", "turn 2")
VARIANTS = {"encoder_lr_scale 0.05": dict(encoder_lr_scale=0.05), "recipe as in notebook 07": {},
            "tune_steps 900": dict(tune_steps=900), "align_steps 300": dict(align_steps=300),
            "tune_steps 900, encoder_lr_scale 0.05": dict(tune_steps=900, encoder_lr_scale=0.05),
            "tune_steps 900, tune_lr 5e-4": dict(tune_steps=900, tune_lr=5e-4)}

device = default_device()
recipe = RecipeConfig(d_model=128, n_layers=4, n_heads=4, batch_size=256, encoder_steps=600, text_steps=1200,
                      align_steps=60, tune_steps=500, lr=2e-3, tune_lr=1e-3, text_dialogues=30000, device=str(device))
if QUICK:
    recipe = dataclasses.replace(recipe, d_model=32, n_layers=1, batch_size=16, encoder_steps=5, text_steps=5,
                                 align_steps=2, tune_steps=3, text_dialogues=300)
seeds = (0,) if QUICK else (0, 1, 2)
tokenizer, data = DialogueTokenizer(), load_digit_images()
pool = encode_dialogues(tokenizer, make_dialogues(data, data.train_index, 300 if QUICK else 20000, seed=1))
held_out = evaluation_dialogues(data, data.test_index, seed=2)[: 8 if QUICK else None]

start = time.time()
encoder, _ = pretrain_encoder(data, recipe, 0)
test_images, test_digits = data.images[data.test_index].to(device), data.digits[data.test_index].to(device)
print(f"classifier {classifier_accuracy(encoder, test_images, test_digits):.3f} ({time.time() - start:.0f} s)", flush=True)
start = time.time()
text_model = build_model(encoder, tokenizer, recipe, "bidirectional", 0)
pretrain_text(text_model, tokenizer, recipe, 0)
print(f"text pretraining {time.time() - start:.0f} s", flush=True)
for name, change in VARIANTS.items():
    config, scores, start = dataclasses.replace(recipe, **change), [], time.time()
    for seed in seeds:
        model, _, _ = visual_tuning(text_model, tokenizer, data, pool, config, seed=seed)
        score = evaluate(model, tokenizer, held_out, data)
        scores.append([score[kind] for kind in KINDS])
        print(f"  {name}, seed {seed}: digit {scores[-1][0]:.3f}", flush=True)
    scores = np.array(scores)
    spread = scores.std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(KINDS))
    print(f"{name}: {(time.time() - start) / len(seeds):.0f} s per run; " + ", ".join(
        f"{kind} {m:.3f} ± {s:.3f}" for kind, m, s in zip(KINDS, scores.mean(0), spread)), flush=True)
