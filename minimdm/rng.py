"""Draws from a seed of their own, leaving the caller's global random state as it was."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu"):
    """Seed the global generators for the ``with`` block, then give the caller's states back (CPU, and ``device``'s)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
        torch.manual_seed(seed)
        yield
