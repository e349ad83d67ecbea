"""The anchor benchmark's resumable runs: the kept best looks survive a resume (a CPU smoke run, seconds)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_anchor(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "nanogpt_anchor.py"), "--quick", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


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
