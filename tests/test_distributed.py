"""Data-parallel training: two gloo processes under torchrun train exactly what one process trains with the
doubled batch, and a checkpoint resumes under another number of processes on the same schedule."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

WORKER = Path(__file__).parent / "ddp_worker.py"
ROOT = Path(__file__).parent.parent


def torchrun(tmp_path, processes, *args, worker=WORKER) -> dict:
    out = tmp_path / f"out-{processes}-{len(list(tmp_path.iterdir()))}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(worker), str(out), *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def one_process_doubled():
    """The reference: one process, two micro-batches per step."""
    return ddp_worker.run(grad_accum=2)


def assert_same_run(losses, weights, reference):
    ref_losses, ref_weights = reference
    assert len(losses) == len(ref_losses) == ddp_worker.STEPS
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    for name, value in ref_weights.items():
        torch.testing.assert_close(torch.tensor(weights[name]), torch.tensor(value), rtol=1e-4, atol=1e-5, msg=name)


def test_two_gloo_processes_match_one_process_with_the_doubled_batch(tmp_path, one_process_doubled):
    two = torchrun(tmp_path, 2, 1)
    assert two["world"] == 2
    assert_same_run(two["losses"], two["weights"], one_process_doubled)
    single_batch = ddp_worker.run(grad_accum=1)[0]  # the test can fail: half the batch is another run
    assert single_batch != pytest.approx(one_process_doubled[0], rel=1e-3)


def test_accumulation_inside_each_process_is_the_same_step(tmp_path):
    """Two processes of two micro-batches each (DDP's no_sync on the first) = one process of four."""
    two = torchrun(tmp_path, 2, 2)
    assert_same_run(two["losses"], two["weights"], ddp_worker.run(grad_accum=4))


def test_stopped_under_two_processes_resumed_under_one(tmp_path, one_process_doubled):
    ckpt = tmp_path / "ckpt"
    assert torchrun(tmp_path, 2, 1, ckpt, 23) == {"killed": True}  # dies at step 23: the step-20 checkpoint stays
    losses, weights = ddp_worker.run(grad_accum=2, checkpoint_dir=str(ckpt))
    assert_same_run(losses, weights, one_process_doubled)


def test_stopped_under_one_process_resumed_under_two(tmp_path, one_process_doubled):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ddp_worker.Killed):
        ddp_worker.run(grad_accum=2, checkpoint_dir=str(ckpt), die_at=13)
    two = torchrun(tmp_path, 2, 1, ckpt)
    assert_same_run(two["losses"], two["weights"], one_process_doubled)


def test_too_many_micro_batches_is_a_clear_error():
    from minimdm.train import TrainConfig, train

    with pytest.raises(ValueError, match="grad_accum=65"):
        train(ddp_worker.model(), ddp_worker.loss_fn, ddp_worker.batch_fn, TrainConfig(steps=1, grad_accum=65, progress=False))


def test_bad_torchrun_variables_are_clear_errors(monkeypatch):
    from minimdm.distributed import current_world

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' must be an integer"):
        current_world()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        current_world()


def test_no_collective_is_left_in_flight_when_it_returns(tmp_path):
    """gloo's worker thread takes the GIL to let go of a tensor; if it still holds one when a process exits, the
    process aborts ("terminate called without an active exception"). So every sum over processes returns only
    after the thread has let go. And any_rank is true on both ranks when one rank's flag is, false when none is."""
    result = torchrun(tmp_path, 2, worker=Path(__file__).parent / "ddp_collectives_worker.py")
    assert result == {"world": 2, "held": 0, "wrong": 0, "any_rank_wrong": 0}
