"""Soft-evidence posteriors for an enumerable joint: the exact denoiser of a discrete BFN.

Observing each position d of x ~ p through an independent likelihood theta_d (a vector over the K classes) gives
p(x | theta) ∝ p(x) prod_d theta_d[x_d]; its per-position marginals are exactly E[e_x | theta], the quantity a
discrete BFN's network learns (its evidence about x is such a product). This module builds on the table of
``minimdm.toys.enumerable.EnumerableJoint`` and knows nothing about BFNs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from minimdm.toys.enumerable import EnumerableJoint


def _log_evidence(joint: EnumerableJoint, theta: Tensor) -> Tensor:
    """sum_d log theta[b, d, x_d] for every sequence x of the table: (B, L, K) -> (B, N)."""
    log_theta = torch.log(theta.clamp_min(torch.finfo(theta.dtype).tiny))
    return torch.einsum("blk,nlk->bn", log_theta, _one_hot_table(joint, theta.dtype))


def _one_hot_table(joint: EnumerableJoint, dtype: torch.dtype) -> Tensor:
    """(N, L, K) one-hot encoding of every sequence of the table."""
    return torch.nn.functional.one_hot(joint.sequences, joint.vocab_size).to(dtype)


def posterior_marginals(joint: EnumerableJoint, theta: Tensor) -> Tensor:
    """Per-position marginals of p(x | theta) ∝ p(x) prod_d theta_d[x_d]: theta (B, L, K) -> (B, L, K)."""
    posterior = torch.softmax(torch.log(joint.probs.to(theta.dtype)) + _log_evidence(joint, theta), dim=-1)  # (B, N)
    return torch.einsum("bn,nlk->blk", posterior, _one_hot_table(joint, theta.dtype))


def factorised_law(joint: EnumerableJoint, probs: Tensor) -> Tensor:
    """Law over the table of "pick b uniformly, then draw each position independently from probs[b]":
    mean_b prod_d probs[b, d, x_d]. (B, L, K) -> (N,). It averages exactly over the final draw."""
    return torch.exp(_log_evidence(joint, probs.double())).mean(0)
