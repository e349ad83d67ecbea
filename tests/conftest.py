import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Tests run many tiny tensor ops: one thread avoids OpenMP overhead (up to 30x on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def gmm_denoiser(gmm, schedule):
    """The exact x-prediction of continuous BFN for a Gaussian mixture: E[x | mu] at accuracy gamma(t)."""

    def predict_x(mu, t):
        gamma = schedule.gamma(t).to(mu.dtype)
        return gmm.posterior_mean(mu, gamma, torch.sqrt(gamma * (1 - gamma)))

    return predict_x


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
