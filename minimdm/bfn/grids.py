"""Time grids for the BFN solvers (Xue et al. 2024, arXiv 2404.15766).

Solvers start at t = eta > 0, not at t = 0: there the continuous flow collapses to a point mass at 0 (lambda = -inf)
and the discrete latent logits to 0. The code's default grid is uniform in BFN time; a grid uniform in
lambda = half log-SNR (continuous data) is the natural one for exponential integrators (their error expansion is
in powers of h = lambda' - lambda).
"""
from __future__ import annotations

from minimdm.bfn.continuous import ContinuousSchedule


def _check(n_steps: int, t_start: float, t_end: float) -> None:
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(f"n_steps={n_steps!r}: need an integer >= 1")
    if not 0.0 < t_start < t_end <= 1.0:
        raise ValueError(f"t_start={t_start!r}, t_end={t_end!r}: need 0 < t_start < t_end <= 1 (start at eta > 0)")


def uniform_time_grid(n_steps: int, t_start: float, t_end: float = 1.0) -> list[float]:
    """t_k = t_start + k (t_end - t_start) / N, k = 0..N  (the code's grid, t_start = eta)."""
    _check(n_steps, t_start, t_end)
    return [t_start + k * (t_end - t_start) / n_steps for k in range(n_steps + 1)]


def uniform_lambda_grid(n_steps: int, t_start: float, t_end: float, schedule: ContinuousSchedule) -> list[float]:
    """Times whose lambda(t) = 1/2 ln(gamma / (1 - gamma)) are equally spaced between lambda(t_start) and lambda(t_end)."""
    _check(n_steps, t_start, t_end)
    lam_start, lam_end = float(schedule.half_log_snr(t_start)), float(schedule.half_log_snr(t_end))
    grid = [float(schedule.time_from_half_log_snr(lam_start + k * (lam_end - lam_start) / n_steps)) for k in range(n_steps + 1)]
    grid[0], grid[-1] = t_start, t_end  # exact end points despite round-off in the inverse
    return grid


GRID_SPACINGS = ("uniform_t", "uniform_lambda")


def time_grid(n_steps: int, t_start: float, t_end: float = 1.0, spacing: str = "uniform_t", schedule: ContinuousSchedule | None = None) -> list[float]:
    """Dispatch on ``spacing`` in ("uniform_t", "uniform_lambda"); the latter needs the continuous ``schedule``."""
    if spacing == "uniform_t":
        return uniform_time_grid(n_steps, t_start, t_end)
    if spacing == "uniform_lambda":
        if not isinstance(schedule, ContinuousSchedule):
            raise ValueError("spacing='uniform_lambda' needs schedule=ContinuousSchedule(...) (continuous data only)")
        return uniform_lambda_grid(n_steps, t_start, t_end, schedule)
    raise ValueError(f"spacing={spacing!r}: allowed values are {GRID_SPACINGS}")
