"""Bad input gets a clear error naming the argument and what is allowed."""
import pytest
import torch

from conftest import tiny_transformer
from minimdm.data import TokenStream, load_corpus
from minimdm.data.corpora import data_dir
from minimdm.mdm.denoiser import check_mask_id
from minimdm.mdm.elbo import elbo_draws
from minimdm.mdm.sampler import generate
from minimdm.mdm.schedules import check_time, get_schedule
from minimdm.nn import TransformerConfig


@pytest.fixture(scope="module")
def model():
    return tiny_transformer(vocab_size=5, length=16)


def test_mask_id_inside_the_vocabulary(model):
    with pytest.raises(ValueError, match="mask_id=3 lies inside the vocabulary"):
        check_mask_id(3, 5)
    with pytest.raises(ValueError, match="mask_id=3"):
        generate(model, None, gen_length=8, steps=8, mask_id=3, vocab_size=5)


def test_gen_length_not_divisible_by_block_length(model):
    with pytest.raises(ValueError, match="gen_length=10 must be divisible by block_length=4"):
        generate(model, None, gen_length=10, steps=10, block_length=4, mask_id=5)


def test_steps_not_divisible_by_blocks(model):
    with pytest.raises(ValueError, match=r"steps=6 must be a positive multiple of the number of blocks \(4"):
        generate(model, None, gen_length=8, steps=6, block_length=2, mask_id=5)


@pytest.mark.parametrize("kwargs,match", [
    ({"remasking": "entropy"}, "remasking='entropy'"),
    ({"temperature": -1.0}, "temperature=-1.0"),
    ({"steps": 0}, "steps=0"),
])
def test_other_sampler_arguments(model, kwargs, match):
    args = dict(gen_length=8, steps=8, mask_id=5) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(model, None, **args)


def test_prompt_with_mask_token(model):
    with pytest.raises(ValueError, match="prompt contains mask_id"):
        generate(model, torch.tensor([[1, 5]]), gen_length=4, steps=4, mask_id=5)


@pytest.mark.parametrize("t", [0.0, -0.5, 1.5])
def test_time_outside_unit_interval(t):
    with pytest.raises(ValueError, match=r"t must lie in \(0, 1\]"):
        check_time(torch.tensor([0.5, t]))


def test_unknown_schedule_and_estimator(model):
    with pytest.raises(ValueError, match="schedule='cubic'"):
        get_schedule("cubic")
    with pytest.raises(ValueError, match="estimator='k'"):
        elbo_draws(model, torch.zeros(1, 4, dtype=torch.long), 5, estimator="k")


def test_empty_or_too_short_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(ValueError, match="is empty"):
        load_corpus(str(empty))
    with pytest.raises(ValueError, match="corpus is too short"):
        TokenStream(list(range(50)), seq_len=32)


def test_unknown_corpus_offline(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="corpus='no_such_corpus'"):
        load_corpus("no_such_corpus")
    monkeypatch.setenv("MINIMDM_DATA", str(tmp_path))  # an empty cache: tinyshakespeare is not there
    assert data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_corpus("tinyshakespeare")


def test_corrupt_tinyshakespeare_is_caught(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIMDM_DATA", str(tmp_path))
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen: not the real file")
    with pytest.raises(ValueError, match="sha256"):
        load_corpus("tinyshakespeare")


def test_bad_model_config():
    with pytest.raises(ValueError, match="d_model=30 must split into n_heads=4"):
        TransformerConfig(vocab_size=5, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size=0"):
        TransformerConfig(vocab_size=0)


def test_preset_and_device_switches(monkeypatch):
    from minimdm.presets import default_device, preset_name

    monkeypatch.setenv("MINIMDM_PRESET", "laptop")
    with pytest.raises(ValueError, match="MINIMDM_PRESET='laptop'.*allowed"):
        preset_name()
    monkeypatch.setenv("MINIMDM_PRESET", "quick")
    monkeypatch.setenv("MINIMDM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MINIMDM_DEVICE='tpu'.*'cpu' and 'cuda'"):
        default_device()
    monkeypatch.setenv("MINIMDM_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("MINIMDM_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            default_device()
