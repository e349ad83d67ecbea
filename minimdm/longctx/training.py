"""Pretraining at T_train and post-training at the target length, both on the course's trainer.

The loss has two terms, each one of LLaDA's (arXiv 2502.09992):

* the pretraining loss (``minimdm.mdm.loss.mdm_pretrain_loss``, LLaDA §2.2) on every token of the sequence: one t
  per sequence, each token masked with probability t, the masked cross-entropy weighted by 1/t;
* the SFT loss (``minimdm.mdm.sft.sft_loss``, LLaDA §2.3) on the asked document's answer: the rest of the sequence
  is the prompt and stays clean, only the answer's key tokens are masked and scored.

The second term is the miniature's concession. A model this small, trained from scratch, does not discover
retrieval from the first term alone: the key is one token of a whole document, and the filler's bigram structure is
all the loss rewards (notebook 08 runs that ablation). ``answer_loss=False`` leaves it out.

Post-training only changes what goes in: RoPE's angles (``apply_rope_scaling``), longer sequences packed from
several documents, and for the ``"doc_mask"`` strategy a block-diagonal attention mask (UltraLLaDA, arXiv
2510.10481, its masking strategies).
"""
from __future__ import annotations

import functools

import torch

from minimdm.longctx.passkey import PACKING, PasskeyTask, document_attention_mask
from minimdm.longctx.rope import RopeScaling, apply_rope_scaling
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.mdm.sft import sft_loss
from minimdm.train import TrainConfig, TrainResult, train


def denoiser_with_mask(model, doc_ids: torch.Tensor | None):
    """The model itself, or the model restricted to attention inside each document (doc_ids (B, T))."""
    if doc_ids is None:
        return model
    return functools.partial(model, attn_mask=document_attention_mask(doc_ids))


def passkey_loss(model, batch, mask_id: int, use_doc_mask: bool = False, answer_loss: bool = True) -> torch.Tensor:
    """LLaDA's pretraining loss on the whole batch, plus its SFT loss on the answers when ``answer_loss``.

    batch: (tokens (B, T), answer_mask (B, T) bool, doc_ids (B, T)); the document mask only for "doc_mask".
    """
    tokens, answer_mask, doc_ids = batch
    denoiser = denoiser_with_mask(model, doc_ids if use_doc_mask else None)
    loss = mdm_pretrain_loss(denoiser, tokens, mask_id)
    if answer_loss:  # the prompt is everything but the answer: only the key tokens are masked and scored
        loss = loss + sft_loss(denoiser, tokens, ~answer_mask, mask_id)
    return loss


def pretrain(model, task: PasskeyTask, length: int, batch_size: int, config: TrainConfig,
             answer_loss: bool = True) -> TrainResult:
    """Train ``model`` in place on single passkey documents of ``length`` tokens (needle at a random depth)."""
    def batch_fn(step):
        documents = task.documents(batch_size, length)
        return documents.tokens, documents.answer_mask, documents.doc_ids

    return train(model, functools.partial(passkey_loss, mask_id=model.mask_id, answer_loss=answer_loss), batch_fn,
                 config)


def post_train(model, scaling: RopeScaling, task: PasskeyTask, strategy: str, length: int, batch_size: int,
               config: TrainConfig, answer_loss: bool = True) -> tuple[torch.nn.Module, TrainResult]:
    """A copy of ``model`` with ``scaling``'s RoPE, trained on packs of ``length`` tokens packed by ``strategy``.

    The trainer reseeds torch's generator from (seed, step) before every batch, so two calls with the same config
    draw the same documents at every step: every strategy and every variant sees the same tokens and steps.
    """
    if strategy not in PACKING:
        raise ValueError(f"strategy={strategy!r}: allowed values are {PACKING}")
    extended = apply_rope_scaling(model, scaling)

    def batch_fn(step):
        packs = task.packs(batch_size, length, strategy)
        return packs.tokens, packs.answer_mask, packs.doc_ids

    loss_fn = functools.partial(passkey_loss, mask_id=model.mask_id, use_doc_mask=strategy == "doc_mask",
                                answer_loss=answer_loss)
    return extended, train(extended, loss_fn, batch_fn, config)
