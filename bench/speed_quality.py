"""Speed versus sample quality on a Markov source (SMDM's speed/quality trade-off, arXiv 2410.18514; notebook 04, section 4, at GPU scale).

    python bench/speed_quality.py            # CUDA: L = 256, 4 layers d 256, batch 256; writes a JSON for notebook 04
    python bench/speed_quality.py --quick    # CPU smoke run in seconds (tiny shapes)

An ARM and an MDM of the same size are trained by the shared harness on a 16-state Markov chain (the MDM gets 3x
the ARM's steps, as in notebook 04). Then, from one seed each, the ARM samples with its KV cache and the MDM with
LLaDA's sampler and with RADD's cached tau-leaping at several step counts (``minimdm.smdm.speed_quality``). Quality
is exact: the true chain's NLL per token of the samples. Each timing is one run after a warm-up run, wrapped in
``torch.cuda.synchronize``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from minimdm.arm import train_kind
from minimdm.recipes import TextRecipe
from minimdm.smdm import MarkovSource, fewest_matching_steps, speed_quality
from minimdm.toys.markov import MarkovChain

SETTINGS = {  # length, layers, d_model, heads, ARM steps, MDM steps, sampling batch, MDM step counts
    "gpu": dict(length=256, n_layers=4, d_model=256, n_heads=8, arm_steps=3000, mdm_steps=9000, batch_size=256,
                sampling_steps=[8, 16, 32, 64, 128, 256]),
    "quick": dict(length=16, n_layers=1, d_model=32, n_heads=2, arm_steps=20, mdm_steps=60, batch_size=8,
                  sampling_steps=[4, 16]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/speed_quality_<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if not args.quick and device.type != "cuda":
        raise SystemExit("no CUDA device: this is a GPU benchmark (use --quick for a CPU smoke run)")
    cfg = SETTINGS["quick" if args.quick else "gpu"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    chain = MarkovChain(vocab_size=16, concentration=0.3, seed=0)
    source = MarkovSource(chain, cfg["length"])
    models = {}
    for kind in ("arm", "mdm"):
        recipe = TextRecipe(seq_len=cfg["length"], n_layers=cfg["n_layers"], d_model=cfg["d_model"],
                            n_heads=cfg["n_heads"], batch_size=64, steps=cfg[f"{kind}_steps"], lr=2e-3,
                            warmup_steps=cfg[f"{kind}_steps"] // 20 + 1)
        models[kind], result = train_kind(recipe, kind, source, chain.vocab_size, device, progress=False)
        print(f"{kind}: {result.step} steps in {result.seconds:.0f} s, last training loss {result.history[-1]['loss']:.3f}")
    rows = speed_quality(models["arm"], models["mdm"], chain, cfg["length"], cfg["sampling_steps"],
                         batch_size=cfg["batch_size"])
    perfect_nll = chain.entropy(cfg["length"]) / cfg["length"]  # H(x_1..x_L)/L: what perfect samples score
    print(f"\n{name} | torch {torch.__version__} | L = {cfg['length']} | batch {cfg['batch_size']} | "
          f"perfect samples score H(x_1..x_L)/L = {perfect_nll:.4f} nats/token")
    print(f"{'sampler':>17} {'steps':>6} {'NFE':>7} {'seconds':>8} {'tokens/s':>10} {'sample NLL':>11}")
    for r in rows:
        print(f"{r['sampler']:>17} {r['steps']:6d} {r['nfe']:7.1f} {r['seconds']:8.3f} {r['tokens_per_s']:10,.0f} "
              f"{r['nll_per_token']:11.4f}")
    arm = rows[0]
    for sampler in ("MDM", "MDM + RADD cache"):
        match = fewest_matching_steps(rows, sampler)
        print(f"{sampler}: " + (f"{match['steps']} steps match the ARM's quality within 0.02 nats, at "
                                f"{match['tokens_per_s'] / arm['tokens_per_s']:.2f}x its tokens/s" if match else
                                "no step count matched the ARM's quality within 0.02 nats"))
    tag = "quick" if args.quick else name.split()[-1].lower()
    out = Path(args.out or f"bench/results/speed_quality_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "torch": torch.__version__, "settings": cfg,
                               "sequence_entropy_per_token": perfect_nll, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
