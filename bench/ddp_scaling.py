"""Data-parallel throughput: tokens/s of the trainer on 1 process against N processes of one machine.

    python bench/ddp_scaling.py --shape gpt2_small --kind mdm                 # one GPU, the baseline
    torchrun --standalone --nproc_per_node 2 bench/ddp_scaling.py --shape gpt2_small --kind mdm
    torchrun --standalone --nproc_per_node 2 bench/ddp_scaling.py --quick    # CPU smoke run (gloo)

Each process trains the shape at the given per-process batch (so N processes train N times the tokens per step);
rank 0 prints the whole world's tokens/s over the second half of the run. Scaling efficiency = tokens/s on N
divided by N x tokens/s on 1, both measured on the same machine.
"""
from __future__ import annotations

import argparse

import torch

from minimdm.arm import KINDS, loss_function
from minimdm.distributed import current_world
from minimdm.train import TrainConfig, train
from train_throughput import SHAPES, build, random_batches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="shakespeare_char")
    parser.add_argument("--kind", choices=KINDS, default="mdm")
    parser.add_argument("--batch", type=int, default=None, help="per process (default: the shape's first batch size)")
    parser.add_argument("--steps", type=int, default=200, help="half of them are timed")
    parser.add_argument("--quick", action="store_true", help="tiny CPU shape, 20 steps")
    args = parser.parse_args()
    world = current_world()
    if args.quick:
        args.shape, args.steps = "tiny_cpu", 20
    device = torch.device("cuda", world.local_rank) if torch.cuda.is_available() and not args.quick else torch.device("cpu")
    batch = args.batch or SHAPES[args.shape][5][0]
    model, seq_len, vocab = build(args.shape, device, args.kind)
    cfg = TrainConfig(steps=args.steps, lr=1e-3, warmup_steps=10, log_every=args.steps // 2, compile=device.type == "cuda",
                      device=str(device), progress=False)
    result = train(model, loss_function(args.kind, model), random_batches(vocab, batch, seq_len, device), cfg)
    if world.is_main:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{args.shape} {args.kind} | {world.size} x {name} | batch {batch} per process | "
              f"{result.history[-1]['tokens_per_s']:,.0f} tokens/s | last loss {result.history[-1]['loss']:.4f}")


if __name__ == "__main__":
    main()
