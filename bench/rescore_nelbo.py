"""Score saved MDM weights again on many sets of masks: the NELBO of fixed validation windows, without mask noise.

    python bench/rescore_nelbo.py runs/moonshot10/mdm/kept_best_averaged.safetensors --seeds 1 49 \
        --out bench/results/<name>.json                 # mask seeds 1..49, 32 draws each, on the GPU
    python bench/rescore_nelbo.py WEIGHTS --quick       # a CPU smoke run (the anchor's --quick shapes)

The anchor (``nanogpt_anchor.py``) scores its final weights once, on the masks of seed 1 with 32 draws per window.
That number mixes two kinds of noise: which windows the validation text has (fixed: every run sees the same 435)
and which positions the masks hit (a fresh set per seed). Only the second blurs a comparison of two weights on the
same windows, and at 32 draws it is about ±0.008 nats/char: as large as some gaps we want to read. Here each
seed is one look exactly like the anchor's final look (``evaluate(..., seed=s)``); their mean over many seeds is
the windows' NELBO with the mask noise averaged away. The report gives two errors: ``se_windows`` (the spread
between windows, what the anchor's ± is mostly made of) and ``se_masks`` (the spread between seeds' looks over
the square root of their number, the Monte Carlo error left in the mean).

The weights file is a state dict as the anchor keeps it (``kept_best_trained`` / ``kept_best_averaged``); the
network is the anchor's course MDM unless ``--set`` changes its shape, as ``--mdm-set`` did for the run.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from field_settings import field_changes
from minimdm.recipes import build_model, prepare_data
from nanogpt_anchor import COURSE_MDM, QUICK_WINDOWS, evaluate, quick_recipe


def rescore(model, stream, windows, seeds, draws: int, log=print) -> dict:
    """One look per mask seed (the anchor's ``evaluate``), then their mean and its two standard errors."""
    looks = {}
    for seed in seeds:
        start = time.perf_counter()
        looks[seed] = evaluate("mdm", model, stream, windows, draws, seed=seed, keep_windows=True)
        log(f"seed {seed}: {looks[seed]['val']:.4f} ± {looks[seed]['se']:.4f} ({time.perf_counter() - start:.1f} s)")
    per_seed = torch.tensor([looks[seed]["val"] for seed in seeds], dtype=torch.float64)
    per_window = torch.tensor([looks[seed]["per_window"] for seed in seeds], dtype=torch.float64).mean(0)
    return {"seeds": list(seeds), "draws_per_seed": draws,
            "per_seed": {str(seed): {"val": looks[seed]["val"], "se": looks[seed]["se"]} for seed in seeds},
            "val": per_window.mean().item(),  # = the mean of the seeds' looks (each window weighs the same in each)
            "se_windows": (per_window.std() / math.sqrt(len(per_window))).item(),
            "se_masks": (per_seed.std() / math.sqrt(len(seeds))).item() if len(seeds) > 1 else None,
            "per_window": per_window.tolist()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="a state dict (.safetensors) the anchor kept")
    parser.add_argument("--seeds", nargs=2, type=int, default=(1, 8), metavar=("FIRST", "COUNT"),
                        help="mask seeds FIRST, FIRST+1, ... (COUNT of them); seed 1 is the anchor's final look")
    parser.add_argument("--draws", type=int, default=32, help="draws per window and seed (the anchor's final: 32)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="the network's shape, as --mdm-set")
    parser.add_argument("--quick", action="store_true", help="the anchor's --quick shapes and windows, on the CPU")
    parser.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = parser.parse_args(argv)
    first, count = args.seeds
    if count < 1:
        parser.error(f"--seeds {first} {count}: COUNT must be >= 1")
    if args.draws < 1:
        parser.error(f"--draws {args.draws} must be >= 1")
    if not Path(args.weights).is_file():
        parser.error(f"weights file {args.weights} does not exist (the anchor keeps kept_best_*.safetensors in "
                     "its --checkpoint-dir, under mdm/)")

    recipe = quick_recipe(COURSE_MDM) if args.quick else COURSE_MDM
    recipe = replace(recipe, **field_changes(recipe, args.set, "--set", fixed=("corpus", "tokenizer", "seq_len")))
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    tokenizer, stream = prepare_data(recipe)
    windows = stream.windows("val", QUICK_WINDOWS if args.quick else None)
    model = build_model(recipe, tokenizer.vocab_size, causal=False).to(device)
    model.load_state_dict(load_file(args.weights))
    model.eval()
    report = {"weights": args.weights, "device": str(device), "val_windows": len(windows),
              **rescore(model, stream, windows, range(first, first + count), args.draws)}
    masks = "" if report["se_masks"] is None else f", masks ± {report['se_masks']:.4f}"
    print(f"NELBO over {count} mask seeds × {args.draws} draws: {report['val']:.4f} "
          f"(windows ± {report['se_windows']:.4f}{masks})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
