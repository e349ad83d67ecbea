"""The Hugging Face adapter, fully offline: a random tiny config, save_pretrained, from_pretrained."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from transformers import AutoConfig, AutoModel  # noqa: E402

from minimdm.hf import LLADA_8B_TOKEN_IDS, MiniMDMConfig, MiniMDMModel, special_token_ids  # noqa: E402
from minimdm.mdm.likelihood import answer_log_likelihood  # noqa: E402
from minimdm.mdm.sampler import generate  # noqa: E402
from minimdm.nn import Transformer, TransformerConfig  # noqa: E402


@pytest.fixture(scope="module")
def native():
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=24, n_layers=2, d_model=32, n_heads=2, max_len=32)).eval()


def test_round_trip_gives_identical_logits(native, tmp_path):
    hf_model = MiniMDMModel.from_native(native, eos_token_id=3, eot_token_id=4).eval()
    hf_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "minimdm"
    for loaded in (AutoModel.from_pretrained(tmp_path), MiniMDMModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MiniMDMModel)
        x = torch.randint(0, 25, (3, 20))  # includes the mask id 24
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x).logits, native(x))
        assert special_token_ids(loaded) == {"mask_id": 24, "eos_id": 3, "eot_id": 4}


def test_random_config_round_trip(tmp_path):
    torch.manual_seed(1)
    hf_model = MiniMDMModel(MiniMDMConfig(vocab_size=11, n_layers=1, d_model=16, n_heads=2, max_len=8)).eval()
    hf_model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 12, (2, 30))  # longer than max_len: the RoPE tables grow on demand in both
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, hf_model(x).logits)


def test_sampler_and_likelihood_identical_for_native_and_hf(native):
    hf_model = MiniMDMModel.from_native(native).eval()
    prompt = torch.randint(0, 24, (2, 5))
    outputs = []
    for model in (native, hf_model):
        result = generate(model, prompt, gen_length=8, steps=8, block_length=4, mask_id=24, remasking="random",
                          temperature=1.0, cfg_scale=0.5, generator=torch.Generator().manual_seed(0))
        outputs.append(result.tokens)
    assert torch.equal(*outputs)
    scores = [answer_log_likelihood(model, prompt[0], torch.tensor([1, 2, 3]), 24, mc_num=32, batch_size=16,
                                    generator=torch.Generator().manual_seed(0)).mean for model in (native, hf_model)]
    assert scores[0] == scores[1]


def test_padding_attention_mask_is_refused(native):
    hf_model = MiniMDMModel.from_native(native)
    x = torch.randint(0, 24, (1, 6))
    hf_model(x, attention_mask=torch.ones_like(x))  # all ones: fine
    with pytest.raises(ValueError, match="attention_mask"):
        hf_model(x, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1]]))


def test_special_token_ids():
    assert LLADA_8B_TOKEN_IDS["mask_id"] == 126336

    class LLaDAConfigLike:  # what a real LLaDA config exposes
        mask_token_id, eos_token_id = 126336, 126081

    assert special_token_ids(LLaDAConfigLike()) == {"mask_id": 126336, "eos_id": 126081, "eot_id": None}
    with pytest.raises(ValueError, match="mask_id"):
        special_token_ids(object())


def test_import_minimdm_does_not_import_transformers():
    code = ("import sys, minimdm, minimdm.mdm.sampler, minimdm.mdm.likelihood, minimdm.mdm.sft, minimdm.chat, "
            "minimdm.data.tasks; print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
