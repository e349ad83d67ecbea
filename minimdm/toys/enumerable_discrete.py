"""A small joint distribution over K^L sequences, kept as a full table, with exact posteriors (spec §D.0).

Observing each position d through an independent likelihood theta_d (a vector over the K classes) gives the
posterior p(x | theta) ∝ p(x) prod_d theta_d[x_d]; its per-position marginals are the exact denoiser of a
discrete BFN (whose evidence about x is exactly such a product, §A.4). This module knows nothing about BFNs.
"""
from __future__ import annotations

import itertools

import numpy as np

import torch
from torch import Tensor


class EnumerableJoint:
    """p over all K^L sequences. ``probs`` has shape (K^L,), in the order of ``states`` (itertools.product)."""

    def __init__(self, probs: Tensor, length: int, num_classes: int):
        n_states = num_classes**length
        if probs.shape != (n_states,):
            raise ValueError(f"probs must have shape ({n_states},) = (K^L,), got {tuple(probs.shape)}")
        if (probs < 0).any() or abs(float(probs.sum()) - 1) > 1e-6:
            raise ValueError("probs must be non-negative and sum to 1")
        self.probs, self.length, self.num_classes = probs, length, num_classes
        self.states = torch.tensor(list(itertools.product(range(num_classes), repeat=length)))  # (S, L)

    @classmethod
    def random_dirichlet(cls, length: int, num_classes: int, concentration: float, seed: int = 0) -> "EnumerableJoint":
        """A random joint with Dirichlet(concentration) weights; small concentrations give peaky, correlated tables."""
        rng = np.random.default_rng(seed)
        probs = torch.from_numpy(rng.dirichlet(np.full(num_classes**length, float(concentration))))
        return cls(probs / probs.sum(), length, num_classes)

    def sample(self, n: int) -> Tensor:
        """(n, L) class indices, using the global torch RNG."""
        return self.states[torch.multinomial(self.probs, n, replacement=True)]

    def posterior_marginals(self, theta: Tensor) -> Tensor:
        """Per-position marginals of p(x | theta) ∝ p(x) prod_d theta_d[x_d]. theta (B, L, K) -> (B, L, K)."""
        log_theta = torch.log(theta.clamp_min(torch.finfo(theta.dtype).tiny))  # (B, L, K)
        positions = torch.arange(self.length)
        log_evidence = log_theta[:, positions, self.states].sum(-1)  # (B, S): sum_d log theta_d[x_d]
        posterior = torch.softmax(torch.log(self.probs.to(theta.dtype)) + log_evidence, dim=-1)  # (B, S)
        one_hot_states = torch.nn.functional.one_hot(self.states, self.num_classes).to(theta.dtype)  # (S, L, K)
        return torch.einsum("bs,slk->blk", posterior, one_hot_states)

    def factorised_law(self, probs: Tensor) -> Tensor:
        """Law over the K^L states of "draw each position independently from probs[b], b uniform":
        mean_b prod_d probs[b, d, x_d]. probs (B, L, K) -> (S,). Averages exactly over the final draw."""
        positions = torch.arange(self.length)
        return probs[:, positions, self.states].prod(-1).mean(0)

    def empirical_law(self, samples: Tensor) -> Tensor:
        """Histogram of (n, L) samples over the K^L states -> (S,)."""
        powers = self.num_classes ** torch.arange(self.length - 1, -1, -1)
        return torch.bincount((samples * powers).sum(-1), minlength=len(self.probs)).double() / len(samples)
