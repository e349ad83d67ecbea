"""The backbone: the mask is never predicted, causal means causal, the KV cache changes nothing; evaluation_mode."""
import pytest
import torch
from torch import nn

from minimdm.nn import KVCache, Transformer, TransformerConfig, evaluation_mode
from minimdm.nn.transformer import RotaryEmbedding


def make(causal, **kw):
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=7, n_layers=2, d_model=32, n_heads=4, max_len=16, causal=causal, **kw)).eval()


def test_mask_token_is_an_input_but_never_an_output():
    model = make(causal=False)
    assert model.mask_id == 7
    assert model.embed.num_embeddings == 8 and model.head.out_features == 7
    assert model(torch.tensor([[7, 1, 7, 2]])).shape == (1, 4, 7)


def test_causal_model_ignores_the_future_and_bidirectional_does_not():
    x = torch.randint(0, 7, (2, 10))
    y = x.clone()
    y[:, 6:] = torch.randint(0, 7, (2, 4))
    arm, mdm = make(causal=True), make(causal=False)
    assert torch.allclose(arm(x)[:, :6], arm(y)[:, :6], atol=1e-6)
    assert not torch.allclose(mdm(x)[:, :6], mdm(y)[:, :6], atol=1e-4)


def test_boolean_attention_mask_matches_causal_flag():
    x = torch.randint(0, 7, (2, 10))
    causal_mask = torch.ones(10, 10, dtype=torch.bool).tril().expand(2, -1, -1)
    assert torch.allclose(make(causal=False)(x, attn_mask=causal_mask), make(causal=True)(x), atol=1e-5)


def test_kv_cache_decoding_equals_full_forward():
    arm = make(causal=True)
    x = torch.randint(0, 7, (3, 12))
    full = arm(x)
    cache = KVCache()
    chunks = [arm(x[:, :5], kv_cache=cache)] + [arm(x[:, i:i + 1], kv_cache=cache) for i in range(5, 9)]
    chunks.append(arm(x[:, 9:], kv_cache=cache))  # a multi-token chunk after cached positions
    assert torch.allclose(torch.cat(chunks, 1), full, atol=1e-5)


def test_time_conditioning_requires_time():
    model = make(causal=False, time_cond=True)
    with pytest.raises(ValueError, match="time"):
        model(torch.zeros(1, 4, dtype=torch.long))
    assert model(torch.zeros(1, 4, dtype=torch.long), time=torch.tensor([0.3])).shape == (1, 4, 7)


def test_autocast_residual_carries_the_stream_in_bf16_only_under_autocast():
    x = torch.randint(0, 8, (3, 12))
    plain, low = make(causal=False), make(causal=False, autocast_residual=True)  # the same weights (same seed)
    assert torch.equal(plain(x), low(x))  # without autocast the option changes nothing
    streams = {}
    for name, model in (("float32", plain), ("bf16", low)):
        states = []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x, hidden_states=states)
        streams[name] = (states, logits.float())
    assert {s.dtype for s in streams["float32"][0]} == {torch.float32}
    assert {s.dtype for s in streams["bf16"][0]} == {torch.bfloat16}
    # the bf16 stream only rounds: its logits stay within bf16's precision of the float32 stream's
    reference = streams["float32"][1]
    assert (streams["bf16"][1] - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluation_mode_restores_the_callers_mode_even_after_an_error(was_training):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(was_training)
    with evaluation_mode(model):
        assert not model.training and not model[1].training
    assert model.training == model[1].training == was_training
    with pytest.raises(RuntimeError), evaluation_mode(model):
        raise RuntimeError("inside")
    assert model.training == was_training
    plain = lambda x: x  # noqa: E731  (a denoiser that is a function has no mode)
    with evaluation_mode(plain) as inside:
        assert inside is plain


def _rotary_angles(length, head_dim, base, scale):
    """(m / scale) base^(-2i/d) for m < length, i < d/2, in float64 from Python floats."""
    rows = [[m / scale * base ** (-2 * i / head_dim) for i in range(head_dim // 2)] for m in range(length)]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("base, scale", [(10000.0, 1.0), (500.0, 4.0)])
def test_rotary_tables_are_cos_and_sin_of_position_over_scale_times_base_to_the_minus_2i_over_d(base, scale):
    """cos/sin[m, i] = cos/sin((m / scale) base^(-2i/d)); applied, channel pair (2i, 2i+1) read as the complex number
    x_2i + i x_2i+1 is multiplied by e^(i angle), also past max_len, where the tables are rebuilt."""
    head_dim, max_len = 8, 16
    rope = RotaryEmbedding(head_dim, max_len, base, scale)
    angle = _rotary_angles(max_len, head_dim, base, scale)
    assert torch.allclose(rope.cos.double(), angle.cos(), atol=1e-5)
    assert torch.allclose(rope.sin.double(), angle.sin(), atol=1e-5)
    x = torch.randn(1, 1, 40, head_dim, generator=torch.Generator().manual_seed(0))
    angle = _rotary_angles(40, head_dim, base, scale)
    as_complex = torch.view_as_complex(x.double().reshape(1, 1, 40, head_dim // 2, 2))
    expected = torch.view_as_real(as_complex * torch.polar(torch.ones_like(angle), angle)).flatten(-2)
    assert torch.allclose(rope(x).double(), expected, atol=1e-5)


def test_rotary_scores_depend_only_on_the_distance_and_scale_stretches_positions():
    """<R_m q, R_n k> = <q, R_(n-m) k> (rotations compose), and with scale s position s m is position m unscaled."""
    q, k = torch.randn(2, 1, 1, 1, 16, generator=torch.Generator().manual_seed(1))
    plain, stretched = RotaryEmbedding(16, 64, 10000.0, 1.0), RotaryEmbedding(16, 64, 10000.0, 4.0)
    rq, rk = plain(q.expand(1, 1, 32, 16)), plain(k.expand(1, 1, 32, 16))
    scores = rq[0, 0] @ rk[0, 0].T  # (32, 32), entry (m, n)
    assert torch.allclose(scores[:-5, :-5], scores[5:, 5:], atol=1e-4)  # shifting both positions changes nothing
    assert not torch.allclose(scores[0, :-5], scores[0, 5:], atol=1e-2)  # but the distance does
    everywhere = q.expand(1, 1, 64, 16)
    assert torch.allclose(stretched(everywhere)[..., ::4, :], plain(everywhere)[..., :16, :], atol=1e-5)
