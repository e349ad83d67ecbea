"""Per-step overhead of the minimdm trainer over a plain loop, on a model so small that overhead is all there is.

    python bench/trainer_overhead.py

A 1-layer, d 8 MDM on a fixed 4 x 8 batch, one CPU thread, 400 steps each way. On a GPU this overhead is what
separates the two at small batch sizes, where a step is bound by kernel launches rather than arithmetic.
"""
import argparse
import time

import torch

from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.nn import Transformer, TransformerConfig
from minimdm.train import TrainConfig, make_optimizer, train

STEPS = 400


def tiny_model():
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=8, n_layers=1, d_model=8, n_heads=2, max_len=8))


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    batch = torch.randint(0, 8, (4, 8))
    model = tiny_model()
    optimizer = make_optimizer(model, TrainConfig())
    start = time.perf_counter()
    for _ in range(STEPS):
        loss = mdm_pretrain_loss(model, batch, 8)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    plain = (time.perf_counter() - start) / STEPS
    start = time.perf_counter()
    train(tiny_model(), lambda m, x: mdm_pretrain_loss(m, x, 8), lambda step: batch,
          TrainConfig(steps=STEPS, log_every=STEPS, progress=False))
    trainer = (time.perf_counter() - start) / STEPS
    print(f"plain loop {plain * 1e6:.0f} us/step | minimdm trainer {trainer * 1e6:.0f} us/step | "
          f"overhead {(trainer - plain) * 1e6:+.0f} us/step")


if __name__ == "__main__":
    main()
