import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_transformer(vocab_size=5, length=8, causal=False, dtype=torch.float64, **kwargs):
    """An untrained network: a denoiser with arbitrary, mutually *inconsistent* conditionals."""
    from minimdm.nn import Transformer, TransformerConfig

    torch.manual_seed(1)
    cfg = dict(vocab_size=vocab_size, n_layers=2, d_model=32, n_heads=4, max_len=length, causal=causal)
    cfg.update(kwargs)
    model = Transformer(TransformerConfig(**cfg)).to(dtype).eval()
    for p in model.parameters():  # larger weights: conditionals far from uniform
        p.data.mul_(8.0)
    return model
