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
    # values that used to pass silently or fail deep inside torch
    ({"temperature": float("nan")}, "temperature=nan must be a finite number >= 0"),
    ({"temperature": float("inf")}, "temperature=inf must be a finite number >= 0"),
    ({"cfg_scale": float("nan")}, "cfg_scale=nan must be a finite number >= 0"),
    ({"cfg_scale": -1.0}, "cfg_scale=-1.0 must be a finite number >= 0"),
    ({"steps": 9}, "steps=9 exceeds gen_length=8"),
    ({"batch_size": 0}, "batch_size=0: the batch is empty"),
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


# --- values that used to pass silently or fail deep inside torch ----------------------------------------------

def test_generate_checks_ids_against_a_transformers_vocabulary_and_embedding(model):
    """A minimdm Transformer knows its vocabulary (5) and embedding (6 rows, the mask last): no vocab_size needed."""
    with pytest.raises(ValueError, match="mask_id=3 lies inside the vocabulary"):
        generate(model, None, gen_length=4, steps=4, mask_id=3)
    with pytest.raises(ValueError, match="mask_id=9 lies outside the model's embedding"):
        generate(model, None, gen_length=4, steps=4, mask_id=9)
    with pytest.raises(ValueError, match=r"prompt holds token id 7; allowed are ids 0\.\.4"):
        generate(model, torch.tensor([[1, 7]]), gen_length=4, steps=4, mask_id=5)
    with pytest.raises(ValueError, match="prompt holds token id -1"):
        generate(model, torch.tensor([[1, -1]]), gen_length=4, steps=4, mask_id=5)
    with pytest.raises(ValueError, match="the batch is empty"):
        generate(model, torch.zeros(0, 3, dtype=torch.long), gen_length=4, steps=4, mask_id=5)


def test_masking_rejects_probabilities_outside_the_unit_interval_and_negative_counts():
    from minimdm.mdm.forward import mask_tokens_l, mask_tokens_t

    x0 = torch.zeros(2, 4, dtype=torch.long)
    for p in (1.5, -0.5, float("nan"), torch.tensor([0.5, 2.0])):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            mask_tokens_t(x0, p, 9)
    assert mask_tokens_t(x0, torch.tensor([0.0, 1.0]), 9)[1].tolist() == [[False] * 4, [True] * 4]
    with pytest.raises(ValueError, match="num_masked=-1 is negative"):
        mask_tokens_l(x0, torch.tensor([-1, 2]), 9)


def test_decode_of_unknown_ids_is_an_error_not_an_empty_string():
    from minimdm.data import BPETokenizer, CharTokenizer

    char = CharTokenizer(list("ab"))
    assert char.decode([0, 1]) == "ab"
    with pytest.raises(ValueError, match=r"ids \[2\] are not in this tokenizer's vocabulary \(0\.\.1\)"):
        char.decode([0, 2])
    bpe = BPETokenizer.train("abc abd " * 20, vocab_size=260)
    with pytest.raises(ValueError, match=r"ids \[-1, 260\]"):
        bpe.decode([-1, 260])


def test_non_utf8_corpus_is_named_with_its_first_bad_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait\n".encode("latin-1") * 50)
    with pytest.raises(ValueError, match=r"is not UTF-8 text \(byte 0xe9 at offset 3\).*iconv"):
        load_corpus(str(path))


def test_hf_corpus_offline_fails_at_once(monkeypatch):
    import time

    from minimdm.data import corpora

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="offline"):
        load_corpus("hf:nobody-here/no-such-dataset")
    assert time.perf_counter() - start < 3
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(corpora, "hub_reachable", lambda timeout=3.0: False)  # as when no route opens in 3 s
    with pytest.raises(ValueError, match="needs the Hugging Face Hub, but this machine is offline"):
        load_corpus("hf:nobody-here/no-such-dataset")


@pytest.mark.parametrize("device,match", [
    ("tpu", "device='tpu' is not supported"),
    ("meta", "device='meta' is not supported"),
    ("cuda", "no CUDA device"),
    ("cuda:0", "no CUDA device"),
])
def test_devices_this_machine_lacks(device, match):
    from minimdm.train import resolve_device

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


def test_auto_device_honours_minimdm_device(monkeypatch):
    from minimdm.train import resolve_device

    monkeypatch.setenv("MINIMDM_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("MINIMDM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MINIMDM_DEVICE='tpu'"):
        resolve_device("auto")
    if not torch.cuda.is_available():
        monkeypatch.setenv("MINIMDM_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("auto")
