"""What a user would write instead of this course: a nanoGPT-style network and its losses in plain PyTorch.

The yardstick of ``bench/train_throughput.py``, whose plain loop trains it (fused AdamW, bf16 autocast and
``torch.compile`` on CUDA). GPT-2's block (learned positions, LayerNorm, GELU MLP, attention through
``scaled_dot_product_attention``), causal for the ARM or bidirectional for the MDM, with the matching loss written
out here (next-token cross-entropy; LLaDA's masked loss, arXiv 2502.09992 eq. 3). Sized like the minimdm network it
is timed against: same layers, width, heads, context and vocabulary (the benchmark prints both parameter counts).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool):
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, length, d))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, n_layers: int, d_model: int, n_heads: int, seq_len: int, causal: bool):
        super().__init__()
        self.vocab = vocab  # ids 0..vocab-1 are tokens; the MDM's mask (or the ARM's start token) is id vocab
        self.tokens, self.positions = nn.Embedding(vocab + 1, d_model), nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, causal) for _ in range(n_layers))
        self.ln, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def arm_loss(model: GPT, x0):
    """Next-token cross-entropy; the first token is predicted from a start token."""
    start = torch.full_like(x0[:, :1], model.vocab)
    logits = model(torch.cat([start, x0[:, :-1]], dim=1))
    return F.cross_entropy(logits.flatten(0, 1).float(), x0.flatten())


def mdm_loss(model: GPT, x0, eps: float = 1e-3):
    """LLaDA: t ~ U(eps, 1) per sequence, mask each token with probability t, cross-entropy on masked tokens / t."""
    t = eps + (1 - eps) * torch.rand(x0.shape[0], 1, device=x0.device)
    masked = torch.rand(x0.shape, device=x0.device) < t
    logits = model(torch.where(masked, model.vocab, x0))
    nll = F.cross_entropy(logits.flatten(0, 1).float(), x0.flatten(), reduction="none").view_as(x0)
    return (nll * masked / t).sum() / x0.numel()


def build(kind: str, vocab: int, n_layers: int, d_model: int, n_heads: int, seq_len: int, device):
    """(model, loss_fn, non-embedding parameters) for ``kind`` 'arm' or 'mdm'; the timing loop is the benchmark's."""
    torch.manual_seed(0)
    model = GPT(vocab, n_layers, d_model, n_heads, seq_len, causal=kind == "arm").to(device)
    params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("tokens", "positions")))
    return model, arm_loss if kind == "arm" else mdm_loss, params
