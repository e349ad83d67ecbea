"""A Gaussian mixture with isotropic components and its exact denoiser.

Data x ~ sum_k w_k N(m_k, s_k^2 I). Observed through a Gaussian channel obs = a x + sigma eps, the posterior mean
E[x | obs] is closed form: given component k, obs ~ N(a m_k, (a^2 s_k^2 + sigma^2) I), so
    r_k(obs) ∝ w_k N(obs; a m_k, (a^2 s_k^2 + sigma^2) I),
    E[x | obs] = sum_k r_k [m_k + a s_k^2 / (a^2 s_k^2 + sigma^2) (obs - a m_k)].
This module knows nothing about BFNs: a BFN passes a = gamma(t), sigma^2 = gamma (1 - gamma).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


class GaussianMixture:
    """weights (K,), means (K, D), stds (K,) -- float64 by default, for exact checks."""

    def __init__(self, weights, means, stds, dtype: torch.dtype = torch.float64):
        self.weights = torch.as_tensor(weights, dtype=dtype)
        self.means = torch.as_tensor(means, dtype=dtype)
        self.stds = torch.as_tensor(stds, dtype=dtype)
        if self.means.dim() == 1:  # 1-D data given as a flat list of means
            self.means = self.means.unsqueeze(-1)
        k = self.weights.shape[0]
        if self.means.shape[0] != k or self.stds.shape != (k,):
            raise ValueError(f"weights (K,), means (K, D) and stds (K,) must agree on K; got {k}, {tuple(self.means.shape)}, {tuple(self.stds.shape)}")
        if (self.weights < 0).any() or not math.isclose(float(self.weights.sum()), 1.0, rel_tol=1e-6):
            raise ValueError("weights must be non-negative and sum to 1")
        if (self.stds <= 0).any():
            raise ValueError("stds must be > 0")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, dtype: torch.dtype) -> "GaussianMixture":
        return GaussianMixture(self.weights, self.means, self.stds, dtype=dtype)

    def sample(self, n: int) -> Tensor:
        """(n, D) draws, using the global torch RNG."""
        component = torch.multinomial(self.weights, n, replacement=True)
        noise = torch.randn(n, self.dim, dtype=self.means.dtype)
        return self.means[component] + self.stds[component, None] * noise

    def posterior_mean(self, obs: Tensor, scale: Tensor, noise_std: Tensor) -> Tensor:
        """E[x | obs] for obs = scale x + noise_std eps. obs (B, D); scale and noise_std (B,) or floats -> (B, D).

        With scale = noise_std = 0 (no information) it returns the mixture mean.
        """
        dtype = obs.dtype
        scale = torch.as_tensor(scale, dtype=dtype).reshape(-1, 1)  # (B or 1, 1)
        noise_var = torch.as_tensor(noise_std, dtype=dtype).reshape(-1, 1) ** 2
        means, stds, weights = self.means.to(dtype), self.stds.to(dtype), self.weights.to(dtype)
        var = (scale**2 * stds**2 + noise_var).clamp_min(torch.finfo(dtype).tiny)  # (B, K): variance of obs given k
        diff = obs.unsqueeze(1) - scale.unsqueeze(-1) * means  # (B, K, D)
        log_lik = -0.5 * diff.pow(2).sum(-1) / var - 0.5 * self.dim * torch.log(var)  # (B, K)
        resp = torch.softmax(torch.log(weights) + log_lik, dim=-1)  # (B, K) responsibilities r_k
        gain = (scale * stds**2 / var).unsqueeze(-1)  # (B, K, 1)
        return (resp.unsqueeze(-1) * (means + gain * diff)).sum(1)


def eight_gaussians(radius: float = 0.7, std: float = 0.02, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Eight equal Gaussians on a circle: the standard 2-D toy (radius 0.7, std 0.02-0.05)."""
    angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=dtype), means, torch.full((8,), std, dtype=dtype), dtype=dtype)


def two_component_1d(dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """The 1-D mixture of course's order test (tests/test_bfn_solvers.py): w = (.3, .7), m = (-.6, .4), s = (.05, .15)."""
    return GaussianMixture([0.3, 0.7], [[-0.6], [0.4]], [0.05, 0.15], dtype=dtype)
