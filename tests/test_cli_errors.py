"""The command line as a new user meets it: a mistake prints one line naming it and the fix, exits with status 2,
and no training is lost to Ctrl-C, a kill or a wrong --out."""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimdm import recipes
from minimdm.__main__ import main
from minimdm.train import (CHECKPOINT_FILE, CONFIG_FILE, TrainConfig, TrainingInterrupted, load_model,
                           prepare_checkpoint_dir, read_checkpoint, train)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A quick-preset run: (folder, its stdout)."""
    folder = tmp_path_factory.mktemp("quick")
    main(["train", "--preset", "quick", "--out", str(folder), "--samples", "0"])
    return folder


def usage_error(capsys, argv) -> str:
    """Run the CLI in-process; assert exit status 2 and a single stderr line; return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("options,match", [
    (["--temperature", "nan"], "temperature=nan must be a finite number >= 0"),
    (["--cfg-scale", "nan"], "cfg_scale=nan must be a finite number >= 0"),
    (["--cfg-scale", "-1"], "cfg_scale=-1.0 must be a finite number >= 0"),
    (["--steps", "0"], "steps=0 must be a positive multiple"),
    (["--steps", "100", "--gen-length", "16"], "steps=100 exceeds gen_length=16"),
    (["--num", "0"], "--num=0 must be at least 1"),
    (["--num", "-3"], "--num=-3 must be at least 1"),
    (["--device", "tpu"], "device='tpu' is not supported"),
])
def test_cli_sample_rejects_bad_options(checkpoint, capsys, options, match):
    line = usage_error(capsys, ["sample", "--checkpoint", str(checkpoint), "--gen-length", "8", *options])
    assert line.startswith("python -m minimdm sample: error: ") and match in line


def test_cli_samples_and_chats_with_a_shipped_model(capsys, monkeypatch):
    """--pretrained NAME reads a model shipped with the course (notebook 05's chat exercise needs no training)."""
    main(["sample", "--pretrained", "shakespeare-char", "--prompt", "ROMEO:", "--gen-length", "16", "--num", "1"])
    out = capsys.readouterr().out
    assert out.startswith("--- sample 1 ---\nROMEO:") and len(out) - len("--- sample 1 ---\nROMEO:\n") == 16
    questions = iter(["copy: abcd", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(questions))
    main(["sample", "--pretrained", "llada-sft-tasks", "--chat"])
    assert "mdm> abcd" in capsys.readouterr().out  # the shipped model copies a word (greedy, its card's settings)
    assert "'nope' is not a shipped model" in usage_error(capsys, ["sample", "--pretrained", "nope"])
    assert "fine-tune on minimdm.data.tasks first" in usage_error(
        capsys, ["sample", "--pretrained", "shakespeare-char", "--chat"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_on_a_machine_without_it(checkpoint, capsys, monkeypatch):
    assert "no CUDA device" in usage_error(capsys, ["sample", "--checkpoint", str(checkpoint), "--device", "cuda"])
    monkeypatch.setenv("MINIMDM_DEVICE", "cuda")  # read, no longer ignored, by --device auto
    assert "MINIMDM_DEVICE='cuda'" in usage_error(capsys, ["sample", "--checkpoint", str(checkpoint)])


def test_corrupted_tensor_data_is_caught(checkpoint, tmp_path, capsys):
    shutil.copytree(checkpoint, tmp_path / "run")
    path = tmp_path / "run" / CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 100:header + 400] = b"\xff" * 300  # valid format, NaN floats
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="holds non-finite values"):
        load_model(tmp_path / "run")
    assert "non-finite" in usage_error(capsys, ["sample", "--checkpoint", str(tmp_path / "run")])


def test_missing_config_is_named_not_called_corrupt(checkpoint, tmp_path, capsys):
    shutil.copytree(checkpoint, tmp_path / "run")
    (tmp_path / "run" / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_model(tmp_path / "run")
    line = usage_error(capsys, ["sample", "--checkpoint", str(tmp_path / "run")])
    assert "config.json is missing" in line and "corrupt" not in line
    assert "no checkpoint folder" in usage_error(capsys, ["sample", "--checkpoint", str(tmp_path / "nowhere")])


def test_another_presets_checkpoint_names_both_configs(tmp_path, capsys):
    from minimdm.train import TrainResult, make_optimizer, save_checkpoint

    cpu_model = recipes.build_model(recipes.recipe_for("cpu"), vocab_size=90)  # what a cpu-preset run leaves
    save_checkpoint(tmp_path, cpu_model, make_optimizer(cpu_model, TrainConfig()), TrainResult(), TrainConfig())
    line = usage_error(capsys, ["train", "--preset", "quick", "--out", str(tmp_path)])
    assert "holds a checkpoint of another model (saved: d_model=128" in line and "this model: d_model=32" in line
    assert "size mismatch" not in line


def test_out_pointing_at_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    monkeypatch.setattr(recipes, "prepare_data", lambda *a, **k: pytest.fail("read the corpus before checking --out"))
    assert "is an existing file" in usage_error(capsys, ["train", "--preset", "quick", "--out", str(target)])
    assert target.read_text() == "keep me"


def test_temporary_files_of_dead_runs_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".{CHECKPOINT_FILE}.tmp-{dead.pid}"
    live = tmp_path / f".{CHECKPOINT_FILE}.tmp-{os.getpid()}"  # a save in progress in a live process: kept
    other = tmp_path / "notes.tmp-1"
    for path in (stale, live, other):
        path.write_bytes(b"x" * 100)
    prepare_checkpoint_dir(tmp_path)
    assert not stale.exists() and live.exists() and other.exists()


# --- Ctrl-C: the step in progress finishes, is saved, and the run resumes exactly --------------------------------

def tiny_setup():
    from minimdm.nn import Transformer, TransformerConfig

    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=7, n_layers=1, d_model=16, n_heads=2, max_len=8))
    data = torch.randint(0, 7, (64, 8), generator=torch.Generator().manual_seed(1))

    def loss_fn(m, x):
        from minimdm.mdm.loss import mdm_pretrain_loss

        return mdm_pretrain_loss(m, x, m.mask_id)

    return model, loss_fn, lambda step: data[torch.randint(0, 64, (4,))]


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test. A shell starts background jobs with SIGINT ignored, and train
    rightly leaves an ignored SIGINT alone; these tests need the interactive default, wherever pytest was launched."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_saves_and_resuming_matches_an_uninterrupted_run(tmp_path, python_sigint):
    config = dict(steps=8, lr=1e-2, warmup_steps=2, progress=False, log_every=2, device="cpu")
    model, loss_fn, batch_fn = tiny_setup()
    train(model, loss_fn, batch_fn, TrainConfig(**config))

    def interrupted_at_step_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while step 3 is being prepared
        return batch_fn(step)

    first, loss_fn, _ = tiny_setup()
    with pytest.raises(TrainingInterrupted) as stop:
        train(first, loss_fn, interrupted_at_step_3, TrainConfig(checkpoint_dir=str(tmp_path), **config))
    assert stop.value.step == 4 and read_checkpoint(tmp_path)[1]["step"] == 4  # step 3 finished, then saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back
    second, loss_fn, batch_fn = tiny_setup()
    resumed = train(second, loss_fn, batch_fn, TrainConfig(checkpoint_dir=str(tmp_path), **config))
    assert resumed.step == 8
    for name, value in model.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name


def test_cli_ctrl_c_keeps_the_run_and_the_same_command_resumes(tmp_path, capsys, monkeypatch, python_sigint):
    calls = []

    def interrupting_loss(*args):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    original = recipes.mdm_pretrain_loss
    monkeypatch.setattr(recipes, "mdm_pretrain_loss", interrupting_loss)
    argv = ["train", "--preset", "quick", "--out", str(tmp_path), "--samples", "0"]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 130
    assert "interrupted: step 5 saved" in capsys.readouterr().err
    assert read_checkpoint(tmp_path)[1]["step"] == 5 and (tmp_path / "tokenizer.json").exists()
    main(argv)
    out = capsys.readouterr().out
    assert "resuming from the checkpoint" in out and "trained 20 steps" in out


def test_cli_exit_status_without_traceback_in_a_real_process(checkpoint, tmp_path):
    """The in-process checks above, once through `python -m minimdm` itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = ["sample", "--checkpoint", str(checkpoint), "--temperature", "nan"]
    run = subprocess.run([sys.executable, "-m", "minimdm", *argv], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == ["python -m minimdm sample: error: temperature=nan must be a finite "
                                               "number >= 0 (0 is greedy)"] and run.stdout == ""
