"""The absorbing process's schedules and its analytic concrete score (Ou et al. 2024,
arXiv 2406.03736, its main theorem).

    p_t(x_hat) / p_t(x_t) = a(t) p_0(x^i = v | unmasked tokens of x_t),   a(t) = alpha_t / (1 - alpha_t)

for x_t with x_t^i = M and x_hat = x_t except x_hat^i = v: the score is a time-dependent scalar times a
time-free conditional of clean data, so the network needs no time input.
"""
from __future__ import annotations

import math

import torch

from minimdm.mdm.denoiser import logits_of
from minimdm.mdm.schedules import Schedule, check_time, get_schedule

# --- schedules: alpha_t = exp(-sigma_bar(t)) ---------------------------------------------------------


class LogLinearSchedule(Schedule):
    """RADD's default: sigma_bar(t) = -log(1 - (1 - eps) t), so alpha_t = 1 - (1 - eps) t and alpha_1 = eps.

    The process never masks fully (alpha_1 = eps, not 0); samplers force the last step instead.
    """

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"eps={eps} must lie in [0, 1)")
        self.eps = eps

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * torch.as_tensor(t)

    def alpha_prime(self, t):
        return torch.full_like(torch.as_tensor(t, dtype=torch.float64), -(1.0 - self.eps))

    def __repr__(self):
        return f"LogLinearSchedule(eps={self.eps})"


class GeometricSchedule(Schedule):
    """sigma_bar(t) = sigma_min^(1-t) sigma_max^t (RADD's config uses (1e-4, 20)); alpha_t = exp(-sigma_bar)."""

    name = "geometric"

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def total_noise(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def alpha(self, t):
        return torch.exp(-self.total_noise(t))

    def alpha_prime(self, t):  # alpha' = -sigma alpha with sigma = sigma_bar log(sigma_max / sigma_min)
        return -self.total_noise(t) * math.log(self.sigma_max / self.sigma_min) * self.alpha(t)


def resolve_schedule(schedule: str | Schedule | None) -> Schedule:
    """None -> log-linear (RADD's default); names: 'loglinear', 'geometric', or any core schedule name."""
    if schedule is None or schedule == "loglinear":
        return LogLinearSchedule()
    if schedule == "geometric":
        return GeometricSchedule()
    return get_schedule(schedule)


def noise_rate(schedule: Schedule, t) -> torch.Tensor:
    """sigma(t) = d sigma_bar / dt = -alpha'_t / alpha_t."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return -schedule.alpha_prime(t) / schedule.alpha(t)


def score_scale(schedule: Schedule, t) -> torch.Tensor:
    """a(t) = e^{-sigma_bar} / (1 - e^{-sigma_bar}) = alpha_t / (1 - alpha_t)  ((1-t)/t when linear)."""
    alpha = schedule.alpha(torch.as_tensor(t, dtype=torch.float64))
    return alpha / (1.0 - alpha)


# --- the concrete score ----------------------------------------------------------------------------------------


def is_time_conditioned(model) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "time_cond", False))


def conditional_logits(model, xt: torch.Tensor, mask_ratio: torch.Tensor) -> torch.Tensor:
    """Logits of c_theta(x_0^i | x_t): (B, L) -> (B, L, K). A time-conditioned net is also told lambda (B,)."""
    if is_time_conditioned(model):
        return logits_of(model, xt, time=mask_ratio.float())
    return logits_of(model, xt)


@torch.no_grad()
def concrete_score(denoiser, xt: torch.Tensor, t: float, schedule: str | Schedule | None = None) -> torch.Tensor:
    """s(x_t, t)_{i,v} = a(t) c(x_t)_{i,v} = p_t(x_t with x^i = v) / p_t(x_t) at masked i: (B, L, K) float64."""
    check_time(t)  # a(0) is infinite; t outside [0, 1] has no meaning
    schedule = resolve_schedule(schedule)
    lam = schedule.mask_prob(torch.tensor(t, dtype=torch.float64)).expand(xt.shape[0])
    probs = torch.softmax(conditional_logits(denoiser, xt, lam).double(), dim=-1)
    return score_scale(schedule, t) * probs


def noisy_marginal(joint, xt: torch.Tensor, t: float, schedule: Schedule, mask_id: int) -> torch.Tensor:
    """p_t(x_t) = sum_{x_0} p_0(x_0) prod_i [alpha_t 1(x_t^i = x_0^i) + (1 - alpha_t) 1(x_t^i = M)], by enumeration.

    ``joint`` is an ``EnumerableJoint``; xt (B, L) -> (B,) float64.
    """
    alpha = float(schedule.alpha(torch.tensor(t, dtype=torch.float64)))
    is_masked = xt == mask_id  # (B, L)
    agrees = ((joint.sequences[None] == xt[:, None]) | is_masked[:, None]).all(-1)  # x_0 consistent with x_t
    num_masked = is_masked.sum(1, keepdim=True).double()
    q = alpha ** (xt.shape[1] - num_masked) * (1 - alpha) ** num_masked  # q(x_t | x_0) for every consistent x_0
    return (joint.probs[None] * agrees * q).sum(1)


def concrete_score_error(joint, t: float, schedule: str | Schedule | None = None) -> float:
    """Largest relative gap between p_t(x_hat)/p_t(x_t), by enumeration, and a(t) p_0(v | x_t^UM), over every
    noisy sequence x_t, masked position i and token v of an ``EnumerableJoint`` (the theorem says 0)."""
    schedule = resolve_schedule(schedule)
    K, L, mask_id = joint.vocab_size, joint.length, joint.vocab_size
    grid = torch.cartesian_prod(*[torch.arange(K + 1)] * L).reshape(-1, L)  # all (K+1)^L noisy sequences
    grid = grid[(grid == mask_id).any(1)]
    score = concrete_score(joint.oracle_denoiser(mask_id), grid, t, schedule)  # (B, L, K) analytic side
    marginal = noisy_marginal(joint, grid, t, schedule, mask_id)  # (B,)
    worst = 0.0
    for i in range(L):
        rows = grid[:, i] == mask_id
        for v in range(K):
            filled = grid[rows].clone()
            filled[:, i] = v
            ratio = noisy_marginal(joint, filled, t, schedule, mask_id) / marginal[rows]  # exact side
            worst = max(worst, float(((score[rows, i, v] - ratio).abs() / ratio.clamp_min(1e-300)).max()))
    return worst
