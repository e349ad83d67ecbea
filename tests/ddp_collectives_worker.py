"""One process of tests/test_distributed.py's collectives check (launched with torchrun, two gloo processes).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_collectives_worker.py OUT.json

Counts the sums over processes whose tensor gloo's worker thread still held when the call returned (it must hold
none: a process that exits while it does aborts), and checks the sums themselves; then counts the ranks where
``any_rank`` answered wrong (true on one rank must be true on all, false on all false on all).
"""
import json
import sys

import torch

from minimdm import distributed

CALLS = 300

if __name__ == "__main__":
    _, world = distributed.setup(torch.device("cpu"))
    held, wrong = 0, 0
    for call in range(CALLS):
        total = distributed.sum_over_ranks(torch.tensor([float(world.rank + call)]), world)
        held += total._use_count() > 1
        wrong += total.item() != sum(rank + call for rank in range(world.size))
        distributed.barrier(world)
    device = torch.device("cpu")
    answers = [distributed.any_rank(flag, world, device) for flag in (world.rank == 1, world.rank == 0, False, True)]
    any_wrong = distributed.sum_over_ranks(torch.tensor([float(answers != [True, True, False, True])]), world)
    if world.is_main:
        with open(sys.argv[1], "w") as handle:
            json.dump({"world": world.size, "held": held, "wrong": wrong, "any_rank_wrong": int(any_wrong.item())},
                      handle)
