"""The ARM baseline: FLOP accounting by hand, exact likelihood, KV-cache sampling, bad input."""
import itertools

import pytest
import torch

from conftest import tiny_transformer
from minimdm.arm import (arm_loss, check_kind, filter_top_k, sample_arm, start_token_id, token_nll,
                         validation_loss)
from minimdm.data import TokenStream
from minimdm.mdm.elbo import exact_elbo
from minimdm.flops import non_embedding_params, training_flops_per_token
from minimdm.nn import Transformer, TransformerConfig


def test_flop_counter_matches_a_hand_count():
    # vocab 10, 2 layers, d 32, 4 heads, T 16. SwiGLU hidden = 32 * ceil(8/3 * 32 / 32) = 96.
    model = Transformer(TransformerConfig(vocab_size=10, n_layers=2, d_model=32, n_heads=4, max_len=16, causal=True))
    per_layer = 32 * 3 * 32 + 32 * 32 + 32 * 2 * 96 + 96 * 32 + 2 * 32  # qkv, out, gate_up, down, two RMSNorm gains
    non_embedding = 2 * per_layer + 32 + 32 * 10  # + final norm + head (the embedding table is not counted)
    assert non_embedding == 27_104 == non_embedding_params(model)
    hand = 6 * non_embedding + 12 * 2 * 16 * 32  # 6N + 12 n_layers T d
    assert hand == 174_912
    assert training_flops_per_token(model, 16) == hand


def test_flop_counter_agrees_with_torch_flop_counter():
    """6N against torch's own count of the matmul FLOPs of one training step (forward + backward).

    N here is the matmul weights (the estimate also charges the RMSNorm gains, a <0.5% difference). The attention
    term 12 n_layers T d is added only where torch counts attention (its CPU kernel goes uncounted).
    """
    from torch.utils.flop_counter import FlopCounterMode

    T, B = 32, 2
    model = Transformer(TransformerConfig(vocab_size=50, n_layers=2, d_model=64, n_heads=4, max_len=T, causal=True))
    x = torch.randint(0, 50, (B, T))
    with FlopCounterMode(display=False) as counter:
        arm_loss(model, x, start_token_id(model)).backward()
    counted_ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    expected = 6 * matmul_params
    if any("attention" in op for op in counted_ops):
        expected += 12 * 2 * T * 64
    assert counter.get_total_flops() / (B * T) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(training_flops_per_token(model, T), rel=0.08)


def test_exact_nll_is_a_normalised_likelihood():
    """sum over all V^T windows of exp(-sum_i nll_i) = 1: the ARM's likelihood is exact, not a bound."""
    model = tiny_transformer(vocab_size=3, length=4, causal=True)
    windows = torch.tensor(list(itertools.product(range(3), repeat=4)))  # (81, 4)
    total = torch.exp(-token_nll(model, windows).sum(1)).sum()
    assert total.item() == pytest.approx(1.0, abs=1e-10)


def test_arm_loss_is_the_mean_token_nll():
    model = tiny_transformer(vocab_size=6, length=8, causal=True)
    x = torch.randint(0, 6, (3, 8))
    assert arm_loss(model, x, start_token_id(model)).item() == pytest.approx(token_nll(model, x).mean().item(), rel=1e-6)


@pytest.mark.parametrize("prompt_length", [0, 3])
def test_kv_cache_sampling_equals_uncached_sampling(prompt_length):
    model = tiny_transformer(vocab_size=7, length=8, causal=True)  # max_len 8 < 3 + 20: RoPE must grow
    prompt = torch.randint(0, 7, (4, prompt_length))
    kwargs = dict(num_tokens=20, temperature=1.0, top_k=4, batch_size=4)
    cached = sample_arm(model, prompt, use_cache=True, generator=torch.Generator().manual_seed(3), **kwargs)
    uncached = sample_arm(model, prompt, use_cache=False, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert cached.tokens.shape == (4, prompt_length + 20)
    assert torch.equal(cached.tokens[:, :prompt_length], prompt)
    assert cached.nfe == uncached.nfe == 20
    other_seed = sample_arm(model, prompt, generator=torch.Generator().manual_seed(4), **kwargs)
    assert not torch.equal(cached.tokens, other_seed.tokens)  # the seed, not the model, decides the draw


def test_top_k_one_is_greedy():
    model = tiny_transformer(vocab_size=7, length=8, causal=True)
    greedy = sample_arm(model, num_tokens=10, temperature=0.0, batch_size=2)
    top1 = sample_arm(model, num_tokens=10, temperature=1.0, top_k=1, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy.tokens, top1.tokens)


def test_filter_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    kept = filter_top_k(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True]]
    assert torch.equal(filter_top_k(logits, None), logits)


def test_validation_loss_units_agree_between_kinds():
    """Both kinds report nats per token on the same validation windows."""
    stream = TokenStream(torch.randint(0, 5, (400,)), seq_len=8)
    arm = tiny_transformer(vocab_size=5, length=8, causal=True, dtype=torch.float32)
    mdm = tiny_transformer(vocab_size=5, length=8, causal=False, dtype=torch.float32)
    arm_nll = validation_loss("arm", arm, stream, num_windows=4)
    mdm_nelbo = validation_loss("mdm", mdm, stream, num_windows=4, draws=4)
    windows = stream.windows("val", 4)
    assert arm_nll.mean == pytest.approx(token_nll(arm, windows).mean().item(), rel=1e-6)
    assert arm_nll.num_draws == mdm_nelbo.num_draws == 4
    with torch.no_grad():  # the MDM's exact NELBO of the same windows (all 2^8 masks), per token
        exact = sum(exact_elbo(mdm, window, mdm.mask_id) for window in windows) / windows.numel()
    assert abs(mdm_nelbo.mean - exact) < 4 * mdm_nelbo.stderr


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"kind='gpt'.*allowed values are \('arm', 'mdm'\)"):
        check_kind("gpt")
    bidirectional = tiny_transformer(vocab_size=5, length=8, causal=False)
    with pytest.raises(ValueError, match="causal=True"):
        sample_arm(bidirectional, num_tokens=3)
    causal = tiny_transformer(vocab_size=5, length=8, causal=True)
    with pytest.raises(ValueError, match="top_k=0"):
        sample_arm(causal, num_tokens=3, top_k=0)
    with pytest.raises(ValueError, match="temperature=-1"):
        sample_arm(causal, num_tokens=3, temperature=-1)
    with pytest.raises(ValueError, match="num_tokens=0"):
        sample_arm(causal, num_tokens=0)
