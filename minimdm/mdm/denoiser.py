"""What every algorithm in the course calls a *denoiser*.

A denoiser maps a partially masked sequence x_t (B, L) to logits (B, L, K) over the K real tokens: its
softmax at a masked position i is p_theta(x_0^i | x_t). A trained Transformer is one; the exact oracles in
``minimdm.toys`` are others (they return log-probabilities, which are valid logits). Hugging Face models
that return an object with ``.logits`` (LLaDA's remote code does) work too.
"""
from __future__ import annotations

import torch


def logits_of(denoiser, x: torch.Tensor, **kwargs) -> torch.Tensor:
    out = denoiser(x, **kwargs)
    return out.logits if hasattr(out, "logits") else out


def device_of(model) -> torch.device:
    """Where a model's parameters live (CPU for parameter-free callables such as the toy oracles)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def check_mask_id(mask_id: int, vocab_size: int) -> None:
    """The mask must be an extra id: inside the vocabulary it would collide with a real token."""
    if mask_id < vocab_size:
        raise ValueError(
            f"mask_id={mask_id} lies inside the vocabulary (0..{vocab_size - 1}); "
            f"use an id >= vocab_size (minimdm's models use mask_id = vocab_size = {vocab_size})"
        )


def check_embedding_id(mask_id: int, embedding_size: int) -> None:
    """The mask must also be a row of the model's embedding: a larger id would fail deep inside torch."""
    if not 0 <= mask_id < embedding_size:
        raise ValueError(f"mask_id={mask_id} lies outside the model's embedding (ids 0..{embedding_size - 1}); "
                         f"use the model's own mask id (model.mask_id)")


def check_model_mask_id(denoiser, mask_id: int) -> None:
    """For a minimdm Transformer, refuse a mask id inside its vocabulary or outside its embedding (for other
    denoisers nothing is known)."""
    vocab_size, embedding_size = token_limits(denoiser)
    if vocab_size is not None:
        check_mask_id(mask_id, vocab_size)
    if embedding_size is not None:
        check_embedding_id(mask_id, embedding_size)


INTEGER_DTYPES = (torch.long, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_token_ids(ids: torch.Tensor, name: str, mask_id: int, vocab_size: int | None = None, *, dim: int = 2,
                    masks_allowed: bool = False) -> None:
    """``ids`` must be an integer tensor of ``dim`` dimensions ((batch, length) by default) holding token ids
    >= 0 (and < vocab_size when it is known); mask_id too where ``masks_allowed`` (a canvas to fill in).

    The shape and dtype checks are free; the id range costs one reduction (call it once, at the entry point)."""
    shape = "(batch, length)" if dim == 2 else "(length,)"
    if not isinstance(ids, torch.Tensor) or ids.dim() != dim:
        got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"{name} must be a tensor of token ids of shape {shape}, got {got}")
    if ids.dtype not in INTEGER_DTYPES:
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.numel() == 0:
        return
    if not masks_allowed and bool((ids == mask_id).any()):
        raise ValueError(f"{name} contains mask_id={mask_id}; {name} must not contain the mask (it is fully visible)")
    visible = ids if not masks_allowed else ids.masked_fill(ids == mask_id, 0)
    low, high = int(visible.min()), int(visible.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        allowed = "ids >= 0" if vocab_size is None else f"ids 0..{vocab_size - 1} (the model's vocabulary)"
        raise ValueError(f"{name} holds token id {low if low < 0 else high}; allowed are {allowed}"
                         + (f" and mask_id={mask_id}" if masks_allowed else ""))


def token_limits(denoiser) -> tuple[int | None, int | None]:
    """(vocabulary size K, embedding rows) of a minimdm Transformer; (None, None) for any other denoiser."""
    from minimdm.nn import TransformerConfig

    config = getattr(denoiser, "config", None)
    embed = getattr(denoiser, "embed", None)
    if not isinstance(config, TransformerConfig) or not isinstance(embed, torch.nn.Embedding):
        return None, None
    return config.vocab_size, embed.num_embeddings
