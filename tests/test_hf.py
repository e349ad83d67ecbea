"""The Hugging Face adapter, fully offline: a random tiny config, save_pretrained, from_pretrained."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer  # noqa: E402

from minimdm.course import COURSE_REPOSITORY  # noqa: E402
from minimdm.data.tasks import TaskTokenizer  # noqa: E402
from minimdm.data.tokenizers import BPETokenizer, CharTokenizer, hf_tokenizer  # noqa: E402
from minimdm.hf import (LLADA_8B_TOKEN_IDS, REMOTE_CODE_FILE, MiniMDMConfig, MiniMDMModel, special_token_ids,  # noqa: E402
                        to_hugging_face)
from minimdm.mdm.sft import ChatTemplate  # noqa: E402
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


TEXT = "the quick brown fox jumps over the lazy dog\n<a|b> é\n" * 8


def fresh_env(tmp_path) -> dict:
    """A child process that works offline and keeps transformers' copy of the remote code inside tmp_path."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}


FRESH_PROCESS = """
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
assert "minimdm" not in sys.modules
folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
ids = tokenizer("the lazy fox", return_tensors="pt").input_ids
x = torch.cat([ids, torch.full((1, 4), tokenizer.mask_token_id)], dim=1)
with torch.no_grad():
    logits = model(x).logits
tokens = model.generate(ids, steps=4, gen_length=8, block_length=4, temperature=1.0, remasking="random",
                        generator=torch.Generator().manual_seed(0))
torch.save({"ids": ids, "logits": logits, "tokens": tokens, "mask": tokenizer.mask_token_id,
            "text": tokenizer.decode(ids[0]), "class": type(model).__name__}, out)
"""


def test_folder_loads_in_a_fresh_process_with_the_usual_calls(tmp_path):
    """No ``import minimdm`` by hand: auto_map + the remote code file + a standard fast tokenizer."""
    tokenizer = CharTokenizer.from_text(TEXT)
    torch.manual_seed(2)
    native = Transformer(TransformerConfig(vocab_size=tokenizer.vocab_size, n_layers=2, d_model=16, n_heads=2,
                                           max_len=32)).eval()
    assert sum(p.numel() for p in native.parameters()) < 10_000
    MiniMDMModel.from_native(native, eos_token_id=0).save_pretrained(tmp_path / "model", tokenizer=tokenizer)
    assert (tmp_path / "model" / REMOTE_CODE_FILE).exists()
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "model"), str(tmp_path / "out.pt")],
                   check=True, env=fresh_env(tmp_path), cwd=tmp_path, capture_output=True)
    out = torch.load(tmp_path / "out.pt")
    assert out["class"] == "MiniMDMModel" and out["mask"] == native.mask_id == tokenizer.vocab_size
    assert out["ids"][0].tolist() == tokenizer.encode("the lazy fox") and out["text"] == "the lazy fox"
    x = torch.cat([out["ids"], torch.full((1, 4), native.mask_id)], dim=1)
    with torch.no_grad():
        assert torch.equal(out["logits"], native(x))
    expected = generate(native, out["ids"], steps=4, gen_length=8, block_length=4, temperature=1.0, remasking="random",
                        mask_id=native.mask_id, generator=torch.Generator().manual_seed(0)).tokens
    assert torch.equal(out["tokens"], expected)


def test_remote_code_without_minimdm_says_how_to_install(tmp_path, native):
    MiniMDMModel.from_native(native).save_pretrained(tmp_path)
    code = f"import runpy, sys; sys.modules['minimdm'] = None; runpy.run_path({str(tmp_path / REMOTE_CODE_FILE)!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("ImportError: this model's code is the minimdm package, which is not installed: "
                    f"pip install git+https://github.com/{COURSE_REPOSITORY}")
    assert "During handling" not in result.stderr  # one error, not a chain


def test_auto_model_for_masked_lm_is_registered(native, tmp_path):
    MiniMDMModel.from_native(native).save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MiniMDMModel)
    x = torch.randint(0, 25, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, native(x))


@pytest.mark.parametrize("kind", ["char", "bpe", "task"])
def test_hf_tokenizers_give_the_same_ids_and_the_mask_token(kind, tmp_path):
    tokenizer = {"char": lambda: CharTokenizer.from_text(TEXT), "bpe": lambda: BPETokenizer.train(TEXT, 300),
                 "task": TaskTokenizer}[kind]()
    text = "copy: abc\n" if kind == "task" else "the lazy <a|b> é\nfox"
    hf_tokenizer(tokenizer).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.mask_token_id == tokenizer.vocab_size and len(loaded) == tokenizer.vocab_size + 1
    ids = loaded(text).input_ids
    assert ids == tokenizer.encode(text) and loaded.decode(ids) == text
    assert loaded.decode(ids + [loaded.mask_token_id], skip_special_tokens=True) == text
    if kind == "task":  # special tokens keep their ids; the chat template writes the course's prompts
        assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_id, tokenizer.pad_id)
        messages = [{"role": "user", "content": "sort: hbdca"}]
        chat = loaded.apply_chat_template(messages, add_generation_prompt=True)
        chat = chat["input_ids"] if hasattr(chat, "keys") else chat
        assert chat == ChatTemplate.from_tokenizer(tokenizer).prompt(messages)


def test_model_card_names_the_numbers_given_and_the_sampling_route(native, tmp_path):
    card = dict(name="tiny", corpus="random letters", recipe={"steps": 3}, nelbo=1.23456, nelbo_se=0.0123,
                unit="nats per character")
    MiniMDMModel.from_native(native).save_pretrained(tmp_path / "a", card=card)
    text = (tmp_path / "a" / "README.md").read_text()
    for needed in ("# tiny", "random letters", '{"steps": 3}', "1.2346 ± 0.0123 nats per character",
                   "AutoModelForMaskedLM.from_pretrained", "trust_remote_code=True", "model.generate(",
                   "minimdm.mdm.sampler.generate", f"pip install git+https://github.com/{COURSE_REPOSITORY}"):
        assert needed in text, needed
    MiniMDMModel.from_native(native).save_pretrained(tmp_path / "b")  # nothing measured: nothing invented
    assert "| validation NELBO ± SE | not recorded |" in (tmp_path / "b" / "README.md").read_text()
    with pytest.raises(ValueError, match="nelbo_stderr"):
        MiniMDMModel.from_native(native).save_pretrained(tmp_path / "c", card={"nelbo_stderr": 0.1})


def test_shipped_model_exports_with_its_card_and_tokenizer(tmp_path):
    from minimdm.pretrained import available, load_pretrained

    if "llada-sft-tasks" not in available():
        pytest.skip("the shipped model is not present")
    shipped = load_pretrained("llada-sft-tasks")
    to_hugging_face(shipped, tmp_path)
    validation = shipped.card["validation"]
    nelbo = validation.get("nelbo_float16", validation["nelbo"])
    assert f"{nelbo:.4f}" in (tmp_path / "README.md").read_text()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.mask_token_id == shipped.mask_id and tokenizer.eos_token_id == shipped.tokenizer.eos_id


def test_generate_is_the_course_sampler_with_llada_arguments(native):
    hf_model = MiniMDMModel.from_native(native, eos_token_id=3).eval()
    prompt = torch.randint(0, 24, (2, 5))
    options = dict(steps=8, gen_length=8, block_length=4, temperature=1.0, cfg_scale=0.5, remasking="low_confidence")
    tokens = hf_model.generate(prompt, generator=torch.Generator().manual_seed(0), **options)
    direct = generate(native, prompt, mask_id=24, generator=torch.Generator().manual_seed(0), **options)
    assert torch.equal(tokens, direct.tokens) and tokens.shape == (2, 13)
    with pytest.raises(ValueError, match="max_new_tokens.*minimdm.mdm.sampler.generate"):
        hf_model.generate(prompt, max_new_tokens=8)


def test_forward_errors_tuples_and_hidden_states(native):
    hf_model = MiniMDMModel.from_native(native).eval()
    for bad in (LLADA_8B_TOKEN_IDS["mask_id"], 25, -1):
        with pytest.raises(ValueError, match=rf"input_ids contain {bad}, outside this model's ids 0..24 \(tokens 0..23, "
                                             r"mask 24 = config.mask_id\)") as error:
            hf_model(torch.tensor([[1, bad, 2]]))
        assert ("LLaDA-8B's mask_id" in str(error.value)) == (bad == 126336)
    x = torch.randint(0, 25, (2, 7))
    with torch.no_grad():
        plain = hf_model(x, return_dict=False)
        assert isinstance(plain, tuple) and len(plain) == 1 and torch.equal(plain[0], native(x))
        out = hf_model(x, output_hidden_states=True)
        assert len(out.hidden_states) == native.config.n_layers + 1
        assert torch.equal(out.hidden_states[0], native.embed(x))
        assert torch.equal(native.head(out.hidden_states[-1]), out.logits)
        logits, hidden = hf_model(x, output_hidden_states=True, return_dict=False)
        assert torch.equal(logits, out.logits) and len(hidden) == native.config.n_layers + 1
    with pytest.raises(ValueError, match="output_attentions"):
        hf_model(x, output_attentions=True)
