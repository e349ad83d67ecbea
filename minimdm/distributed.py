"""Data-parallel training across processes: what ``train`` needs when launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m minimdm train --preset gpu

torchrun starts one process per GPU and tells each its place through environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT). ``setup`` reads them, joins the process group (NCCL on GPUs, gloo on CPU)
and picks the process's GPU; without torchrun it is a world of one and nothing here costs anything.

How one optimizer step is shared. A step is W x A micro-batches (W processes, A = ``grad_accum`` each). They are
numbered k = rank * A + m and micro-batch k is drawn exactly as a single process with ``grad_accum = W * A``
would draw it (same data index, same RNG seed), so gradients averaged by DDP equal that process's accumulated
gradient: two processes give one process's loss trajectory with the doubled batch, to float rounding. The
effective batch is W x A x batch size: adding GPUs to a recipe multiplies it, as in any DDP code, and a run
resumed with W x A unchanged (1 x 2 after 2 x 1, say) continues the very same schedule.

A loss function must call the model it is given (``model(x)``): DDP prepares its gradient averaging in that forward.
"""
from __future__ import annotations

import atexit
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone evaluates, prints and writes checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} must be an integer (torchrun sets it; unset it to train in one process)") from None


def current_world() -> World:
    """This process's place, from torchrun's variables (a world of one without them)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world = World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if world.size < 1 or not 0 <= world.rank < world.size:
        raise ValueError(f"RANK={world.rank}, WORLD_SIZE={world.size}: need 0 <= RANK < WORLD_SIZE")
    return world


def setup(device: torch.device) -> tuple[torch.device, World]:
    """Join the process group if torchrun started us; on CUDA each process takes GPU ``LOCAL_RANK``."""
    world = current_world()
    if world.size == 1:
        return device, world
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_together)
    return device, world


def _leave_together() -> None:
    """At exit: wait for the others (a process that leaves while a peer still reads its gloo connection can abort
    that peer), then close the group."""
    if dist.is_initialized():
        barrier(current_world())
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """The model as the loss function sees it: DDP across processes (gradients averaged in backward)."""
    return model if world.size == 1 else _DataParallel(model)


class _DataParallel(DistributedDataParallel):
    """DDP that still answers ``model.mask_id``, ``model.config``...: loss functions read them."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's own __init__): no recursion
                raise
            return getattr(self.module, name)


def sum_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``values`` over processes (a new tensor). Under gloo it returns only once gloo's worker thread has
    let go of the tensor: that thread takes the GIL to drop its reference, and if the interpreter is already shutting
    down by then the process aborts ("terminate called without an active exception"). So no collective of ours is
    ever left in flight when a process exits."""
    if world.size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    if dist.get_backend() == "gloo":
        give_up = time.monotonic() + 1.0
        while values._use_count() > 1 and time.monotonic() < give_up:
            time.sleep(1e-4)  # lets the worker thread take the GIL
    return values


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every process if it is true on one (all must stop at the same step, or the others wait forever)."""
    if world.size == 1:
        return flag
    return bool(sum_over_ranks(torch.tensor([float(flag)], device=device), world).item() > 0)


def barrier(world: World) -> None:
    """Wait for every process: each reads back a sum that needs every process's part (``.item()`` also makes the
    host wait under NCCL, where a collective alone only queues work on the GPU). Not gloo's own barrier: that keeps
    hold of the collectives before it until it is itself dropped, and none may be in flight at exit (see
    ``sum_over_ranks``)."""
    if world.size > 1:
        sum_over_ranks(torch.zeros(1, device="cuda" if dist.get_backend() == "nccl" else "cpu"), world).item()
