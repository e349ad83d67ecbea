"""LLaDA-V in miniature: vision encoder -> MLP connector -> image features spliced into a language model.

LLaDA-V (arXiv 2505.16933, method section) feeds SigLIP patch features through a two-layer MLP into LLaDA's embedding space
and puts them where the ``<image>`` placeholder stood in the text. The language model is the course's
``minimdm.nn.Transformer``; the switch ``attention`` picks the attention pattern of the paper's Fig. 4 and its attention-mask ablation:

* ``"bidirectional"``   every token sees every token (LLaDA-V's choice, and LLaDA's);
* ``"dialogue_causal"`` full attention inside a turn, causal across turns: turn k sees turns <= k only;
* ``"causal"``          the usual left-to-right mask, for the autoregressive control (the paper's LLaMA3-V).

Padding on the right of a batch row is hidden from every query, so a padded row computes exactly what it would
alone (LLaDA-V itself trains with batch 1 per device and passes no mask).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from minimdm.nn import Transformer
from minimdm.vlm.dialogues import IMAGE_TOKENS
from minimdm.vlm.encoder import DigitEncoder, check_images

ATTENTION = ("bidirectional", "dialogue_causal", "causal")


class Connector(nn.Sequential):
    """LLaDA-V's projector: Linear -> GELU -> Linear, from the encoder width to the LM width."""

    def __init__(self, encoder_width: int, d_model: int):
        super().__init__(nn.Linear(encoder_width, d_model), nn.GELU(), nn.Linear(d_model, d_model))


def turn_ids(ids: torch.Tensor, user_id: int) -> torch.Tensor:
    """c(i): 0 for <bos> and the first turn, +1 at every later <user> token; padding keeps the last turn's id."""
    return (torch.cumsum(ids == user_id, dim=1) - 1).clamp_min(0)


def attention_mask(ids: torch.Tensor, attention: str, user_id: int, pad_id: int) -> torch.Tensor:
    """Boolean (B, T, T), True = query i may attend to key j.

    bidirectional:   A[i, j] = 1[j not padding]
    dialogue_causal: A[i, j] = 1[c(j) <= c(i)] and 1[j not padding]   (LLaDA-V Fig. 4 b)
    causal:          A[i, j] = 1[j <= i] and 1[j not padding]
    """
    if attention not in ATTENTION:
        raise ValueError(f"attention={attention!r}: allowed values are {ATTENTION}")
    B, T = ids.shape
    allowed = (ids != pad_id)[:, None, :].expand(B, T, T)
    if attention == "dialogue_causal":
        turn = turn_ids(ids, user_id)
        allowed = allowed & (turn[:, None, :] <= turn[:, :, None])
    elif attention == "causal":
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    return allowed


def check_placeholders(ids: torch.Tensor, images_per_row: int, image_id: int) -> None:
    """Each row must hold exactly IMAGE_TOKENS placeholder ids per image; name the first row that does not."""
    counts = (ids == image_id).sum(dim=1)
    expected = images_per_row * IMAGE_TOKENS
    bad = torch.nonzero(counts != expected).flatten()
    if len(bad) == 0:
        return
    row, found = int(bad[0]), int(counts[bad[0]])
    if images_per_row == 0:
        raise ValueError(f"row {row} holds {found} <image> placeholder ids but no images were given")
    if found == 0:
        raise ValueError(f"row {row} has {images_per_row} image(s) but no <image> placeholder: "
                         f"write {IMAGE_TOKENS} placeholder ids per image in the text")
    if found < expected:
        raise ValueError(f"row {row} has {images_per_row} images but only {found / IMAGE_TOKENS:g} placeholders "
                         f"({found} ids): more images than placeholders")
    raise ValueError(f"row {row} has {found / IMAGE_TOKENS:g} placeholders ({found} ids) but only "
                     f"{images_per_row} image(s): each image needs exactly {IMAGE_TOKENS} placeholder ids")


def splice(embeds: torch.Tensor, ids: torch.Tensor, features: torch.Tensor, image_id: int) -> torch.Tensor:
    """Put features (B, n, d) at the n placeholder positions of each row, in order; other positions unchanged."""
    is_image = (ids == image_id)[..., None]  # (B, T, 1)
    return embeds.masked_scatter(is_image, features.to(embeds.dtype))  # fills masked slots row by row, in order


class VisionLanguageModel(nn.Module):
    """encoder + connector + language model; ``forward(ids, images) -> logits`` over the LM's vocabulary."""

    def __init__(self, encoder: DigitEncoder, lm: Transformer, *, image_id: int, user_id: int, pad_id: int,
                 attention: str = "bidirectional"):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention={attention!r}: allowed values are {ATTENTION}")
        if (attention == "causal") != lm.config.causal:
            raise ValueError(f"attention={attention!r} needs a language model with causal={attention == 'causal'}")
        if not 0 <= image_id < lm.config.vocab_size:
            raise ValueError(f"image_id={image_id} must be a token id of the LM (0..{lm.config.vocab_size - 1})")
        self.encoder, self.lm = encoder, lm
        self.connector = Connector(encoder.width, lm.config.d_model)
        self.image_id, self.user_id, self.pad_id, self.attention = image_id, user_id, pad_id, attention

    @property
    def mask_id(self) -> int | None:
        return self.lm.mask_id

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) or (B, N, 1, 8, 8) -> (B, 16 N, d_model): encoder grid projected by the connector."""
        many = images.reshape(-1, *images.shape[2:]) if images.dim() == 5 else images
        features = self.connector(self.encoder(many))  # (B N, 16, d)
        return features.reshape(images.shape[0], -1, features.shape[-1])

    def embed(self, ids: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with image features spliced in place of the placeholders (B, T, d_model)."""
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, length), got {tuple(ids.shape)}")
        images_per_row = 0
        if images is not None:
            check_images(images.flatten(0, 1) if images.dim() == 5 else images)
            if images.shape[0] != ids.shape[0]:
                raise ValueError(f"images has {images.shape[0]} rows but ids has {ids.shape[0]}: one entry per row")
            images_per_row = images.shape[1] if images.dim() == 5 else 1
        check_placeholders(ids, images_per_row, self.image_id)
        embeds = self.lm.embed(ids)
        if images is None:
            return embeds
        return splice(embeds, ids, self.image_features(images), self.image_id)

    def forward(self, ids: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.embed(ids, images)
        # without padding, full and causal attention need no mask: SDPA then picks its fused kernels (under
        # torch.compile the mask is always built, as looking for padding would break the graph)
        needs_mask = self.attention == "dialogue_causal" or torch.compiler.is_compiling() or \
            bool((ids == self.pad_id).any())
        mask = attention_mask(ids, self.attention, self.user_id, self.pad_id) if needs_mask else None
        return self.lm(None, attn_mask=mask, input_embeds=embeds)


def bind_images(model: VisionLanguageModel, images: torch.Tensor | None, forbidden: tuple[int, ...] = ()):
    """A denoiser for ``minimdm.mdm.sampler.generate``: canvas (B, T) -> logits, with the images fixed.

    ``forbidden`` token ids get logit -inf, so a sampler never writes them (an answer must not contain an image
    placeholder or a role header: the next turn's prompt would change shape or meaning).
    """

    def denoiser(canvas: torch.Tensor) -> torch.Tensor:
        logits = model(canvas, images)
        if forbidden:
            logits[..., list(forbidden)] = -math.inf
        return logits

    denoiser.parameters = model.parameters  # lets the sampler find the device
    return denoiser
