"""The training losses of visual instruction tuning: LLaDA-V's multi-turn masked-diffusion loss, and the AR control.

A dialogue is (v, p^1, r^1, ..., p^N, r^N): image features v, prompts p^k, responses r^k. LLaDA-V (arXiv 2505.16933,
its multi-turn training objective) draws one t per dialogue, masks the tokens of *all* responses at once, each with probability t, keeps
the image and every prompt clean, and trains

    L(theta) = - E_{t, r_t} [ (1/t) sum_k sum_j 1[r_t^{k,j} = M] log p_theta(r_0^{k,j} | v, p^1, r_t^1, ..., p^N, r_t^N) ]

This is LLaDA's SFT loss (arXiv 2502.09992, §2.3) with every turn's response as the answer, an upper bound on
the negative log-likelihood of the responses. As in LLaDA's code the sum of each dialogue is divided by its number of
response tokens, then averaged over the batch; t is moved into [eps, 1] as p = (1 - eps) t + eps so 1/t stays finite.

The autoregressive control (the paper's LLaMA3-V) uses the next-token loss on the same response tokens, with the same
per-dialogue normalisation.
"""
from __future__ import annotations

import torch

from minimdm.mdm.loss import draw_masks, masked_cross_entropy


def check_answer_mask(ids: torch.Tensor, answer_mask: torch.Tensor) -> None:
    if answer_mask.shape != ids.shape or answer_mask.dtype != torch.bool:
        raise ValueError(f"answer_mask must be a boolean tensor of the shape of ids {tuple(ids.shape)}, "
                         f"got {answer_mask.dtype} {tuple(answer_mask.shape)}")
    empty = torch.nonzero(answer_mask.sum(1) == 0).flatten()
    if len(empty):
        raise ValueError(f"row {int(empty[0])} has no answer token: every dialogue needs a non-empty answer")


def mask_answers(ids: torch.Tensor, answer_mask: torch.Tensor, mask_id: int, eps: float = 1e-3):
    """Forward process on the responses only: (x_t, is_masked, p) with one p = (1 - eps) t + eps per dialogue,
    t spread evenly over the batch; the image and the prompts are never masked (LLaDA's SFT draw)."""
    return draw_masks(ids, mask_id, eps, stratified=True, maskable=answer_mask)


def masked_answer_loss(logits: torch.Tensor, ids: torch.Tensor, is_masked: torch.Tensor,
                       answer_mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(1/B) sum_b (1/L_b) sum_{i masked} -log p_theta(x_0^i | x_t) / p_b, L_b = number of response tokens of b."""
    nll = masked_cross_entropy(logits, ids, is_masked) / p[:, None]  # the integrand above, (B, T)
    return (nll.sum(1) / answer_mask.sum(1)).mean()


def mdm_dialogue_loss(model, batch, eps: float = 1e-3) -> torch.Tensor:
    """LLaDA-V's loss for a batch (ids, answer_mask[, images]) and a VisionLanguageModel (or a plain LM)."""
    ids, answer_mask, *images = batch
    check_answer_mask(ids, answer_mask)
    xt, is_masked, p = mask_answers(ids, answer_mask, model.mask_id, eps)
    logits = model(xt, *images)
    return masked_answer_loss(logits, ids, is_masked, answer_mask, p)


def ar_dialogue_loss(model, batch) -> torch.Tensor:
    """Next-token loss on response tokens: position i-1 predicts token i, for every response token i."""
    ids, answer_mask, *images = batch
    check_answer_mask(ids, answer_mask)
    logits = model(ids, *images)[:, :-1]
    target_is_answer = answer_mask[:, 1:]
    nll = masked_cross_entropy(logits, ids[:, 1:], target_is_answer)
    return (nll.sum(1) / target_is_answer.sum(1)).mean()
