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


# --- the public entry points of every subpackage: mistakes that used to pass silently or fail deep inside torch --

@pytest.mark.parametrize("kwargs,match", [
    ({"steps": 8.0}, "steps=8.0 must be a positive multiple"),
    ({"gen_length": 8.0}, "gen_length=8.0 must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size=2.5: the batch is empty"),
    ({"eos_id": -1, "logits_eos_inf": True}, r"eos_id=-1: allowed is an id in 0\.\.4"),  # used to mask token 4
    ({"eos_id": 9, "logits_eos_inf": True}, r"eos_id=9: allowed is an id in 0\.\.4"),
    ({"eot_id": 5}, "eot_id=5: allowed is"),  # the mask id
])
def test_generate_rejects_non_integer_counts_and_end_ids_outside_the_vocabulary(model, kwargs, match):
    args = dict(gen_length=8, steps=8, mask_id=5) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(model, None, **args)


@pytest.mark.parametrize("x0,kwargs,match", [
    (torch.zeros(2, 4), {}, "x0 must hold integer token ids, got dtype torch.float32"),
    (torch.zeros(4, dtype=torch.long), {}, r"x0 must be a tensor of token ids of shape \(batch, length\)"),
    (torch.full((2, 4), 5), {}, "x0 contains mask_id=5"),
    (torch.full((2, 4), 7), {}, r"x0 holds token id 7; allowed are ids 0\.\.4"),
    (torch.zeros(2, 4, dtype=torch.long), {"maskable": torch.ones(3, 4, dtype=torch.bool)},
     r"maskable must be a bool tensor broadcastable to x0's shape \(2, 4\)"),
])
def test_elbo_draws_checks_its_tokens_and_maskable(model, x0, kwargs, match):
    with pytest.raises(ValueError, match=match):
        elbo_draws(model, x0, 5, **kwargs)
    if not kwargs and x0.dim() == 2:  # corpus_nelbo reaches the same check
        from minimdm.mdm.likelihood import corpus_nelbo

        with pytest.raises(ValueError, match=match):
            corpus_nelbo(model, x0, 5)


@pytest.mark.parametrize("answer,kwargs,match", [
    ([3, 4], {"cfg_scale": float("nan")}, "cfg_scale=nan must be a finite number >= 0"),  # used to return nan
    ([3.7, 1.2], {}, "answer must hold integer token ids, got dtype torch.float32"),  # used to read 3 and 1
    ([3, 7], {}, r"answer holds token id 7; allowed are ids 0\.\.4"),
    ([3, -1], {}, "answer holds token id -1"),
])
def test_answer_log_likelihood_rejects_nan_guidance_and_bad_ids(model, answer, kwargs, match):
    from minimdm.mdm.likelihood import answer_log_likelihood

    with pytest.raises(ValueError, match=match):
        answer_log_likelihood(model, [1, 2], answer, 5, mc_num=4, batch_size=2, **kwargs)


@pytest.mark.parametrize("sampler", ["tau_leaping", "ordered"])
@pytest.mark.parametrize("kwargs,match", [
    ({"mask_id": 2}, "mask_id=2 lies inside the vocabulary"),  # used to sample garbage
    ({"mask_id": 9}, "mask_id=9 lies outside the model's embedding"),
    ({"batch_size": 0}, "batch_size=0 must be a positive integer"),  # used to return an empty batch
    ({"canvas": torch.full((1, 4), 5.0), "length": None}, "canvas must hold integer token ids"),
    ({"canvas": torch.tensor([[7, 5, 5, 5]]), "length": None}, r"canvas holds token id 7; allowed are ids 0\.\.4"),
])
def test_radd_samplers_check_mask_id_batch_and_canvas(model, sampler, kwargs, match):
    from minimdm.radd import ordered_sample, tau_leaping_sample

    args = dict(mask_id=5, length=4) | kwargs
    with pytest.raises(ValueError, match=match):
        if sampler == "tau_leaping":
            tau_leaping_sample(model, steps=4, **args)
        else:
            ordered_sample(model, **args)


@pytest.mark.parametrize("name", ["t_dse", "t_dce", "lambda_dce", "k_dce"])
def test_radd_losses_check_the_mask_id_and_the_tokens(model, name):
    from minimdm.radd import get_loss

    x0 = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="mask_id=2 lies inside the vocabulary"):  # used to return a plausible loss
        get_loss(name, 2)(model, x0)
    with pytest.raises(ValueError, match=r"x0 must be integer token ids of shape \(batch, length\)"):
        get_loss(name, 5)(model, x0.float())


@pytest.mark.parametrize("steps,final_time,match", [
    (0, 1e-5, "steps=0 must be a positive integer"),
    (-3, 1e-5, "steps=-3 must be a positive integer"),
    (4, 2.0, r"final_time=2.0 must lie in \(0, 1\)"),  # used to return probabilities on a grid running backwards
])
def test_reveal_probabilities_checks_steps_and_final_time(steps, final_time, match):
    from minimdm.mdm.schedules import LinearSchedule
    from minimdm.radd import reveal_probabilities

    with pytest.raises(ValueError, match=match):
        reveal_probabilities(steps, LinearSchedule(), final_time=final_time)


@pytest.mark.parametrize("t", [0.0, -0.5, 1.5])  # t = 0 used to give an infinite score, the others garbage
def test_concrete_score_time_outside_unit_interval(model, t):
    from minimdm.radd import concrete_score

    with pytest.raises(ValueError, match=r"t must lie in \(0, 1\]"):
        concrete_score(model, torch.full((1, 4), 5), t)


@pytest.mark.parametrize("kwargs,match", [
    ({"mask_id": 2}, "mask_id=2 lies inside the vocabulary"),  # used to return a plausible loss
    ({"beta": float("nan")}, "beta=nan must be a finite number > 0"),  # used to return nan
    ({"beta": -1.0}, "beta=-1.0 must be a finite number > 0"),  # used to learn the opposite preference
    ({"answer_mask": torch.ones(3, dtype=torch.bool)}, r"answer_mask must have shape \(2, 4\) or \(4,\)"),
    ({"sampling": "vrpo"}, "sampling='vrpo' must be an ELBOSampling"),
])
def test_dpo_e_checks_beta_mask_id_and_shapes(model, kwargs, match):
    from minimdm.vrpo import ELBOSampling, dpo_e_loss, exact_dpo_e

    chosen, rejected = torch.tensor([[1, 2, 3, 4], [0, 1, 2, 3]]), torch.tensor([[1, 2, 4, 4], [0, 1, 0, 0]])
    args = dict(answer_mask=torch.tensor([False, False, True, True]), mask_id=5, sampling=ELBOSampling(2)) | kwargs
    with pytest.raises(ValueError, match=match):
        dpo_e_loss(model, model, chosen, rejected, **args)
    if "sampling" not in kwargs:
        args.pop("sampling")
        with pytest.raises(ValueError, match=match):
            exact_dpo_e(model, model, chosen, rejected, **args)


@pytest.mark.parametrize("prompt,kwargs,match", [
    (None, {"mask_id": 2}, "mask_id=2 lies inside the vocabulary"),  # used to sample garbage
    (None, {"temperature": float("nan")}, "temperature=nan must be a finite number >= 0"),  # used to write token 0
    (None, {"batch_size": 0}, "batch_size=0 must be a positive integer"),
    (None, {"schedule": "linear"}, "schedule='linear' must be a Schedule"),
    (torch.tensor([[1.5, 2.0]]), {}, "prompt must hold integer token ids"),  # used to read 1.5 as token 1
    (torch.tensor([[1, 5]]), {}, "prompt contains mask_id=5"),  # used to fill the prompt's mask in
])
def test_bernoulli_generate_checks_its_arguments_like_generate(model, prompt, kwargs, match):
    from minimdm.energy import bernoulli_generate
    from minimdm.mdm.schedules import LinearSchedule

    args = dict(gen_length=4, steps=4, mask_id=5, schedule=LinearSchedule()) | kwargs
    with pytest.raises(ValueError, match=match):
        bernoulli_generate(model, prompt, **args)


@pytest.mark.parametrize("canvas,kwargs,match", [
    (torch.tensor([[1, 2, 2, 3]]), {"mask_id": 2}, "mask_id=2 lies inside the vocabulary"),  # used to "fill" token 2
    (torch.tensor([[1, 5, 5, 3]]), {"cfg_scale": float("nan")}, "cfg_scale=nan must be a finite number >= 0"),
    (torch.tensor([[1, 5, 5, 3]]), {"cfg_scale": -1.0}, "cfg_scale=-1.0 must be a finite number >= 0"),
    (torch.tensor([[1.0, 5, 5, 3]]), {}, "canvas must hold integer token ids"),
    (torch.tensor([1, 5, 5, 3]), {}, r"canvas must be a tensor of token ids of shape \(batch, length\)"),
])
def test_greedy_infill_checks_mask_id_guidance_and_canvas(model, canvas, kwargs, match):
    from minimdm.smdm import greedy_infill

    with pytest.raises(ValueError, match=match):
        greedy_infill(model, canvas, **({"mask_id": 5} | kwargs))


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": float("nan")}, "lr=nan must be a finite number"),  # used to train to nan weights
    ({"grad_clip": float("nan")}, "grad_clip=nan must be a finite number"),
    ({"steps": 2.5}, "steps=2.5 must be an integer"),
    ({"log_every": 0}, "log_every=0 must be >= 1"),  # used to fail with ZeroDivisionError after the first step
    ({"eval_every": -1}, "eval_every=-1 must be >= 0"),  # used to evaluate at every step
    ({"checkpoint_every": -1}, "checkpoint_every=-1 must be >= 0"),  # used to checkpoint at every step
    ({"max_seconds": -1}, "max_seconds=-1 must be >= 0"),
    ({"betas": (1.5, 0.9)}, r"betas=\(1\.5, 0\.9\) must be two numbers in \[0, 1\)"),
])
def test_train_config_rejects_nan_and_non_integer_settings(kwargs, match):
    from minimdm.train import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"head_dim": 8.0}, "head_dim=8.0 must be an even integer"),
    ({"train_length": float("nan")}, "train_length=nan must be a positive integer"),  # used to give base=nan
    ({"target_length": float("nan")}, "target_length=nan must be >= train_length"),
    ({"target_length": None, "factor": float("inf")}, "factor=inf must be a finite number > 0"),  # used: base=inf
])
def test_rope_scaling_rejects_nan_and_non_integer_sizes(kwargs, match):
    from minimdm.longctx import rope_scaling

    args = dict(head_dim=8, base=10000.0, train_length=16, target_length=64) | kwargs
    with pytest.raises(ValueError, match=match):
        rope_scaling("ntk", **args)
