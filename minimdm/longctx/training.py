"""Pretraining at T_train and post-training at the target length, both on the course's trainer.

The loss is LLaDA's (``minimdm.mdm.loss.mdm_pretrain_loss``) on every token of the sequence: one t per sequence,
each token masked with probability t, the masked cross-entropy weighted by 1/t. Post-training only changes what
goes in: RoPE's angles (``apply_rope_scaling``), longer sequences packed from several documents, and for the
``"doc_mask"`` strategy a block-diagonal attention mask (UltraLLaDA, arXiv 2510.10481, its masking strategies).
"""
from __future__ import annotations

import functools

import torch

from minimdm.longctx.passkey import PACKING, PasskeyTask, document_attention_mask
from minimdm.longctx.rope import RopeScaling, apply_rope_scaling
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.train import TrainConfig, TrainResult, train


def denoiser_with_mask(model, doc_ids: torch.Tensor | None):
    """The model itself, or the model restricted to attention inside each document (doc_ids (B, T))."""
    if doc_ids is None:
        return model
    return functools.partial(model, attn_mask=document_attention_mask(doc_ids))


def packed_mdm_loss(model, batch, mask_id: int, use_doc_mask: bool) -> torch.Tensor:
    """LLaDA's loss on a packed batch (tokens (B, T), doc_ids (B, T)); the mask only for "doc_mask"."""
    tokens, doc_ids = batch
    return mdm_pretrain_loss(denoiser_with_mask(model, doc_ids if use_doc_mask else None), tokens, mask_id)


def pretrain(model, task: PasskeyTask, length: int, batch_size: int, config: TrainConfig) -> TrainResult:
    """Train ``model`` in place on single passkey documents of ``length`` tokens (needle at a random depth)."""
    return train(model, lambda m, tokens: mdm_pretrain_loss(m, tokens, model.mask_id),
                 lambda step: task.documents(batch_size, length).tokens, config)


def post_train(model, scaling: RopeScaling, task: PasskeyTask, strategy: str, length: int, batch_size: int,
               config: TrainConfig) -> tuple[torch.nn.Module, TrainResult]:
    """A copy of ``model`` with ``scaling``'s RoPE, trained on packs of ``length`` tokens packed by ``strategy``.

    The trainer reseeds torch's generator from (seed, step) before every batch, so two calls with the same config
    draw the same documents at every step: every strategy and every variant sees the same tokens and steps.
    """
    if strategy not in PACKING:
        raise ValueError(f"strategy={strategy!r}: allowed values are {PACKING}")
    extended = apply_rope_scaling(model, scaling)

    def batch_fn(step):
        packs = task.packs(batch_size, length, strategy)
        return packs.tokens, packs.doc_ids

    loss_fn = functools.partial(packed_mdm_loss, mask_id=model.mask_id, use_doc_mask=strategy == "doc_mask")
    return extended, train(extended, loss_fn, batch_fn, config)
