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


def check_model_mask_id(denoiser, mask_id: int) -> None:
    """For a minimdm Transformer, refuse a mask id inside its vocabulary (for other denoisers nothing is known)."""
    vocab_size, _ = token_limits(denoiser)
    if vocab_size is not None:
        check_mask_id(mask_id, vocab_size)


def token_limits(denoiser) -> tuple[int | None, int | None]:
    """(vocabulary size K, embedding rows) of a minimdm Transformer; (None, None) for any other denoiser."""
    from minimdm.nn import TransformerConfig

    config = getattr(denoiser, "config", None)
    embed = getattr(denoiser, "embed", None)
    if not isinstance(config, TransformerConfig) or not isinstance(embed, torch.nn.Embedding):
        return None, None
    return config.vocab_size, embed.num_embeddings
