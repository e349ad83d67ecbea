"""Does notebook 02's time-input gap repeat with another training seed? Its section 4 at the CPU preset, per seed.

    python bench/time_input_seeds.py            # seeds 0 and 1, about 3 minutes each on 2 CPU cores
    python bench/time_input_seeds.py --seeds 0 1 2

The notebook trains each network once (seed 0), so its paired error covers the evaluation (which held-out sequences,
which masks) and not the training run. This script repeats the same two trainings (same Markov source, backbone,
lambda-DCE loss, 2,000 steps, held-out set and k-DCE evaluation) for each seed and prints the paired gap. Seed 0
reproduces the notebook's number exactly. Results: ``bench/results/time_input_seeds_cpu.txt``.
"""
from __future__ import annotations

import argparse
import math

import torch

from minimdm.nn import Transformer, TransformerConfig
from minimdm.radd import get_loss, zero_shot_perplexity
from minimdm.toys import MarkovChain
from minimdm.train import TrainConfig, train

LENGTH, BATCH = 32, 32


def paired_gap(seed: int) -> tuple[float, float]:
    """Time-conditioned minus time-free k-DCE NELBO per token on the held-out set, paired by sequence and mask."""
    chain = MarkovChain(vocab_size=16, seed=0)
    held_out = chain.sample(512, LENGTH, generator=torch.Generator().manual_seed(123))
    loss = get_loss("lambda_dce", mask_id=16)
    config = TrainConfig(steps=2000, lr=3e-3, warmup_steps=40, log_every=50, device="cpu", progress=False, seed=seed)
    per_sequence = {}
    for time_cond in (False, True):
        torch.manual_seed(seed)
        model = Transformer(TransformerConfig(vocab_size=16, n_layers=3, d_model=96, n_heads=4, max_len=LENGTH,
                                              time_cond=time_cond))
        train(model, loss.training_loss, lambda step: chain.sample(BATCH, LENGTH), config)
        result = zero_shot_perplexity(model.eval(), held_out, 16, loss="k_dce", draws=8,
                                      generator=torch.Generator().manual_seed(7))
        per_sequence[time_cond] = result.per_sequence
        print(f"  seed {seed}, time_cond={time_cond}: k-DCE NELBO {result.nelbo_per_token} nats/token", flush=True)
    gap = per_sequence[True] - per_sequence[False]
    return gap.mean().item(), gap.std().item() / math.sqrt(len(gap))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(2)
    for seed in args.seeds:
        mean, se = paired_gap(seed)
        print(f"seed {seed}: time-conditioned minus time-free {mean:+.4f} ± {se:.4f} nats/token (paired)", flush=True)


if __name__ == "__main__":
    main()
