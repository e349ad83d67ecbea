"""The masked-diffusion pretraining loss (SMDM, arXiv 2410.18514; LLaDA, arXiv 2502.09992).

    L(theta) = E_t [ (1/t) * E_{x_t ~ q(.|x_0)} sum_{i: x_t^i = M} -log p_theta(x_0^i | x_t) ]

an upper bound on -log p_theta(x_0) (the ELBO; docs/derivations.md). As implemented by SMDM and LLaDA:
t ~ U(0,1) per sequence, moved into [eps, 1] as p = (1 - eps) t + eps so the 1/t weight stays finite, and the sum is
normalised by all B*L positions (not by the masked count), which keeps it an unbiased per-token bound.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minimdm.mdm.denoiser import check_model_mask_id, logits_of
from minimdm.mdm.forward import mask_tokens_t, stratified_uniform


def masked_cross_entropy(logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor) -> torch.Tensor:
    """-log p_theta(x_0^i | x_t) at masked positions, 0 elsewhere. (B, L, K), (B, L) -> (B, L).

    Computed at every position and then zeroed, so shapes stay static (friendlier to torch.compile).
    Half-precision logits are upcast to float32; float64 (the exact checks) stays float64.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    return ce * is_masked


def draw_masks(x0: torch.Tensor, mask_id: int, eps: float = 1e-3, stratified: bool = True,
               maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw of the forward process: (x_t, is_masked, p), with p of shape (B,).

    t ~ U(0,1) per sequence (stratified=True spreads the B draws evenly over (0,1); each is still U(0,1)),
    moved into [eps, 1] as p = (1 - eps) t + eps, and each maskable token masked with probability p.
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps={eps} must lie in [0, 1)")
    batch = x0.shape[0]
    t = stratified_uniform(batch, x0.device) if stratified else torch.rand(batch, device=x0.device)
    p = (1 - eps) * t + eps  # p_b = (1 - eps) t_b + eps
    xt, is_masked = mask_tokens_t(x0, p, mask_id, maskable)
    return xt, is_masked, p


def weighted_masked_nll(model, x0: torch.Tensor, mask_id: int, eps: float = 1e-3, stratified: bool = True,
                        maskable: torch.Tensor | None = None) -> torch.Tensor:
    """One draw of the integrand: CE_i / p_b at masked positions, 0 elsewhere, (B, L) (masks from ``draw_masks``)."""
    check_model_mask_id(model, mask_id)
    xt, is_masked, p = draw_masks(x0, mask_id, eps, stratified, maskable)
    return masked_cross_entropy(logits_of(model, xt), x0, is_masked) / p[:, None]


def mdm_pretrain_loss(model, x0: torch.Tensor, mask_id: int, eps: float = 1e-3, stratified: bool = True,
                      maskable: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA's pretraining loss for a batch x0 (B, L) of clean token ids:
    sum_b sum_{i masked} CE_i / p_b, normalised by all B L positions."""
    return weighted_masked_nll(model, x0, mask_id, eps, stratified, maskable).sum() / x0.numel()
