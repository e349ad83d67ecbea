"""Fast samplers for continuous-data BFNs: BFN-Solver++1, BFN-Solver++2 and SDE-BFN-Solver++2 (Xue et al. 2024,
arXiv 2404.15766, Algorithms 1-3 and Prop. 4.2), and a single-step (midpoint) BFN-Solver++2: the continuous
counterpart of the released code's single-step discrete BFN-Solver2, i.e. DPM-Solver++(2S) with r = 1/2
(Lu et al. 2022, arXiv 2211.01095, Algorithm 1).

The flow mean is a Gaussian diffusion with alpha_t = gamma(t), sigma_t = sqrt(gamma (1 - gamma)) and
lambda = ln(alpha/sigma), so the data-prediction ("++") exponential integrators of DPM-Solver++ apply. Each step goes
from t to t' with h = lambda(t') - lambda(t) and the denoiser's x_hat (clipped to [-1, 1]) at t.

SDE-BFN-Solver++1 on the grid t_i = (i-1)/n *is* the original BFN sampler (Prop 4.2): see
``tests/test_bfn_solvers.py`` and notebook 10.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from minimdm.bfn.continuous import BFNSamples, ContinuousSchedule, Denoiser
from minimdm.bfn.grids import time_grid

CONTINUOUS_SOLVERS = ("bfn_solver++1", "bfn_solver++2", "bfn_solver++2_single", "sde_bfn_solver++1", "sde_bfn_solver++2")


def _alpha_sigma_lambda(t: float, schedule: ContinuousSchedule) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) = (gamma, sqrt(gamma (1 - gamma)), ln(alpha / sigma)), as float64 numbers."""
    gamma, one_minus_gamma = float(schedule.gamma(t)), float(schedule.one_minus_gamma(t))
    sigma = math.sqrt(gamma * one_minus_gamma)
    return gamma, sigma, math.log(gamma / sigma)


def pp1_step(mu: Tensor, t: float, t_next: float, x_hat: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """BFN-Solver++1 (ODE, = DDIM):  mu' = (sigma'/sigma) mu + alpha' (1 - e^(-h)) x_hat   (Algorithm 1)."""
    _, sigma, lam = _alpha_sigma_lambda(t, schedule)
    alpha_next, sigma_next, lam_next = _alpha_sigma_lambda(t_next, schedule)
    h = lam_next - lam
    return (sigma_next / sigma) * mu - alpha_next * math.expm1(-h) * x_hat


def pp2_step(
    mu: Tensor, t: float, t_next: float, x_hat: Tensor, t_prev: float, x_hat_prev: Tensor, schedule: ContinuousSchedule
) -> Tensor:
    """BFN-Solver++2 (multistep, Algorithm 2), r = h_prev / h:
    D = (1 + 1/(2r)) x_hat - (1/(2r)) x_hat_prev,   mu' = (sigma'/sigma) mu + alpha' (1 - e^(-h)) D."""
    lam_prev = _alpha_sigma_lambda(t_prev, schedule)[2]
    _, _, lam = _alpha_sigma_lambda(t, schedule)
    lam_next = _alpha_sigma_lambda(t_next, schedule)[2]
    r = (lam - lam_prev) / (lam_next - lam)
    extrapolated = (1 + 1 / (2 * r)) * x_hat - (1 / (2 * r)) * x_hat_prev
    return pp1_step(mu, t, t_next, extrapolated, schedule)


def pp2_single_step(
    mu: Tensor, t: float, t_next: float, x_hat: Tensor, predict_x: Denoiser, schedule: ContinuousSchedule, clip: bool = True
) -> tuple[Tensor, Tensor]:
    """Single-step BFN-Solver++2 (midpoint in lambda): a ++1 step to u with lambda_u = lambda + h/2, a second
    denoiser call there, then mu' = (sigma'/sigma) mu + alpha' (1 - e^(-h)) x_hat_u. Returns (mu', x_hat_u)."""
    lam, lam_next = _alpha_sigma_lambda(t, schedule)[2], _alpha_sigma_lambda(t_next, schedule)[2]
    t_mid = float(schedule.time_from_half_log_snr(0.5 * (lam + lam_next)))
    mu_mid = pp1_step(mu, t, t_mid, x_hat, schedule)
    x_hat_mid = predict_x(mu_mid, torch.full((mu.shape[0],), t_mid, dtype=mu.dtype, device=mu.device))
    if clip:
        x_hat_mid = x_hat_mid.clamp(-1.0, 1.0)
    return pp1_step(mu, t, t_next, x_hat_mid, schedule), x_hat_mid


def sde_pp1_step(mu: Tensor, t: float, t_next: float, x_hat: Tensor, noise: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """SDE-BFN-Solver++1 (= one original BFN step, Prop 4.2):
    mu' = (sigma'/sigma) e^(-h) mu + alpha' (1 - e^(-2h)) x_hat + sigma' sqrt(1 - e^(-2h)) z."""
    return _sde_pp_step(mu, t, t_next, x_hat, torch.zeros_like(x_hat), noise, schedule)


def sde_pp2_step(
    mu: Tensor,
    t: float,
    t_next: float,
    x_hat: Tensor,
    t_prev: float,
    x_hat_prev: Tensor,
    noise: Tensor,
    schedule: ContinuousSchedule,
) -> Tensor:
    """SDE-BFN-Solver++2 (multistep, Algorithm 3): D_1 = (x_hat - x_hat_prev) / r and the ++1 step plus
    1/2 alpha' (1 - e^(-2h)) D_1."""
    lam_prev = _alpha_sigma_lambda(t_prev, schedule)[2]
    lam = _alpha_sigma_lambda(t, schedule)[2]
    lam_next = _alpha_sigma_lambda(t_next, schedule)[2]
    r = (lam - lam_prev) / (lam_next - lam)
    return _sde_pp_step(mu, t, t_next, x_hat, (x_hat - x_hat_prev) / r, noise, schedule)


def _sde_pp_step(
    mu: Tensor, t: float, t_next: float, x_hat: Tensor, slope: Tensor, noise: Tensor, schedule: ContinuousSchedule
) -> Tensor:
    _, sigma, lam = _alpha_sigma_lambda(t, schedule)
    alpha_next, sigma_next, lam_next = _alpha_sigma_lambda(t_next, schedule)
    h = lam_next - lam
    one_minus_exp_2h = -math.expm1(-2 * h)  # 1 - e^(-2h)
    return (
        (sigma_next / sigma) * math.exp(-h) * mu
        + alpha_next * one_minus_exp_2h * (x_hat + 0.5 * slope)
        + sigma_next * math.sqrt(one_minus_exp_2h) * noise
    )


def initial_state(
    shape: tuple[int, ...],
    eta: float,
    schedule: ContinuousSchedule,
    *,
    data_mean: Tensor | float | None = None,
    data_variance: Tensor | float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """mu at t = eta. Default "zero_mean_and_std": N(0, gamma(1 - gamma)), which ignores the gamma x mean.
    Given the data's mean and per-dimension variance: N(gamma mean, gamma (1 - gamma) + gamma^2 variance)."""
    gamma = float(schedule.gamma(eta))
    noise = torch.randn(shape, dtype=dtype, device=device)
    if data_mean is None:
        return math.sqrt(gamma * (1 - gamma)) * noise
    variance = gamma * (1 - gamma) + gamma**2 * torch.as_tensor(0.0 if data_variance is None else data_variance)
    return gamma * torch.as_tensor(data_mean, dtype=dtype) + variance.to(dtype).sqrt() * noise


def solve(
    predict_x: Denoiser,
    mu: Tensor,
    grid: list[float],
    method: str,
    schedule: ContinuousSchedule,
    *,
    last_drop: bool = True,
    clip: bool = True,
    keep_history: bool = False,
) -> BFNSamples:
    """Run ``method`` (one of CONTINUOUS_SOLVERS) from mu at grid[0] along the grid. One denoiser call per step.

    With ``last_drop`` (the code's default) the last step returns x_hat(mu, t_{N-1}) instead of stepping to t_N, so
    NFE = N and ``x`` is that x_hat -- the mode of the (delta) output distribution; without it ``x`` is mu at
    grid[-1] (what the order tests compare). Multistep methods take a first-order first step and then reuse the
    previous step's x_hat. The single-step method calls the denoiser twice per step (last_drop returns its midpoint
    x_hat, NFE = 2N).
    """
    if method not in CONTINUOUS_SOLVERS:
        raise ValueError(f"method={method!r}: allowed values are {CONTINUOUS_SOLVERS}")
    stochastic, second_order = method.startswith("sde_"), method.endswith("2")
    single_step = method == "bfn_solver++2_single"
    out = BFNSamples(x=mu)
    t_prev, x_hat_prev = None, None
    n_steps = len(grid) - 1
    for k in range(n_steps):
        t, t_next = grid[k], grid[k + 1]
        if keep_history:
            out.times.append(t)
            out.history.append(mu)
        x_hat = predict_x(mu, torch.full((mu.shape[0],), t, dtype=mu.dtype, device=mu.device))
        if clip:
            x_hat = x_hat.clamp(-1.0, 1.0)
        if single_step:
            mu_next, x_hat_mid = pp2_single_step(mu, t, t_next, x_hat, predict_x, schedule, clip)
            if last_drop and k == n_steps - 1:
                out.x, out.state = x_hat_mid, mu
                return out
            mu = mu_next
            continue
        if last_drop and k == n_steps - 1:
            out.x, out.state = x_hat, mu
            return out
        multistep = second_order and x_hat_prev is not None
        if stochastic and multistep:
            mu = sde_pp2_step(mu, t, t_next, x_hat, t_prev, x_hat_prev, torch.randn_like(mu), schedule)
        elif stochastic:
            mu = sde_pp1_step(mu, t, t_next, x_hat, torch.randn_like(mu), schedule)
        elif multistep:
            mu = pp2_step(mu, t, t_next, x_hat, t_prev, x_hat_prev, schedule)
        else:
            mu = pp1_step(mu, t, t_next, x_hat, schedule)
        t_prev, x_hat_prev = t, x_hat
    if keep_history:
        out.times.append(grid[-1])
        out.history.append(mu)
    out.x, out.state = mu, mu
    return out


def sample(
    predict_x: Denoiser,
    shape: tuple[int, ...],
    nfe: int,
    method: str,
    schedule: ContinuousSchedule,
    *,
    eta: float = 0.01,
    spacing: str = "uniform_t",
    data_mean: Tensor | float | None = None,
    data_variance: Tensor | float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    keep_history: bool = False,
) -> BFNSamples:
    """Draw samples with ``nfe`` denoiser calls: an N = nfe step grid on [eta, 1] with last_drop (the defaults of
    the released BFN-Solver code: eta = 0.01, uniform t, zero-mean initialisation). The single-step method takes
    N = nfe // 2 steps of two calls each (an odd budget leaves one call unused)."""
    if not (isinstance(nfe, int) and nfe >= 2):
        raise ValueError(f"nfe={nfe!r}: the solvers need an integer NFE >= 2 (one step plus the final x_hat)")
    if not 0.0 < eta < 1.0:
        raise ValueError(f"eta={eta!r}: the start time must lie in (0, 1), e.g. 0.01")
    grid = time_grid(nfe // 2 if method == "bfn_solver++2_single" else nfe, eta, 1.0, spacing, schedule)
    mu = initial_state(shape, eta, schedule, data_mean=data_mean, data_variance=data_variance, dtype=dtype, device=device)
    return solve(predict_x, mu, grid, method, schedule, keep_history=keep_history)
