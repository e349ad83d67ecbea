"""Exact probes for the continuous BFN samplers: a Gaussian mixture in D dimensions with its analytic denoiser.

For continuous BFNs the flow is mu | x ~ N(gamma x, gamma (1 - gamma) I) (Graves et al. 2023, arXiv 2308.07037),
a Gaussian observation of x with scale gamma(t) and noise variance gamma (1 - gamma). Under a Gaussian-mixture prior
the output mean E[x | mu] is then the posterior mean of a mixture, in closed form
(``minimdm.toys.gmm.GaussianMixture.posterior_mean``). A sampler run with this denoiser has no network error, so
its distance to the mixture is the sampler's own error; the mixture's mean and covariance are known exactly, so the
Frechet distance needs no reference sample.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from minimdm.bfn.continuous import ContinuousSchedule, Denoiser
from minimdm.bfn.metrics import frechet_distance_to_gaussian
from minimdm.toys.gmm import GaussianMixture


def exact_gmm_denoiser(gmm: GaussianMixture, schedule: ContinuousSchedule) -> Denoiser:
    """x_hat(mu, t) = E[x | mu] for x ~ gmm and mu ~ N(gamma x, gamma (1 - gamma) I), gamma = gamma(t)."""

    def predict_x(mu: Tensor, t: Tensor) -> Tensor:
        gamma = schedule.gamma(t).to(mu.dtype)
        return gmm.posterior_mean(mu, gamma, torch.sqrt(gamma * (1 - gamma)))

    return predict_x


def random_mixture(dim: int = 64, n_components: int = 8, spread: float = 0.5, std: float = 0.05, seed: int = 0) -> GaussianMixture:
    """K random isotropic components in D dimensions: means uniform in [-spread, spread]^D, one std, Dirichlet(5)
    weights. With spread + 4 std <= 1 the data sit in [-1, 1] (clipping at 1 sigma_1 never bites)."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n_components, dim, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    weights = torch.as_tensor(np.random.default_rng(seed).dirichlet(np.full(n_components, 5.0)), dtype=torch.float64)
    return GaussianMixture(weights, means, torch.full((n_components,), std, dtype=torch.float64))


def mixture_moments(gmm: GaussianMixture) -> tuple[Tensor, Tensor]:
    """Exact mean (D,) and covariance (D, D) of the mixture: sum_k w_k m_k and sum_k w_k (s_k^2 I + m_k m_k^T) - m m^T."""
    w, m, s = gmm.weights, gmm.means, gmm.stds
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * m[:, :, None] * m[:, None, :]).sum(0) + torch.diag(torch.full((gmm.dim,), float((w * s**2).sum()), dtype=m.dtype))
    return mean, second - mean[:, None] * mean[None, :]


def frechet_to_mixture(samples: Tensor, gmm: GaussianMixture) -> float:
    """Frechet distance between the Gaussian fit of ``samples`` (n, D) and the mixture's exact mean and covariance."""
    mean, cov = mixture_moments(gmm)
    return frechet_distance_to_gaussian(samples.double().cpu().numpy(), mean.numpy(), cov.numpy())
