"""The post-training 2-D search over Beta-CDF schedules (App. E.1)."""
from __future__ import annotations

import itertools

import torch

from minimdm.energy.schedules import BetaCDFSchedule

BETA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))  # a, b in {0.1, ..., 1.0}


def beta_grid_search(score, a_values=BETA_GRID, b_values=BETA_GRID, progress: bool = False) -> torch.Tensor:
    """Evaluate score(BetaCDFSchedule(a, b)) -> float (lower is better) on the grid: (len(a_values), len(b_values))."""
    from tqdm.auto import tqdm

    table = torch.empty(len(a_values), len(b_values), dtype=torch.float64)
    pairs = list(itertools.product(range(len(a_values)), range(len(b_values))))
    for i, j in tqdm(pairs, disable=not progress, desc="Beta grid"):
        table[i, j] = score(BetaCDFSchedule(a_values[i], b_values[j]))
    return table


def best_on_grid(table: torch.Tensor, a_values=BETA_GRID, b_values=BETA_GRID):
    """(a, b, score) of the lowest score in a grid-search table."""
    flat = int(table.argmin())
    i, j = divmod(flat, table.shape[1])
    return a_values[i], b_values[j], float(table[i, j])
