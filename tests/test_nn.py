"""The backbone: the mask is never predicted, causal means causal, the KV cache changes nothing; evaluation_mode."""
import pytest
import torch
from torch import nn

from minimdm.nn import KVCache, Transformer, TransformerConfig, evaluation_mode


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
