"""The SDE view of BFNs (Xue et al. 2024, "Unifying Bayesian Flow Networks and Diffusion Models through
Stochastic Differential Equations", arXiv 2404.15766, Thm 4.1 and 5.1).

Continuous data: the flow mean mu_t | x ~ N(gamma x, gamma (1 - gamma)) is the marginal of a linear SDE.
Discrete data: the *latent logits* y_t | x ~ N(beta (K e_x - 1), K beta) are the marginal of a linear SDE and
theta = softmax(y). The paper writes the forward SDEs in SDE time s = 1 - t (data at s = 0); the reverse SDE
and the probability-flow ODE are given here in BFN time t, where the solvers and the original sampler live.

Also here: the scores that make each BFN loss a denoising-score-matching loss with likelihood weighting G^2/2,
and a plain RK4 integrator of each PF-ODE used as an independent reference for the solvers.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from minimdm.bfn.continuous import ContinuousSchedule, Denoiser, per_sample
from minimdm.bfn.discrete import DiscreteSchedule, ProbabilityPredictor

# ---------------------------------------------------------------- continuous data


def continuous_forward_sde(s, schedule: ContinuousSchedule) -> tuple[Tensor, Tensor]:
    """(F(s), G(s)^2) of d mu = F mu ds + G dw in SDE time s = 1 - t   (Theorem 4.1):

    F(s) = d ln gamma / ds = 2 ln(sigma_1) (1 - gamma) / gamma,   G(s)^2 = -2 ln(sigma_1) sigma_1^(2(1-s)) = c (1 - gamma).
    """
    t = 1 - torch.as_tensor(s, dtype=torch.float64)
    gamma, one_minus_gamma = schedule.gamma(t), schedule.one_minus_gamma(t)
    return 2 * schedule.log_sigma_1 * one_minus_gamma / gamma, schedule.c * one_minus_gamma


def continuous_reverse_sde(mu: Tensor, x_hat: Tensor, t: float, schedule: ContinuousSchedule) -> tuple[Tensor, float]:
    """Drift and diffusion of the reverse SDE in BFN time: d mu = c (x_hat - mu) dt + sqrt(c (1 - gamma)) dW."""
    return schedule.c * (x_hat - mu), float(torch.sqrt(schedule.c * schedule.one_minus_gamma(t)))


def continuous_pf_ode_drift(mu: Tensor, x_hat: Tensor, t: float, schedule: ContinuousSchedule) -> Tensor:
    """Probability-flow ODE in BFN time: d mu / dt = (c/2) [(x_hat - mu) + mu (1 - gamma) / gamma]."""
    gamma = float(schedule.gamma(t))
    return 0.5 * schedule.c * ((x_hat - mu) + mu * (1 - gamma) / gamma)


def continuous_score(mu: Tensor, x_hat: Tensor, t: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """Score of N(gamma x_hat, gamma (1 - gamma)) at mu: -(mu - gamma x_hat) / (gamma (1 - gamma)) = -eps_hat / sigma.

    With x_hat = the data x this is the true conditional score grad ln p(mu | x); with the model's x_hat, s_theta.
    """
    gamma = per_sample(schedule.gamma(t), mu)
    return -(mu - gamma * x_hat) / (gamma * (1 - gamma))


def continuous_likelihood_weight(t: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """G^2 / 2 = c (1 - gamma) / 2: L^inf = E_t[(G^2/2) ||s_theta - grad ln p(mu | x)||^2], DSM with likelihood weighting."""
    return 0.5 * schedule.c * schedule.one_minus_gamma(t)


# ---------------------------------------------------------------- discrete data


def discrete_forward_sde(s, schedule: DiscreteSchedule) -> tuple[Tensor, Tensor]:
    """(F(s), G(s)^2) of dy = F y ds + G dw in SDE time, b(s) = beta_1 (1 - s)^2   (Theorem 5.1):

    F(s) = b'/b = -2 / (1 - s),   G(s)^2 = -K b'(s) = 2 K beta_1 (1 - s).
    """
    one_minus_s = 1 - torch.as_tensor(s, dtype=torch.float64)
    return -2 / one_minus_s, 2 * schedule.num_classes * schedule.beta_1 * one_minus_s


def discrete_reverse_sde(e_hat: Tensor, t: float, schedule: DiscreteSchedule) -> tuple[Tensor, float]:
    """Drift and diffusion of the reverse SDE in BFN time: dy = beta'(t) (K e_hat - 1) dt + sqrt(K beta'(t)) dW,
    beta'(t) = 2 beta_1 t. (The linear part F y cancels exactly.)"""
    beta_rate = 2 * schedule.beta_1 * t
    return beta_rate * (schedule.num_classes * e_hat - 1), (schedule.num_classes * beta_rate) ** 0.5


def discrete_pf_ode_drift(y: Tensor, e_hat: Tensor, t: float, schedule: DiscreteSchedule) -> Tensor:
    """Probability-flow ODE in BFN time: dy/dt = y / t + beta_1 t (K e_hat - 1)."""
    return y / t + schedule.beta_1 * t * (schedule.num_classes * e_hat - 1)


def discrete_score(y: Tensor, e_hat: Tensor, t: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """s(y) = -(y - beta (K e_hat - 1)) / (K beta) (Theorem 5.2); with e_hat = e_x the true grad ln p(y | x)."""
    beta = per_sample(schedule.beta(t), y)
    return -(y - beta * (schedule.num_classes * e_hat - 1)) / (schedule.num_classes * beta)


def discrete_likelihood_weight(t: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """G^2/2 = K beta'(t) / 2 = K beta_1 t: L^inf = E_t[(G^2/2) ||s_theta - grad ln p(y | x)||^2]   (Theorem 5.2)."""
    return schedule.num_classes * schedule.beta_1 * t


# ---------------------------------------------------------------- reference integration of the PF-ODEs


def rk4_integrate(drift: Callable[[Tensor, float], Tensor], state: Tensor, t_start: float, t_end: float, n_steps: int) -> Tensor:
    """Classical fourth-order Runge-Kutta with a uniform step: a reference, independent of the solvers' formulas."""
    h = (t_end - t_start) / n_steps
    for k in range(n_steps):
        t = t_start + k * h
        k1 = drift(state, t)
        k2 = drift(state + 0.5 * h * k1, t + 0.5 * h)
        k3 = drift(state + 0.5 * h * k2, t + 0.5 * h)
        k4 = drift(state + h * k3, t + h)
        state = state + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return state


def _time_vector(state: Tensor, t: float) -> Tensor:
    return torch.full((state.shape[0],), t, dtype=state.dtype, device=state.device)


def continuous_pf_ode_reference(
    predict_x: Denoiser, mu: Tensor, t_start: float, t_end: float, schedule: ContinuousSchedule, n_steps: int = 2000
) -> Tensor:
    """Integrate the continuous PF-ODE from t_start to t_end with RK4 (the denoiser is not clipped here)."""
    return rk4_integrate(
        lambda m, t: continuous_pf_ode_drift(m, predict_x(m, _time_vector(m, t)), t, schedule), mu, t_start, t_end, n_steps
    )


def discrete_pf_ode_reference(
    predict_probs: ProbabilityPredictor, y: Tensor, t_start: float, t_end: float, schedule: DiscreteSchedule, n_steps: int = 2000
) -> Tensor:
    """Integrate the discrete PF-ODE on the logits y (B, L, K) from t_start to t_end with RK4."""
    return rk4_integrate(
        lambda v, t: discrete_pf_ode_drift(v, predict_probs(torch.softmax(v, -1), _time_vector(v, t)), t, schedule),
        y,
        t_start,
        t_end,
        n_steps,
    )
