"""The anchor benchmark's resumable runs: the kept best looks survive a resume (a CPU smoke run, seconds)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script, *args, succeed=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert (done.returncode == 0) is succeed, done.stderr[-2000:]
    return done


def run_anchor(*args, succeed=True):
    return run_bench("nanogpt_anchor.py", *args, succeed=succeed)


def test_kept_best_looks_are_saved_with_the_checkpoint_and_reported_after_a_resume(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from nanogpt_anchor import read_val
    from minimdm.train import read_checkpoint

    common = ["--skip", "arm", "--ema", "0.99", "--mdm-weight-decay", "0.5", "--mdm-seconds", "3",
              "--checkpoint-dir", str(tmp_path / "run")]
    run_anchor(*common, "--out", str(tmp_path / "first.json"))
    first = json.loads((tmp_path / "first.json").read_text())["mdm"]
    # the MDM's weight decay reaches the trainer (its saved config) and the report
    assert read_checkpoint(tmp_path / "run" / "mdm")[2]["train"]["weight_decay"] == 0.5
    assert first["optimizer"]["weight_decay"] == 0.5
    # the final looks keep each window's NELBO, so that two trials can be compared window by window
    windows = json.loads((tmp_path / "first.json").read_text())["val_windows"]
    assert len(first["final"]["per_window"]) == len(first["final_ema"]["per_window"]) == windows
    # each saved look is the lowest of its curve
    folder = tmp_path / "run" / "mdm"
    assert read_val(folder / "kept_best_trained.safetensors") == min(point["val"] for point in first["curve"])
    assert read_val(folder / "kept_best_averaged.safetensors") == min(point["ema_val"] for point in first["curve"])

    # the run is finished: running the command again trains no further and makes no look of its own, yet it
    # reports the kept best looks of the first process, scored the same way
    run_anchor(*common, "--out", str(tmp_path / "again.json"))
    again = json.loads((tmp_path / "again.json").read_text())["mdm"]
    assert again["steps_done"] == first["steps_done"] and again["curve"] == first["curve"]
    for label in ("trained", "averaged"):
        assert again[f"kept_best_{label}"] == first[f"kept_best_{label}"]
    # the folder remembers the loss it was trained with, and a resume with another one is refused
    refused = run_anchor(*common, "--mdm-loss", "k_dce", "--out", str(tmp_path / "other.json"), succeed=False)
    assert "was trained with --mdm-loss llada" in refused.stderr and not (tmp_path / "other.json").exists()

    # rescore_nelbo.py: its look at mask seed 1 is the anchor's final look at those weights (32 draws there, 4 times
    # the curve's; 8 under --quick), and its mean and errors are those of the seeds' looks
    run_bench("rescore_nelbo.py", str(folder / "kept_best_averaged.safetensors"), "--seeds", "1", "3", "--draws", "8",
              "--out", str(tmp_path / "rescore.json"))
    rescored = json.loads((tmp_path / "rescore.json").read_text())
    assert rescored["per_seed"]["1"]["val"] == pytest.approx(first["kept_best_averaged"]["val"], rel=1e-6)
    per_seed = [rescored["per_seed"][seed]["val"] for seed in ("1", "2", "3")]
    assert len(set(per_seed)) == 3  # other seeds, other masks
    assert rescored["val"] == pytest.approx(sum(per_seed) / 3, rel=1e-12)
    spread = (sum((v - rescored["val"]) ** 2 for v in per_seed) / 2) ** 0.5
    assert rescored["se_masks"] == pytest.approx(spread / 3 ** 0.5, rel=1e-9)


def test_a_given_schedule_length_and_look_interval_are_followed(tmp_path):
    common = ("--skip", "arm", "--mdm-steps", "25", "--mdm-eval-every", "10", "--mdm-seconds", "600")
    run_anchor(*common, "--out", str(tmp_path / "run.json"))
    report = json.loads((tmp_path / "run.json").read_text())["mdm"]
    assert report["recipe"]["steps"] == report["steps_done"] == 25
    assert [point["step"] for point in report["curve"]] == [10, 20, 25]
    # RADD's k-DCE trains other weights from the same seeds, scored on the same windows and masks
    run_anchor(*common, "--mdm-loss", "k_dce", "--out", str(tmp_path / "k_dce.json"))
    k_dce = json.loads((tmp_path / "k_dce.json").read_text())["mdm"]
    assert (report["loss"], k_dce["loss"]) == ("llada", "k_dce")
    assert all(a["val"] != b["val"] for a, b in zip(report["curve"], k_dce["curve"]))
    # a cosine that ends at zero instead of nanoGPT's tenth of the peak (a short warm-up, so the cosine is reached):
    # other weights at the end
    short = ("--mdm-set", "warmup_steps=5")
    looks = {}
    for ratio in ("0.1", "0"):
        run_anchor(*common, *short, "--mdm-min-lr-ratio", ratio, "--out", str(tmp_path / f"{ratio}.json"))
        looks[ratio] = json.loads((tmp_path / f"{ratio}.json").read_text())["mdm"]
        assert looks[ratio]["optimizer"]["min_lr_ratio"] == float(ratio)
    assert looks["0"]["curve"][-1]["val"] != looks["0.1"]["curve"][-1]["val"]


def test_the_mdm_look_is_validation_nelbo_with_each_window_kept():
    """The anchor scores the MDM through the per-window values, so that two trials can be paired window by window;
    its number must stay the course's validation_nelbo (same windows, batches and masks) so old and new runs compare."""
    sys.path.insert(0, str(ROOT / "bench"))
    from nanogpt_anchor import evaluate
    from minimdm.recipes import TextRecipe, build_model, prepare_data, validation_nelbo

    recipe = TextRecipe(corpus="python_docs", seq_len=32, n_layers=1, d_model=32, n_heads=2)
    tokenizer, stream = prepare_data(recipe)
    model = build_model(recipe, tokenizer.vocab_size).eval()
    look = evaluate("mdm", model, stream, stream.windows("val", 70), draws=2, seed=3, keep_windows=True)
    expected = validation_nelbo(model, stream, 70, 2, seed=3)
    assert look["val"] == pytest.approx(expected.mean, rel=1e-12)
    assert look["se"] == pytest.approx(expected.stderr, rel=1e-12)
    assert len(look["per_window"]) == 70 and sum(look["per_window"]) / 70 == pytest.approx(look["val"], rel=1e-12)
