"""Compute accounting (SMDM, arXiv 2410.18514: C = 6ND; nanoGPT's estimate_mfu).

Training FLOPs per token = 6 N (N = non-embedding parameters: forward 2N, backward 4N; Kaplan et al., arXiv
2001.08361, section 2.1) plus the attention scores Q K^T and the mixing of the values, 12 n_layers T d_model (forward
2 T d each per layer, i.e. 4 n_layers T d, times 3 with the backward pass; PaLM, arXiv 2204.02311, appendix B).
"""
from __future__ import annotations

# Dense bf16 peak of the accelerators we have seen (FLOP/s); MFU is reported only where the peak is known.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}


def non_embedding_params(model) -> int:
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper prefixes every name
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embed"))


def training_flops_per_token(model, seq_len: int) -> float:
    cfg = getattr(model, "_orig_mod", model).config
    return 6 * non_embedding_params(model) + 12 * cfg.n_layers * seq_len * cfg.d_model


def peak_flops(device) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)
