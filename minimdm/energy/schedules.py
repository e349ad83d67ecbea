"""Beta-CDF weights and the energy-optimal schedules alpha* = sin^2(pi/2 gamma), in the course's time convention.

TIME. The paper runs tau from all-masked (tau = 0) to data (tau = 1); the course (LLaDA) runs t from data (t = 0) to
all-masked (t = 1). alpha is the same quantity in both (the probability that a token is unmasked), only the clock is
reversed. ``paper_time`` is the one place that converts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.special import betainc

from minimdm.mdm.schedules import Schedule


def paper_time(t):
    """tau = 1 - t. Course time t (0 = data, 1 = all masked) as paper time tau (0 = all masked, 1 = data).

    The map is its own inverse, so it also turns paper time back into course time; d tau / dt = -1.
    """
    return 1.0 - t


def check_beta_parameters(a, b) -> None:
    for name, value in (("a", a), ("b", b)):
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name}={value!r}: the Beta-CDF parameters a, b must be finite numbers > 0 "
                             f"(the paper searches a, b in {{0.1, ..., 1.0}})")


def _scipy_on_tensor(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a numpy/scipy function elementwise in float64 and hand back a tensor on x's device (torch has no betainc)."""
    x = torch.as_tensor(x)
    out = torch.as_tensor(fn(x.detach().cpu().double().numpy()), dtype=torch.float64)
    return out.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64)


@dataclass(frozen=True)
class BetaWeight:
    """The energy's weight function gamma_tau = I_tau(a, b), the Beta(a, b) CDF (Sec. 3.3), in paper time.

    a > b makes gamma convex-ish late (slow start: few tokens decoded in the first steps); a < b front-loads it.
    """

    a: float
    b: float

    def __post_init__(self):
        check_beta_parameters(self.a, self.b)

    def gamma(self, tau: torch.Tensor) -> torch.Tensor:
        """gamma_tau = I_tau(a, b) (regularised incomplete beta function)."""
        return _scipy_on_tensor(lambda x: betainc(self.a, self.b, x), tau)

    def gamma_complement(self, one_minus_tau: torch.Tensor) -> torch.Tensor:
        """1 - gamma_tau = I_{1-tau}(b, a), computed from 1 - tau itself: no cancellation where gamma is near 1."""
        return _scipy_on_tensor(lambda x: betainc(self.b, self.a, x), one_minus_tau)

    def gamma_rate(self, tau: torch.Tensor, one_minus_tau: torch.Tensor | None = None) -> torch.Tensor:
        """gamma'_tau = tau^(a-1) (1-tau)^(b-1) / B(a, b), the Beta density.

        Pass one_minus_tau when it is known more accurately than 1 - tau (near tau = 1). Both are kept >= 1e-15:
        the density is infinite at an end where a < 1 (or b < 1).
        """
        tau = torch.as_tensor(tau)
        one_minus_tau = 1 - tau if one_minus_tau is None else torch.as_tensor(one_minus_tau)
        log_beta_fn = math.lgamma(self.a) + math.lgamma(self.b) - math.lgamma(self.a + self.b)  # log B(a, b)
        return torch.exp((self.a - 1) * torch.log(tau.clamp_min(1e-15)) + (self.b - 1) * torch.log(
            one_minus_tau.clamp_min(1e-15)) - log_beta_fn)


def optimal_alpha(gamma: torch.Tensor) -> torch.Tensor:
    """alpha*_tau = sin^2(pi/2 * gamma_tau): the energy-optimal schedule for the weight gamma (Thm 3.6)."""
    return torch.sin(0.5 * math.pi * gamma) ** 2


class BetaCDFSchedule(Schedule):
    """alpha = sin^2(pi/2 * I_tau(a, b)) (Prop. 3.7), in the course's time t = 1 - tau, so it plugs into the sampler.

    (a, b) = (1/2, 1/2) is the linear schedule alpha_t = 1 - t (LLaDA's); (1, 1) is alpha_t = cos^2(pi t / 2).
    The course's ``CosineSchedule`` (alpha_t = cos(pi t / 2), the paper's "sine" schedule) is *not* in the family.
    """

    def __init__(self, a: float, b: float):
        self.weight = BetaWeight(a, b)
        self.a, self.b = float(a), float(b)
        self.name = f"beta({self.a:g},{self.b:g})"

    def alpha(self, t):
        return optimal_alpha(self.weight.gamma(paper_time(torch.as_tensor(t))))

    def mask_prob(self, t):
        # 1 - sin^2(pi/2 gamma) = sin^2(pi/2 (1 - gamma)), with 1 - gamma_tau = I_t(b, a): exact near t = 0,
        # where 1 - alpha would cancel to 0 and the energies would divide by it.
        return optimal_alpha(self.weight.gamma_complement(torch.as_tensor(t)))

    def alpha_prime(self, t):
        # d alpha/dt = -(d/dtau) sin^2(pi/2 gamma_tau) = -(pi/2) sin(pi gamma_tau) gamma'_tau   (chain rule, dtau/dt = -1)
        #            = -pi sqrt(alpha (1 - alpha)) gamma'_tau                                  (sin 2x = 2 sin x cos x)
        t = torch.as_tensor(t)
        gamma_rate = self.weight.gamma_rate(paper_time(t), one_minus_tau=t)
        return -math.pi * torch.sqrt(self.alpha(t) * self.mask_prob(t)) * gamma_rate

    def __repr__(self):
        return f"BetaCDFSchedule(a={self.a:g}, b={self.b:g})"
