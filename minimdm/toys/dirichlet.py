"""Reproducible Dirichlet draws for the synthetic sources (one seed -> one distribution, on any machine)."""
from __future__ import annotations

import torch

from minimdm.rng import seeded


def seeded_dirichlet(shape: tuple[int, ...], concentration: float, seed: int) -> torch.Tensor:
    """Rows of Dirichlet(concentration) over the last axis of ``shape``, float64, from ``seed`` alone."""
    if concentration <= 0:
        raise ValueError(f"concentration={concentration} must be > 0")
    with seeded(seed):  # the caller's global RNG is left untouched
        gamma = torch.distributions.Gamma(torch.full(shape, float(concentration), dtype=torch.float64), 1.0).sample()
    gamma = gamma.clamp_min(1e-300)  # tiny concentrations can underflow to exactly 0
    return gamma / gamma.sum(-1, keepdim=True)
