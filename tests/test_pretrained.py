"""Shipped models: exported from a trainer checkpoint, loaded with one call, refused when a file is missing or altered."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from minimdm import pretrained
from minimdm.data.tokenizers import CharTokenizer
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.mdm.sampler import generate
from minimdm.nn import Transformer, TransformerConfig
from minimdm.pretrained import PretrainedError, load_pretrained
from minimdm.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_pretrained", REPO / "tools" / "export_pretrained.py")
export_pretrained = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_pretrained)

SHIPPED = ("llada-sft-tasks", "shakespeare-char")


@pytest.fixture
def exported(tmp_path, monkeypatch):
    """A two-step character MDM, exported to tmp_path/models/tiny and registered there."""
    tokenizer = CharTokenizer.from_text("to be or not ")
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=tokenizer.vocab_size, n_layers=1, d_model=16, n_heads=2, max_len=16))
    data = torch.randint(0, tokenizer.vocab_size, (4, 16))
    train(model, lambda m, x: mdm_pretrain_loss(m, x, m.mask_id), lambda step: data,
          TrainConfig(steps=2, lr=1e-3, warmup_steps=1, checkpoint_dir=str(run), progress=False, log_every=1))
    tokenizer.save(run / "tokenizer.json")
    (run / "metrics.json").write_text(json.dumps({"val_nelbo": 2.5, "val_nelbo_se": 0.01, "recipe": {"steps": 2}}))
    hashes = export_pretrained.export(run, "tiny", "a made-up line", out_root=tmp_path / "models", update_registry=False)
    monkeypatch.setitem(pretrained.REGISTRY, "tiny", hashes)
    return model.eval(), tmp_path / "models"


def test_export_round_trip_gives_the_float16_model(exported):
    model, root = exported
    loaded = load_pretrained("tiny", root=root)
    rounded = Transformer(model.config)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    x = torch.tensor([[0, 1, model.mask_id, 3, model.mask_id]])
    assert torch.equal(loaded.model(x), rounded.eval()(x))
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("not to be")) == "not to be"
    assert loaded.card["validation"]["nelbo"] == 2.5 and loaded.metrics["trainer"]["step"] == 2
    card = (root / "tiny" / "README.md").read_text()
    assert "2.5000 ± 0.0100" in card and pretrained.REGISTRY["tiny"]["model.safetensors"] in card


def test_a_missing_file_is_named(exported):
    _, root = exported
    (root / "tiny" / "tokenizer.json").unlink()
    with pytest.raises(PretrainedError, match=r"tokenizer\.json is missing") as error:
        load_pretrained("tiny", root=root)
    assert "\n" not in str(error.value)


def test_an_altered_file_is_refused(exported):
    _, root = exported
    path = root / "tiny" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=r"model\.safetensors was altered") as error:
        load_pretrained("tiny", root=root)
    assert "\n" not in str(error.value)


def test_an_unknown_name_lists_the_shipped_models():
    with pytest.raises(PretrainedError, match="allowed names"):
        load_pretrained("no-such-model")


def test_the_shipped_models_load_verified_and_fit_the_size_budget():
    assert set(SHIPPED) <= set(pretrained.available())
    total = sum((pretrained.MODELS_DIR / name / file).stat().st_size
                for name in pretrained.REGISTRY for file in pretrained.REGISTRY[name])
    assert total <= 25 * 2**20
    for name in SHIPPED:
        loaded = load_pretrained(name)
        prompt = torch.tensor([loaded.tokenizer.encode("copy: ab" if name == "llada-sft-tasks" else "ROMEO:")])
        result = generate(loaded.model, prompt, gen_length=8, steps=4, mask_id=loaded.mask_id, record_history=False)
        assert not bool((result.tokens == loaded.mask_id).any())
