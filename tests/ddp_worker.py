"""One process of a data-parallel run for tests/test_distributed.py (launched with torchrun, or alone).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT.json GRAD_ACCUM [CKPT [DIE_AT]]
"""
import json
import sys

import torch

from minimdm.distributed import current_world
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.nn import Transformer, TransformerConfig
from minimdm.toys import MarkovChain
from minimdm.train import TrainConfig, train

DATA = MarkovChain(vocab_size=8, concentration=0.3, seed=0).sample(2048, 16, torch.Generator().manual_seed(0))
STEPS = 30


def model():
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=8, n_layers=1, d_model=32, n_heads=2, max_len=16, dropout=0.1))


def config(grad_accum, checkpoint_dir=None):
    return TrainConfig(steps=STEPS, lr=3e-3, warmup_steps=4, log_every=1, progress=False, grad_accum=grad_accum,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=10 if checkpoint_dir else 0, device="cpu",
                       ema_decay=0.9)  # the weight average must follow the same run too


def batch_fn(step):
    return DATA[torch.randint(0, len(DATA), (16,))]


def loss_fn(m, x):
    return mdm_pretrain_loss(m, x, m.mask_id)  # reads an attribute through the DDP wrapper


class Killed(Exception):
    pass


def run(grad_accum, checkpoint_dir=None, die_at=None):
    """Train (resuming from checkpoint_dir if it holds a checkpoint); returns (loss history, final weights and
    their average, the latter named "ema.<name>")."""
    net = model()

    def batches(index):  # index counts micro-batches; die while preparing step die_at
        if die_at is not None and index // (grad_accum * current_world().size) == die_at:
            raise Killed
        return batch_fn(index)

    result = train(net, loss_fn, batches, config(grad_accum, checkpoint_dir))
    weights = net.state_dict() | {f"ema.{k}": v for k, v in result.ema_weights.items()}
    return [h["loss"] for h in result.history], {k: v.tolist() for k, v in weights.items()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, accum = sys.argv[1], int(sys.argv[2])
    ckpt = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    die = int(sys.argv[4]) if len(sys.argv) > 4 else None
    try:
        losses, weights = run(accum, ckpt, die)
        record = {"losses": losses, "weights": weights, "world": current_world().size}
    except Killed:
        record = {"killed": True}
    if current_world().is_main:
        with open(out, "w") as handle:
            json.dump(record, handle)
