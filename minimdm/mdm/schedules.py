"""Masking schedules alpha_t = P(a token is still unmasked at time t), alpha_0 = 1, alpha_1 = 0.

LLaDA and SMDM use the linear schedule alpha_t = 1 - t (arXiv 2502.09992, 2410.18514). The continuous-time loss
weights the masked cross-entropy by -alpha'_t / (1 - alpha_t), which is 1/t for the linear schedule.
"""
from __future__ import annotations

import math

import torch


def check_time(t: torch.Tensor | float, name: str = "t") -> None:
    """Times live in (0, 1]: t = 0 would mask nothing and make the 1/t weight infinite."""
    t = torch.as_tensor(t)
    if t.numel() and not bool(((t > 0) & (t <= 1)).all()):
        raise ValueError(f"{name} must lie in (0, 1], got values in [{t.min().item()}, {t.max().item()}]")


class Schedule:
    """Base class: subclasses define alpha(t); alpha_prime defaults to a central finite difference."""

    name = "schedule"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        h = 1e-6
        return (self.alpha(t + h) - self.alpha(t - h)) / (2 * h)

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        """lambda_t = 1 - alpha_t, the probability that a token is masked at time t."""
        return 1.0 - self.alpha(t)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) = -alpha'_t / (1 - alpha_t), the ELBO weight of the masked cross-entropy (docs/derivations.md)."""
        check_time(t)  # w(0) is infinite
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearSchedule(Schedule):
    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def alpha_prime(self, t):
        return -torch.ones_like(torch.as_tensor(t))


class CosineSchedule(Schedule):
    """alpha_t = cos(pi t / 2): masks slowly at first (the MaskGIT / MDLM 'cosine' schedule)."""

    name = "cosine"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * torch.as_tensor(t))

    def alpha_prime(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * torch.as_tensor(t))

    def mask_prob(self, t):
        # 1 - cos(x) = 2 sin^2(x/2): the left side rounds to exactly 0 for tiny t, the right side does not
        return 2 * torch.sin(0.25 * math.pi * torch.as_tensor(t)) ** 2


SCHEDULES = {"linear": LinearSchedule, "cosine": CosineSchedule}


def get_schedule(schedule: str | Schedule | None) -> Schedule:
    if schedule is None:
        return LinearSchedule()
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: allowed values are {sorted(SCHEDULES)} or a Schedule instance")
    return SCHEDULES[schedule]()
