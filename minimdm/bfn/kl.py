"""The transmission cost of one BFN step when the receiver is a mixture: KL(sender || receiver) by Monte Carlo.

For discretised and discrete data the receiver p_R(y) = sum_k p_O(k) p_S(y | k) is a Gaussian mixture whose
components share the sender's isotropic variance, and KL(Gaussian || mixture) has no closed form.
"""
from __future__ import annotations

import torch
from torch import Tensor


def gaussian_to_mixture_kl(
    sender_mean: Tensor, mixture_means: Tensor, mixture_weights: Tensor, variance: Tensor | float, n_samples: int = 10
) -> Tensor:
    """Monte-Carlo estimate of KL(N(m_s, v I) || sum_k w_k N(m_k, v I)), averaged over ``n_samples`` draws.

    sender_mean (..., E), mixture_means (..., K, E), mixture_weights (..., K), variance broadcastable to (...)
    -> (...). The Gaussian normalising constants are equal on both sides and cancel. Weights are floored at 1e-30
    (log 0 would be -inf), so a component given less weight than that is read as 1e-30: the KL then comes out too
    small, by up to the weight's log-ratio to 1e-30.
    """
    variance = torch.as_tensor(variance, dtype=sender_mean.dtype, device=sender_mean.device)
    std = variance.sqrt().unsqueeze(-1)  # (..., 1) against (..., E)
    y = sender_mean + std * torch.randn((n_samples, *sender_mean.shape), dtype=sender_mean.dtype, device=sender_mean.device)
    log_sender = -(y - sender_mean).pow(2).sum(-1) / (2 * variance)  # (S, ...)
    sq_dist = (y.unsqueeze(-2) - mixture_means).pow(2).sum(-1)  # (S, ..., K)
    log_receiver = torch.logsumexp(torch.log(mixture_weights.clamp_min(1e-30)) - sq_dist / (2 * variance.unsqueeze(-1)), dim=-1)
    return (log_sender - log_receiver).mean(0)
