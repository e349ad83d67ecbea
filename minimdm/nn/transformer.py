"""One transformer backbone for every model in the course.

A pre-norm LLaMA-style decoder (RMSNorm, SwiGLU, RoPE, ``F.scaled_dot_product_attention``):

* ``causal=True``  -> the autoregressive baseline (ARM);
* ``causal=False`` -> the masked diffusion model (MDM): the same network with the causal mask removed.

Token ids ``0..K-1`` are real tokens. With ``mask_token=True`` the embedding table has one extra row,
id ``K`` = ``model.mask_id``, but the head still has ``K`` outputs: the mask is an input, never a
prediction (the clean data never contains it; LLaDA, arXiv 2502.09992, §2.1). An optional boolean ``attn_mask``
(True = may attend) serves document masks and dialogue-causal masks; ``time_cond=True`` adds a time embedding for
RADD's ablation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TransformerConfig:
    vocab_size: int  # K real tokens; the head predicts these K
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    max_len: int = 256  # longest sequence the RoPE cache is built for (it grows on demand)
    causal: bool = False
    mask_token: bool = True  # add the embedding row K for the mask token
    dropout: float = 0.0
    ffn_mult: float = 8 / 3  # SwiGLU hidden = ffn_mult * d_model, rounded up to a multiple of 32
    rope_base: float = 10000.0
    rope_scale: float = 1.0  # position interpolation factor (UltraLLaDA-style extensions change base/scale)
    time_cond: bool = False  # add a sinusoidal embedding of t to the input (RADD ablation only)
    # Under autocast, carry the residual stream in the autocast dtype (bf16) instead of float32: the adds and norms
    # between the matmuls move half the bytes, at the cost of rounding the stream (off by default; no effect
    # without autocast)
    autocast_residual: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into n_heads={self.n_heads} heads of even size")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g"""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # the gain in x's dtype: a bf16 residual stream (autocast_residual) keeps the fused kernel, which
        # accumulates in float32 either way
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each pair of channels (2k, 2k+1) by angle pos * base^(-2k/d) (Su et al. 2021)."""

    def __init__(self, head_dim: int, max_len: int, base: float, scale: float):
        super().__init__()
        self.head_dim, self.base, self.scale = head_dim, base, scale
        self._build(max_len)

    def _build(self, length: int, device=None):
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim)
        positions = torch.arange(length, device=device, dtype=torch.float32) / self.scale
        angles = torch.outer(positions, inv_freq)  # (T, head_dim/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x, offset: int = 0):
        """x: (B, H, T, head_dim); positions offset..offset+T-1 (offset > 0 when decoding with a KV cache)."""
        T = x.shape[-2]
        if offset + T > self.cos.shape[0]:
            self._build(2 * (offset + T), device=x.device)
        cos = self.cos[offset : offset + T].to(x.dtype)
        sin = self.sin[offset : offset + T].to(x.dtype)
        x_even, x_odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
        return rotated.flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.causal, self.dropout = cfg.causal, cfg.dropout

    def forward(self, x, rope: RotaryEmbedding, attn_mask=None, kv_cache=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        offset = 0 if kv_cache is None else kv_cache.length
        q, k = rope(q, offset), rope(k, offset)
        if kv_cache is not None:
            k, v = kv_cache.append(self, k, v)
        is_causal = self.causal and attn_mask is None and T > 1
        if is_causal and offset > 0:  # a causal chunk after cached positions: query i sees keys <= offset + i
            attn_mask = torch.ones(T, offset + T, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            is_causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    """FFN(x) = W2 (silu(W1 x) * W3 x)  (Shazeer 2020)"""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        hidden = 32 * math.ceil(cfg.ffn_mult * cfg.d_model / 32)
        self.gate_up = nn.Linear(cfg.d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(cfg.d_model), Attention(cfg)
        self.ffn_norm, self.ffn = RMSNorm(cfg.d_model), SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope, attn_mask=None, kv_cache=None):
        x = x + self.drop(self.attn(self.attn_norm(x), rope, attn_mask, kv_cache))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class KVCache:
    """Keys and values of the positions decoded so far, one entry per layer (causal decoding only)."""

    def __init__(self):
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.length = 0

    def append(self, layer: nn.Module, k: torch.Tensor, v: torch.Tensor):
        key = id(layer)
        if key in self.layers:
            past_k, past_v = self.layers[key]
            k, v = torch.cat([past_k, k], dim=-2), torch.cat([past_v, v], dim=-2)
        self.layers[key] = (k, v)
        return k, v

    def advance(self, n: int) -> None:
        self.length += n


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (B,) -> (B, dim), as in DDPM/SEDD."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size + int(cfg.mask_token), cfg.d_model)
        self.rope = RotaryEmbedding(cfg.d_model // cfg.n_heads, cfg.max_len, cfg.rope_base, cfg.rope_scale)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.time_mlp = (
            nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model))
            if cfg.time_cond
            else None
        )
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style: shrink the residual projections with depth
            if name.endswith(("attn.out.weight", "ffn.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def mask_id(self) -> int | None:
        return self.config.vocab_size if self.config.mask_token else None

    def num_parameters(self, non_embedding: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed.weight.numel() if non_embedding else total

    def forward(self, input_ids: torch.Tensor | None, attn_mask: torch.Tensor | None = None,
                time: torch.Tensor | None = None, kv_cache=None, input_embeds: torch.Tensor | None = None,
                hidden_states: list | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, K). attn_mask: bool (B, T, T) or (B, 1, T, S), True = may attend.

        ``input_embeds`` (B, T, d_model) replaces the embedding lookup (pass ``input_ids=None``): a vision-language
        model splices image features into the token embeddings this way. A list passed as ``hidden_states``
        receives n_layers + 1 tensors (B, T, d_model): the input of every block, then the final normed output.
        """
        if (input_ids is None) == (input_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, T) and input_embeds (B, T, d_model)")
        if input_embeds is not None:
            if input_embeds.dim() != 3 or input_embeds.shape[-1] != self.config.d_model:
                raise ValueError(f"input_embeds must have shape (batch, length, {self.config.d_model}), "
                                 f"got {tuple(input_embeds.shape)}")
        elif input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
        if kv_cache is not None and not self.config.causal:
            raise ValueError("kv_cache needs causal=True: a bidirectional model recomputes every position")
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool:
                raise ValueError(f"attn_mask must be a boolean tensor (True = may attend), got {attn_mask.dtype}")
            if attn_mask.dim() == 3:
                attn_mask = attn_mask[:, None]  # broadcast over heads
        x = self.embed(input_ids) if input_embeds is None else input_embeds
        if self.config.autocast_residual and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # every block's output follows the dtype of its input
        if self.time_mlp is not None:
            if time is None:
                raise ValueError("this model has time_cond=True: pass time=t of shape (batch,)")
            x = x + self.time_mlp(timestep_embedding(time, self.config.d_model))[:, None]
        for block in self.blocks:
            if hidden_states is not None:
                hidden_states.append(x)
            x = block(x, self.rope, attn_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(x.shape[1])
        x = self.norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        return self.head(x)
