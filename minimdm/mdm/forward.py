"""The forward (masking) process q(x_t | x_0) and its two discrete variants (LLaDA, arXiv
2502.09992; the discrete variants are the estimators of docs/derivations.md).

Every function takes ``maskable`` (bool, same shape as x0): positions that may be masked. Prompts in SFT,
conditional likelihood and DPO are never masked, so they pass ``maskable = ~is_prompt``.
"""
from __future__ import annotations

import torch


def _maskable_or_all(x0: torch.Tensor, maskable: torch.Tensor | None) -> torch.Tensor:
    if maskable is None:
        return torch.ones_like(x0, dtype=torch.bool)
    if maskable.shape != x0.shape or maskable.dtype != torch.bool:
        raise ValueError(f"maskable must be a bool tensor of shape {tuple(x0.shape)}, got {maskable.dtype} {tuple(maskable.shape)}")
    return maskable


def mask_tokens_t(x0, mask_prob, mask_id: int, maskable=None, generator=None):
    """t-variant: mask each token independently with probability mask_prob (B,) = 1 - alpha_t.

    q(x_t | x_0) = prod_i [alpha_t 1(x_t^i = x_0^i) + (1 - alpha_t) 1(x_t^i = M)]
    Returns (x_t, is_masked).
    """
    maskable = _maskable_or_all(x0, maskable)
    mask_prob = torch.as_tensor(mask_prob, device=x0.device)
    # not on CUDA: the check would make the training loop wait for the GPU at every step
    if mask_prob.device.type != "cuda" and not bool(((mask_prob >= 0) & (mask_prob <= 1)).all()):
        bad = mask_prob[~((mask_prob >= 0) & (mask_prob <= 1))].flatten()[0].item()
        raise ValueError(f"mask_prob={bad:g} must lie in [0, 1] (it is the probability 1 - alpha_t of masking a token)")
    u = torch.rand(x0.shape, device=x0.device, generator=generator)
    is_masked = (u < mask_prob.reshape(-1, 1)) & maskable
    return torch.where(is_masked, torch.full_like(x0, mask_id), x0), is_masked


def mask_tokens_l(x0, num_masked, mask_id: int, maskable=None, generator=None):
    """l-variant: mask exactly num_masked (B,) maskable positions per row, uniformly without replacement."""
    maskable = _maskable_or_all(x0, maskable)
    num_masked = torch.as_tensor(num_masked, device=x0.device).reshape(-1)
    # not on CUDA, as in mask_tokens_t: the check would make the training loop wait for the GPU at every step
    if num_masked.device.type != "cuda" and bool(((num_masked < 0) | (num_masked > maskable.sum(1))).any()):
        if bool((num_masked < 0).any()):
            raise ValueError(f"num_masked={num_masked.min().item()} is negative: counts of masked tokens must be >= 0")
        raise ValueError("num_masked exceeds the number of maskable positions in some row")
    # A uniformly random rank among the maskable positions; the lowest num_masked ranks get masked.
    scores = torch.rand(x0.shape, device=x0.device, generator=generator).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    is_masked = ranks < num_masked[:, None]
    return torch.where(is_masked, torch.full_like(x0, mask_id), x0), is_masked


def stratified_uniform(batch: int, device=None, generator=None) -> torch.Tensor:
    """t_b = (u + b/B) mod 1: each t_b is still U(0,1), but the batch covers [0,1) evenly (stratified sampling)."""
    u = torch.rand((), device=device, generator=generator)
    return (u + torch.arange(batch, device=device) / batch) % 1.0


def stratified_counts(batch: int, length, device=None, generator=None) -> torch.Tensor:
    """l_b = floor(L * ((u + b/B) mod 1)) + 1: each l_b is U{1..L}, and the batch spreads over 1..L evenly.

    The same idea as LLaDA's evaluation draw (its likelihood evaluation, arXiv 2502.09992), written through the
    stratified uniform so that ``length`` may also be a (batch,) tensor of per-row maskable lengths.
    """
    length = torch.as_tensor(length, device=device).expand(batch)
    u = stratified_uniform(batch, device=device, generator=generator)
    return torch.floor(u * length).long().clamp(max=length - 1) + 1
