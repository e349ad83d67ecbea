"""Fast samplers for discrete-data BFNs: SDE-BFN-Solver1/2 and BFN-Solver1/2 (Xue et al. 2024, arXiv 2404.15766,
Algorithms 4-7, Thm 5.1 and Prop. 5.3), plus the single-step (midpoint) BFN-Solver2 of the released BFN-Solver code
(``ode_bfnsolver2_single_step``: two network calls per step). They integrate the reverse SDE / PF-ODE of the latent logits y (theta = softmax(y)) in BFN time.

With beta(t) = beta_1 t^2 the PF-ODE reads d(y/t)/dt = beta_1 (K e_hat - 1): its nonlinear part has a constant
weight in t, so the solvers step in t directly (no lambda change of variables). e_hat is the predicted class
probability vector at the step's start time; multistep second-order methods also use the previous step's e_hat.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from minimdm.bfn.continuous import BFNSamples
from minimdm.bfn.discrete import DiscreteSchedule, ProbabilityPredictor
from minimdm.bfn.grids import uniform_time_grid

DISCRETE_SOLVERS = ("bfn_solver1", "bfn_solver2", "bfn_solver2_single", "sde_bfn_solver1", "sde_bfn_solver2")
FINAL_OUTPUTS = ("sample", "mode")


def _drift_direction(e_hat: Tensor) -> Tensor:
    """K e_hat - 1: the direction the logits move in."""
    return e_hat.shape[-1] * e_hat - 1


def solver1_step(y: Tensor, t: float, t_next: float, e_hat: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """BFN-Solver1 (ODE, Algorithm 6):  y' = (t'/t) y + beta_1 t' (t' - t) (K e_hat - 1)."""
    return (t_next / t) * y + schedule.beta_1 * t_next * (t_next - t) * _drift_direction(e_hat)


def solver2_step(
    y: Tensor, t: float, t_next: float, e_hat: Tensor, t_prev: float, e_hat_prev: Tensor, schedule: DiscreteSchedule
) -> Tensor:
    """BFN-Solver2 (ODE, multistep, Algorithm 7), D_1 = (e_hat - e_hat_prev) / (t - t_prev):
    y' = (t'/t) y + beta_1 t' [(t' - t)(K e_hat - 1) + K D_1 (t' - t)^2 / 2]."""
    slope = (e_hat - e_hat_prev) / (t - t_prev)
    correction = schedule.beta_1 * t_next * schedule.num_classes * slope * (t_next - t) ** 2 / 2
    return solver1_step(y, t, t_next, e_hat, schedule) + correction


def solver2_single_step(
    y: Tensor, t: float, t_next: float, e_hat: Tensor, predict_probs: ProbabilityPredictor, schedule: DiscreteSchedule
) -> tuple[Tensor, Tensor]:
    """Single-step BFN-Solver2 (the released code's ``ode_bfnsolver2_single_step``): a BFN-Solver1 step to the
    midpoint u = (t + t')/2, a second network call there, and the BFN-Solver2 update with the forward difference
    D_1 = (e_hat_u - e_hat) / (u - t). Returns (y', e_hat_u); two network calls per step, no history needed."""
    t_mid = 0.5 * (t + t_next)
    y_mid = solver1_step(y, t, t_mid, e_hat, schedule)
    e_hat_mid = predict_probs(torch.softmax(y_mid, -1), torch.full((y.shape[0],), t_mid, dtype=y.dtype, device=y.device))
    slope = (e_hat_mid - e_hat) / (t_mid - t)
    correction = schedule.beta_1 * t_next * schedule.num_classes * slope * (t_next - t) ** 2 / 2
    return solver1_step(y, t, t_next, e_hat, schedule) + correction, e_hat_mid


def final_draw(probs: Tensor, final: str) -> Tensor:
    """The final output from the last predicted class probabilities (B, L, K): a draw ("sample") or the most probable
    class ("mode", what the released BFN and BFN-Solver code return)."""
    if final not in FINAL_OUTPUTS:
        raise ValueError(f"final={final!r}: allowed values are {FINAL_OUTPUTS}")
    return probs.argmax(-1) if final == "mode" else torch.distributions.Categorical(probs=probs).sample()


def sde_solver1_step(y: Tensor, t: float, t_next: float, e_hat: Tensor, noise: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """SDE-BFN-Solver1 (Algorithm 4):  y' = y + dbeta (K e_hat - 1) + sqrt(K dbeta) z, dbeta = beta(t') - beta(t).

    With a one-hot draw in place of e_hat this is the original BFN sampler step (Prop 5.3).
    """
    delta_beta = schedule.beta(t_next) - schedule.beta(t)
    return y + delta_beta * _drift_direction(e_hat) + math.sqrt(schedule.num_classes * delta_beta) * noise


def sde_solver2_step(
    y: Tensor,
    t: float,
    t_next: float,
    e_hat: Tensor,
    t_prev: float,
    e_hat_prev: Tensor,
    noise: Tensor,
    schedule: DiscreteSchedule,
) -> Tensor:
    """SDE-BFN-Solver2 (multistep, Algorithm 5):  SDE-Solver1 step + K I_2 D_1 with
    I_2 = int_t^t' beta'(u)(u - t) du = (beta_1 / 3)(t' - t)^2 (2t' + t) and D_1 = (e_hat - e_hat_prev)/(t - t_prev)."""
    slope = (e_hat - e_hat_prev) / (t - t_prev)
    i_2 = schedule.beta_1 / 3 * (t_next - t) ** 2 * (2 * t_next + t)
    return sde_solver1_step(y, t, t_next, e_hat, noise, schedule) + schedule.num_classes * i_2 * slope


def initial_logits(
    shape: tuple[int, int], eta: float, schedule: DiscreteSchedule, *, dtype=torch.float32, device="cpu"
) -> Tensor:
    """y at t = eta, "zero mean": N(0, K beta(eta) I) of shape (B, L, K)."""
    batch, length = shape
    noise = torch.randn((batch, length, schedule.num_classes), dtype=dtype, device=device)
    return math.sqrt(schedule.num_classes * schedule.beta(eta)) * noise


def solve(
    predict_probs: ProbabilityPredictor,
    y: Tensor,
    grid: list[float],
    method: str,
    schedule: DiscreteSchedule,
    *,
    last_drop: bool = True,
    keep_history: bool = False,
    final: str = "sample",
) -> BFNSamples:
    """Run ``method`` (one of DISCRETE_SOLVERS) from logits y (B, L, K) at grid[0]. One network call per step
    (two for "bfn_solver2_single").

    With ``last_drop`` the last step returns e_hat at t_{N-1} as ``final_probs`` (NFE = N; the single-step method
    returns its midpoint e_hat, NFE = 2N, as the released code does) and ``x`` is a factorised draw from it
    (``final="sample"``) or its most probable class (``final="mode"``); without it ``state`` is y at grid[-1] and
    ``final_probs`` = softmax(y).
    """
    if method not in DISCRETE_SOLVERS:
        raise ValueError(f"method={method!r}: allowed values are {DISCRETE_SOLVERS}")
    if final not in FINAL_OUTPUTS:
        raise ValueError(f"final={final!r}: allowed values are {FINAL_OUTPUTS}")
    stochastic, second_order = method.startswith("sde_"), method.endswith("2")
    single_step = method == "bfn_solver2_single"
    out = BFNSamples(x=y)
    t_prev, e_hat_prev = None, None
    n_steps = len(grid) - 1
    for k in range(n_steps):
        t, t_next = grid[k], grid[k + 1]
        if keep_history:
            out.times.append(t)
            out.history.append(torch.softmax(y, -1))
        # The network sees theta = softmax(y), never y itself.
        e_hat = predict_probs(torch.softmax(y, -1), torch.full((y.shape[0],), t, dtype=y.dtype, device=y.device))
        if single_step:
            y_next, e_hat_mid = solver2_single_step(y, t, t_next, e_hat, predict_probs, schedule)
            if last_drop and k == n_steps - 1:
                out.final_probs, out.state = e_hat_mid, y
                out.x = final_draw(e_hat_mid, final)
                return out
            y = y_next
            continue
        if last_drop and k == n_steps - 1:
            out.final_probs, out.state = e_hat, y
            out.x = final_draw(e_hat, final)
            return out
        multistep = second_order and e_hat_prev is not None
        if stochastic and multistep:
            y = sde_solver2_step(y, t, t_next, e_hat, t_prev, e_hat_prev, torch.randn_like(y), schedule)
        elif stochastic:
            y = sde_solver1_step(y, t, t_next, e_hat, torch.randn_like(y), schedule)
        elif multistep:
            y = solver2_step(y, t, t_next, e_hat, t_prev, e_hat_prev, schedule)
        else:
            y = solver1_step(y, t, t_next, e_hat, schedule)
        t_prev, e_hat_prev = t, e_hat
    if keep_history:
        out.times.append(grid[-1])
        out.history.append(torch.softmax(y, -1))
    out.state, out.final_probs = y, torch.softmax(y, -1)
    out.x = final_draw(out.final_probs, final)
    return out


def sample(
    predict_probs: ProbabilityPredictor,
    shape: tuple[int, int],
    nfe: int,
    method: str,
    schedule: DiscreteSchedule,
    *,
    eta: float = 0.001,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    keep_history: bool = False,
    final: str = "sample",
) -> BFNSamples:
    """Draw (B, L) samples with ``nfe`` network calls: N = nfe uniform steps on [eta, 1] with last_drop (the
    released BFN-Solver code's defaults: eta = 0.001, zero-mean initial logits). The single-step method takes
    N = nfe // 2 steps of two calls each (an odd budget leaves one call unused). ``final``: see :func:`solve`."""
    if not (isinstance(nfe, int) and nfe >= 2):
        raise ValueError(f"nfe={nfe!r}: the solvers need an integer NFE >= 2 (one step plus the final e_hat)")
    if not 0.0 < eta < 1.0:
        raise ValueError(f"eta={eta!r}: the start time must lie in (0, 1), e.g. 0.001")
    n_steps = nfe // 2 if method == "bfn_solver2_single" else nfe
    y = initial_logits(shape, eta, schedule, dtype=dtype, device=device)
    return solve(predict_probs, y, uniform_time_grid(n_steps, eta, 1.0), method, schedule, keep_history=keep_history, final=final)
