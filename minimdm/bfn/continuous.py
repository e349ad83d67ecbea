"""Bayesian flow networks for continuous data (Graves et al. 2023, arXiv 2308.07037).

Sections on the general recipe and on continuous data; the SDE view of the same quantities is ``minimdm.bfn.sde``.

Per data dimension the *input distribution* is N(mu, 1/rho). The sender shows the receiver the data through
Gaussian noise of precision ("accuracy") alpha; the receiver's Bayesian update is closed form and accuracies
add, so after total accuracy beta(t) the input mean mu has a closed-form *Bayesian flow distribution*.

A denoiser here is any callable ``predict_x(mu, t) -> x_hat`` with ``mu`` of shape (B, ...) and ``t`` of
shape (B,): a trained network wrapped by :func:`data_predictor`, or an exact one from ``minimdm.toys.gmm``.
Time t in [0, 1] is BFN time: t = 0 is the prior, t = 1 is (almost) the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

# Below this time the noise-prediction output is meaningless (gamma ~ 0); the code sets x_hat = 0 there.
T_MIN = 1e-6

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _as_float64(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class ContinuousSchedule:
    """The accuracy schedule, fixed by the final input standard deviation ``sigma_1``.

    rho(t) = sigma_1^(-2t) is the input precision, beta(t) = rho(t) - 1 the total accuracy received, and
    gamma(t) = beta / (1 + beta) = 1 - sigma_1^(2t) the weight of the data in the flow mean. All methods take
    a float or a tensor and compute in float64: sigma_1^(2t) reaches 1e-6 and 1 - gamma underflows in float32.
    """

    def __init__(self, sigma_1: float):
        if not (isinstance(sigma_1, (int, float)) and 0.0 < sigma_1 < 1.0):
            raise ValueError(f"sigma_1={sigma_1!r}: the final input standard deviation must lie in (0, 1), e.g. 1e-3")
        self.sigma_1 = float(sigma_1)
        self.log_sigma_1 = math.log(sigma_1)
        self.c = -2.0 * self.log_sigma_1  # c = ln(1/sigma_1^2) > 0

    def __repr__(self) -> str:
        return f"ContinuousSchedule(sigma_1={self.sigma_1:g})"

    def precision(self, t) -> Tensor:
        """rho(t) = 1 + beta(t) = sigma_1^(-2t)."""
        return torch.exp(-2.0 * self.log_sigma_1 * _as_float64(t))

    def beta(self, t) -> Tensor:
        """beta(t) = sigma_1^(-2t) - 1, the accuracy received by time t."""
        return torch.expm1(-2.0 * self.log_sigma_1 * _as_float64(t))

    def gamma(self, t) -> Tensor:
        """gamma(t) = beta / (1 + beta) = 1 - sigma_1^(2t)."""
        return -torch.expm1(2.0 * self.log_sigma_1 * _as_float64(t))

    def one_minus_gamma(self, t) -> Tensor:
        """1 - gamma(t) = sigma_1^(2t), computed directly so it does not cancel near t = 1."""
        return torch.exp(2.0 * self.log_sigma_1 * _as_float64(t))

    def step_accuracy(self, i: int, n_steps: int) -> float:
        """alpha_i = beta(i/n) - beta((i-1)/n) = sigma_1^(-2i/n) (1 - sigma_1^(2/n))."""
        return float(self.beta(i / n_steps) - self.beta((i - 1) / n_steps))

    def half_log_snr(self, t) -> Tensor:
        """lambda(t) = ln(alpha_t / sigma_t) = 1/2 ln(gamma / (1 - gamma)), increasing in t."""
        t = _as_float64(t)
        return 0.5 * (torch.log(self.gamma(t)) - 2.0 * self.log_sigma_1 * t)

    def time_from_half_log_snr(self, lam) -> Tensor:
        """Inverse of :meth:`half_log_snr`: gamma = sigmoid(2 lambda), t = ln(1 - gamma) / (2 ln sigma_1)."""
        log_one_minus_gamma = torch.nn.functional.logsigmoid(-2.0 * _as_float64(lam))
        return log_one_minus_gamma / (2.0 * self.log_sigma_1)


def check_continuous_data(x: Tensor) -> None:
    """Continuous BFN assumes data in [-1, 1] (the output is clipped there)."""
    if x.numel() and (x.min() < -1.0 or x.max() > 1.0):
        raise ValueError(
            f"x: continuous BFN data must lie in [-1, 1], got values in [{x.min().item():.3g}, {x.max().item():.3g}]; "
            "rescale your data first"
        )


def per_sample(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample time-derived tensor (B,) so it broadcasts against ``like`` (B, ...)."""
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def bayesian_update(mu: Tensor, rho: Tensor | float, y: Tensor, alpha: float) -> tuple[Tensor, Tensor | float]:
    """Posterior of N(mu, 1/rho) after observing y ~ N(x, 1/alpha):  rho' = rho + alpha,
    mu' = (rho mu + alpha y) / rho'."""
    rho_next = rho + alpha
    return (rho * mu + alpha * y) / rho_next, rho_next


def sample_flow(x: Tensor, t: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """Draw mu ~ p_F(. | x; t) = N(gamma x, gamma (1 - gamma) I).

    x: (B, ...) in [-1, 1]; t: (B,). rho is deterministic (= 1 + beta(t)) so only mu is returned.
    """
    gamma = per_sample(schedule.gamma(t), x)
    return gamma * x + torch.sqrt(gamma * (1 - gamma)) * torch.randn_like(x)


def x_hat_from_eps(mu: Tensor, eps_hat: Tensor, t: Tensor, schedule: ContinuousSchedule, clip: bool = True) -> Tensor:
    """x_hat = mu / gamma - sqrt((1 - gamma) / gamma) eps_hat, 0 for t < t_min, optionally clipped to [-1, 1]."""
    gamma = per_sample(schedule.gamma(t.clamp_min(T_MIN)), mu)
    x_hat = mu / gamma - torch.sqrt((1 - gamma) / gamma) * eps_hat
    x_hat = torch.where(per_sample(t, mu) < T_MIN, torch.zeros_like(x_hat), x_hat)
    return x_hat.clamp(-1.0, 1.0) if clip else x_hat


def data_predictor(eps_net: Callable[[Tensor, Tensor], Tensor], schedule: ContinuousSchedule, clip: bool = True) -> Denoiser:
    """Wrap a noise-prediction network ``eps_net(mu, t)`` into a denoiser ``predict_x(mu, t)``.

    Training uses ``clip=False`` (clipping would cut the gradient); sampling clips, as the released code does.
    """

    def predict_x(mu: Tensor, t: Tensor) -> Tensor:
        return x_hat_from_eps(mu, eps_net(mu, t), t, schedule, clip=clip)

    return predict_x


def _squared_error_per_dim(x: Tensor, x_hat: Tensor) -> Tensor:
    """||x - x_hat||^2 / D per sample: (B,). Losses are reported per dimension, as the released code does."""
    return (x - x_hat).pow(2).flatten(1).mean(1)


def continuous_time_loss(predict_x: Denoiser, x: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """L^inf per sample, nats/dim: -ln(sigma_1) sigma_1^(-2t) ||x - x_hat(mu, t)||^2, t ~ U(0,1), mu ~ p_F.

    Returns a (B,) tensor; its mean over t and data is the continuous-time loss.
    """
    check_continuous_data(x)
    t = torch.rand(x.shape[0], dtype=x.dtype, device=x.device)
    mu = sample_flow(x, t, schedule)
    weight = -schedule.log_sigma_1 * schedule.precision(t).to(x.dtype)  # -ln sigma_1 * sigma_1^(-2t)
    return weight * _squared_error_per_dim(x, predict_x(mu, t))


def discrete_time_loss(predict_x: Denoiser, x: Tensor, schedule: ContinuousSchedule, n_steps: int) -> Tensor:
    """L^n per sample, nats/dim: (n/2)(1 - sigma_1^(2/n)) sigma_1^(-2i/n) ||x - x_hat(mu, t_{i-1})||^2,
    i ~ U{1..n}, mu ~ p_F(. | x; t_{i-1}). This is n E_i KL(sender || receiver) for a delta output."""
    check_continuous_data(x)
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: the discrete-time loss needs n_steps >= 1")
    i = torch.randint(1, n_steps + 1, (x.shape[0],), device=x.device)
    t_prev = ((i - 1) / n_steps).to(x.dtype)
    mu = sample_flow(x, t_prev, schedule)
    weight = (n_steps / 2) * (1 - schedule.sigma_1 ** (2 / n_steps)) * schedule.precision(i / n_steps).to(x.dtype)
    return weight * _squared_error_per_dim(x, predict_x(mu, t_prev))


def reconstruction_loss(predict_x: Denoiser, x: Tensor, schedule: ContinuousSchedule) -> Tensor:
    """L^r per sample, nats/dim: -ln N(x | x_hat(mu, 1), sigma_1^2), mu ~ p_F(. | x; 1).

    The delta output has no density, so (as for the released code's likelihood reports) the output is read as
    a Gaussian of the final input variance sigma_1^2; here a density in nats, not a discretised likelihood.
    """
    check_continuous_data(x)
    t = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    x_hat = predict_x(sample_flow(x, t, schedule), t)
    variance = schedule.sigma_1**2
    return 0.5 * math.log(2 * math.pi * variance) + _squared_error_per_dim(x, x_hat) / (2 * variance)


@dataclass
class BFNSamples:
    """What a BFN sampler returns: the final samples and (if asked for) the states along the way."""

    x: Tensor  # (B, ...) final output
    state: Tensor | None = None  # the final input state: mu (continuous) or logits y / theta (discrete)
    times: list[float] = field(default_factory=list)  # the time of each stored state
    history: list[Tensor] = field(default_factory=list)  # input means mu (or logits / probabilities), one per time
    final_probs: Tensor | None = None  # discrete data: the output distribution the final x was drawn from (B, L, K)


def original_sampler_step(mu: Tensor, rho: float, x_sample: Tensor, alpha: float, noise: Tensor) -> tuple[Tensor, float]:
    """One step of the BFN sampler: y = x' + noise / sqrt(alpha) ~ p_S(. | x'; alpha), then the Bayesian update.

    ``x_sample`` is a draw from the output distribution (x_hat itself for a delta output).
    """
    y = x_sample + noise / math.sqrt(alpha)
    return bayesian_update(mu, rho, y, alpha)


def original_sampler(
    sample_output: Denoiser,
    shape: tuple[int, ...],
    n_steps: int,
    schedule: ContinuousSchedule,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    keep_history: bool = False,
) -> BFNSamples:
    """The BFN sampler (Graves et al. 2023, arXiv 2308.07037): n Bayesian updates plus one final output call, so NFE = n + 1.

    ``sample_output(mu, t)`` draws from the output distribution: the (clipped) x_hat for continuous data, a bin
    centre for discretised data (see ``minimdm.bfn.discretised``).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: the BFN sampler needs n_steps >= 1 (NFE = n_steps + 1 >= 2)")
    mu = torch.zeros(shape, dtype=dtype, device=device)  # prior mu_0 = 0, rho_0 = 1
    rho = 1.0
    out = BFNSamples(x=mu)
    for i in range(1, n_steps + 1):
        t = torch.full((shape[0],), (i - 1) / n_steps, dtype=dtype, device=device)
        if keep_history:
            out.times.append((i - 1) / n_steps)
            out.history.append(mu)
        x_sample = sample_output(mu, t)
        mu, rho = original_sampler_step(mu, rho, x_sample, schedule.step_accuracy(i, n_steps), torch.randn_like(mu))
    t_one = torch.ones(shape[0], dtype=dtype, device=device)
    if keep_history:
        out.times.append(1.0)
        out.history.append(mu)
    out.x, out.state = sample_output(mu, t_one), mu
    return out
