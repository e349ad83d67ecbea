"""One small training loop for every model in the course.

    result = train(model, loss_fn, batch_fn, TrainConfig(steps=2000, lr=1e-3))

* ``loss_fn(model, batch) -> scalar``; ``batch_fn(step) -> tensor or tuple of tensors``.
* AdamW, linear warmup then cosine decay to ``min_lr_ratio * lr``, gradient clipping and accumulation,
  bf16 autocast on CUDA, optional ``torch.compile``, a tqdm bar with loss, tokens/s and MFU.
* **Exact resume.** Before each micro-step the global RNG is reseeded from (seed, step, micro-step), so a
  step's batch, masks and dropout depend on nothing but its index. A checkpoint (model + optimizer in one
  safetensors file, trainer state in its metadata, the configs in config.json) written atomically is
  therefore all that resuming needs: the loss trajectory continues exactly as if never interrupted.
* **More than one process.** Under ``torchrun`` the same call trains data-parallel (``minimdm.distributed``):
  each process draws its own micro-batches of the step, DDP averages the gradients, rank 0 alone evaluates and
  writes checkpoints, and a checkpoint resumes under any number of processes.
* **Weight averaging** (``ema_decay`` > 0): an exponential moving average of the weights is kept beside them,
  evaluated beside them (``ema_``-prefixed metrics), saved in the checkpoint and returned in
  ``TrainResult.ema_weights``; the model itself keeps the trained weights.
* **Nothing lost to Ctrl-C.** An interrupt lets the step in progress finish, saves a checkpoint (with a
  ``checkpoint_dir``) and raises ``TrainingInterrupted``; calling ``train`` again resumes from it. A second
  Ctrl-C stops at once. Temporary files that a killed run left in the checkpoint folder are removed at start.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from minimdm import distributed
from minimdm.checks import is_finite_number, is_integer
from minimdm.flops import peak_flops, training_flops_per_token
from minimdm.presets import default_device

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes in which torch.compile replays CUDA graphs
CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 turns clipping off
    grad_accum: int = 1
    log_every: int = 50
    eval_every: int = 0  # 0: evaluate only at the end
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # 0: only at the end (if checkpoint_dir is set)
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" replays CUDA graphs (fewer launches: small batches); "max-autotune" also
    # tunes the matmuls and fused kernels (large batches; minutes of compiling the first time on a machine)
    compile_mode: str = "default"
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    max_seconds: float | None = None  # stop early after this much training time
    ema_decay: float = 0.0  # > 0: also keep an exponential moving average of the weights (WeightAverage)

    def __post_init__(self):
        for name in ("steps", "warmup_steps", "grad_accum", "log_every", "eval_every", "checkpoint_every"):
            value = getattr(self, name)  # a float would fail mid-run (range, modulo), -1 would act every step
            if not is_integer(value):
                raise ValueError(f"{name}={value!r} must be an integer")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio"):  # nan passes every comparison below
            value = getattr(self, name)
            if not is_finite_number(value):
                raise ValueError(f"{name}={value!r} must be a finite number")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.log_every < 1:
            raise ValueError(f"log_every={self.log_every} must be >= 1")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0: only at the end)")
        if self.max_seconds is not None and not self.max_seconds >= 0:  # nan fails too
            raise ValueError(f"max_seconds={self.max_seconds} must be >= 0 (None: no time limit)")
        if len(self.betas) != 2 or not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas!r} must be two numbers in [0, 1) (AdamW's beta1, beta2)")
        if self.warmup_steps < 0:  # warmup_steps >= steps is allowed: the rate then ramps up for the whole run
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0 (0: no warmup)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip={self.grad_clip} must be >= 0 (0 turns clipping off)")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum={self.grad_accum} must be >= 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode={self.compile_mode!r}: allowed values are {COMPILE_MODES}")
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"compile_mode={self.compile_mode!r} needs compile=True")
        if self.compile_mode in CUDA_GRAPH_MODES and self.grad_accum > 1:
            # a micro-batch's gradients would live in the graphs' memory, which the next micro-batch reuses
            raise ValueError(f"compile_mode={self.compile_mode!r} (CUDA graphs) needs grad_accum=1, got "
                             f"{self.grad_accum}: use a larger batch or 'max-autotune-no-cudagraphs'")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1) (0 turns weight averaging off)")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "lr", "tokens_per_s", "mfu"}
    evals: list[dict] = field(default_factory=list)  # {"step", "seconds" of training so far, **eval_fn(model)}
    step: int = 0
    seconds: float = 0.0
    tokens: int = 0
    ema_weights: dict[str, torch.Tensor] | None = None  # the averaged parameters, for model.load_state_dict(..., strict=False)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup to lr, then cosine decay towards min_lr_ratio * lr, reached at step ``steps`` (one past the last)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class WeightAverage:
    """An exponential moving average of a model's floating-point parameters, kept in float32.

    After optimizer step n = 1, 2, ...:  a <- d_n a + (1 - d_n) w,  with d_n = min(decay, (1 + n) / (10 + n)).
    The warm-up of d_n (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps the first averages from
    leaning on the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"decay={decay} must lie in (0, 1)")
        named = [(name, p) for name, p in model.named_parameters() if p.is_floating_point()]
        self.decay, self.names, self.params = decay, [name for name, _ in named], [p for _, p in named]
        self.average = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self, n: int) -> None:
        weight = 1 - min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(self.average, [p.float() for p in self.params], weight)

    @contextmanager
    def swapped_in(self):
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, own)

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: a.detach().cpu().clone() for name, a in zip(self.names, self.average)}

    def load(self, weights: dict[str, torch.Tensor], where) -> None:
        missing = [name for name in self.names if name not in weights]
        if missing:
            raise ValueError(f"checkpoint {where} holds no weight average (it was trained with ema_decay=0): resume "
                             "with ema_decay=0, or start afresh in another folder")
        for name, a in zip(self.names, self.average):
            a.copy_(weights[name])


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``train`` after a whole step; ``checkpoint`` is where that step was saved (None: not saved)."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"interrupted after step {step}")
        self.step, self.checkpoint = step, checkpoint


def resolve_device(device) -> torch.device:
    """'auto' (``MINIMDM_DEVICE`` if set, else CUDA when there is one), 'cpu', 'cuda', 'cuda:N' or 'mps'.

    A device this machine lacks is a ValueError here, not an error deep inside the first tensor operation.
    """
    name = str(device).strip().lower()
    if name == "auto":
        if os.environ.get("MINIMDM_DEVICE", "").strip():
            return default_device()  # checks the variable
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={str(device)!r} is not supported: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but torch sees no CUDA device on this machine: use 'cpu' or 'auto'")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r} but torch sees no MPS device on this machine: use 'cpu' or 'auto'")
    return parsed


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices get weight decay, gains and biases do not (as in nanoGPT)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


MAX_MICRO_BATCHES = 64  # per optimizer step, over all processes: the seed of micro-batch k is base * 64 + k


def _seed_for(cfg: TrainConfig, step: int, micro: int) -> int:
    return (cfg.seed * 1_000_003 + step) * MAX_MICRO_BATCHES + micro


def _reseed(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and the device's generator: what torch.manual_seed does, at 1/100 of its cost."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)


def _batch_tokens(batch) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return first.numel()


def _to_device(batch, device):
    if isinstance(batch, (tuple, list)):
        return type(batch)(b.to(device, non_blocking=True) for b in batch)
    return batch.to(device, non_blocking=True)


class _DeferredInterrupt:
    """While active, the first Ctrl-C only raises a flag (the loop saves and stops after the current step, so a
    checkpoint never holds a half-applied optimizer step); a second one interrupts at once."""

    def __init__(self):
        self.requested, self._previous = False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: finishing this step, then saving (Ctrl-C again to stop at once)", flush=True)

    def __enter__(self):
        # only where Python's own handler is in place (the main thread, no other library's handler)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def prepare_checkpoint_dir(directory) -> Path:
    """Create the folder (or fail now, not after training) and remove temporary files of dead runs."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint folder {directory} is an existing file: pick a folder (CLI: --out) or move the file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the checkpoint folder {directory} ({error}): pick another one") from error
    for path in directory.glob(".*.tmp-*"):
        match = re.fullmatch(r"\.(.+)\.tmp-(\d+)", path.name)
        if match and not _process_alive(int(match.group(2)), path):
            path.unlink(missing_ok=True)
    return directory


def _process_alive(pid: int, path: Path) -> bool:
    if os.name != "posix":  # no harmless liveness probe there: an hour-old temporary file is a dead run's
        return time.time() - path.stat().st_mtime < 3600
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _guard_every_parameter(compiling: bool):
    """Make torch.compile check each parameter's ``requires_grad`` before it reuses a compiled graph.

    By default it skips the checks on a module's tensors while the module's ``__dict__`` is unchanged, and
    ``requires_grad_`` leaves the ``__dict__`` alone. A model compiled in one training stage and then partly unfrozen
    for the next would rerun the old graph, and the unfrozen parameters would get no gradient (seen with torch 2.11 on
    an H100: notebook 07's tuning stage trained only the connector it had aligned).
    """
    options = torch._dynamo.config
    if not compiling or not hasattr(options, "skip_tensor_guards_with_matching_dict_tags"):
        return nullcontext()
    return options.patch(skip_tensor_guards_with_matching_dict_tags=False)


def train(model: torch.nn.Module, loss_fn, batch_fn, cfg: TrainConfig, eval_fn=None,
          resume: bool = True) -> TrainResult:
    """Train ``model`` in place; resume from ``cfg.checkpoint_dir`` when a checkpoint is there."""
    device, world = distributed.setup(resolve_device(cfg.device))
    micro_per_step = world.size * cfg.grad_accum  # micro-batches of one optimizer step, all processes together
    if micro_per_step > MAX_MICRO_BATCHES:
        raise ValueError(f"grad_accum={cfg.grad_accum} x {world.size} processes = {micro_per_step} micro-batches per "
                         f"step; at most {MAX_MICRO_BATCHES} are allowed: use a larger batch instead")
    if cfg.checkpoint_dir and world.is_main:
        prepare_checkpoint_dir(cfg.checkpoint_dir)
    distributed.barrier(world)  # the folder exists (or its error was raised) before anyone reads it
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    result, start_step = TrainResult(), 0
    if resume and cfg.checkpoint_dir and (Path(cfg.checkpoint_dir) / CHECKPOINT_FILE).exists():
        start_step, result = load_checkpoint(cfg.checkpoint_dir, model, optimizer, average)
    parallel_model = distributed.wrap(model, world)  # DDP copies rank 0's weights to every process
    graphs = cfg.compile and cfg.compile_mode in CUDA_GRAPH_MODES and device.type == "cuda"
    if graphs and world.size > 1:
        raise ValueError(f"compile_mode={cfg.compile_mode!r} (CUDA graphs) is not supported under DDP here: "
                         "use 'default' or 'max-autotune-no-cudagraphs'")
    forward_model = torch.compile(parallel_model, mode=cfg.compile_mode) if cfg.compile else parallel_model
    use_amp = cfg.amp and device.type == "cuda"
    peak = peak_flops(device)

    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps,
               disable=not (cfg.progress and world.is_main), desc="train", dynamic_ncols=True)
    window_tokens, window_start, done = 0, time.perf_counter(), start_step
    model.train()
    flops_per_token, stop = None, False

    def agreed(flag: bool, at_step: int) -> bool:
        """One process decides alone; several agree (any of them), at log steps only: a collective every step
        would cost a device sync."""
        if world.size == 1:
            return flag
        return at_step % cfg.log_every == 0 and distributed.any_rank(flag, world, device)

    with _DeferredInterrupt() as interrupt, _guard_every_parameter(cfg.compile):
        for step in bar:
            out_of_time = cfg.max_seconds is not None and \
                result.seconds + (time.perf_counter() - window_start) > cfg.max_seconds
            if agreed(out_of_time, step):  # before the step: a resumed run that had used its time trains no more
                break
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for local in range(cfg.grad_accum):
                micro = world.rank * cfg.grad_accum + local  # this micro-batch's number within the step
                _reseed(_seed_for(cfg, step, micro), device)
                batch = _to_device(batch_fn(step * micro_per_step + micro), device)
                if flops_per_token is None and hasattr(model, "config") and hasattr(model.config, "n_layers"):
                    first = batch[0] if isinstance(batch, (tuple, list)) else batch
                    flops_per_token = training_flops_per_token(model, first.shape[-1])
                # DDP averages gradients over processes in the last micro-step's backward only
                syncing = local == cfg.grad_accum - 1 or world.size == 1
                if graphs:  # a new step (grad_accum is 1): the graphs may now overwrite the last step's outputs
                    torch.compiler.cudagraph_mark_step_begin()
                with nullcontext() if syncing else parallel_model.no_sync():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                        loss = loss_fn(forward_model, batch) / cfg.grad_accum
                    loss.backward()
                step_loss += loss.detach()
                window_tokens += _batch_tokens(batch)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if average is not None:
                average.update(done)
            if done % cfg.log_every == 0 or done == cfg.steps:
                # one device sync per log line, not per step; the loss is the mean over processes
                loss_value, window_tokens = _over_ranks(step_loss, window_tokens, world, device)
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / max(elapsed, 1e-9)
                mfu = tokens_per_s * flops_per_token / peak if (peak and flops_per_token) else None
                result.history.append({"step": done, "loss": loss_value, "lr": lr, "tokens_per_s": tokens_per_s, "mfu": mfu})
                result.seconds += elapsed
                result.tokens += window_tokens
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_s:,.0f}", **({"mfu": f"{mfu:.1%}"} if mfu else {}))
                window_tokens, window_start = 0, time.perf_counter()
            if eval_fn is not None and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                paused = time.perf_counter()
                seconds = result.seconds + (paused - window_start)
                if world.is_main:
                    result.evals.append({"step": done, "seconds": seconds, **_evaluate(model, eval_fn, average)})
                distributed.barrier(world)
                window_start += time.perf_counter() - paused  # evaluation time is not training time
            if cfg.checkpoint_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                paused, result.step = time.perf_counter(), done
                _save(cfg, model, optimizer, result, world, average)
                window_start += time.perf_counter() - paused  # nor is writing a checkpoint
            stop = agreed(interrupt.requested, done)
            if stop:
                break
    bar.close()
    if window_tokens:  # stopped early by max_seconds or Ctrl-C: log the partial window too
        loss_value, window_tokens = _over_ranks(step_loss, window_tokens, world, device)
        elapsed = time.perf_counter() - window_start
        result.history.append({"step": done, "loss": loss_value, "lr": lr,
                               "tokens_per_s": window_tokens / max(elapsed, 1e-9), "mfu": None})
        result.seconds += elapsed
        result.tokens += window_tokens
    result.step = done
    if stop:
        raise TrainingInterrupted(done, _save(cfg, model, optimizer, result, world, average))
    evaluated = bool(result.evals) and result.evals[-1]["step"] == done  # e.g. a finished run, resumed
    if eval_fn is not None and not evaluated and world.is_main:
        result.evals.append({"step": result.step, "seconds": result.seconds, **_evaluate(model, eval_fn, average)})
    _save(cfg, model, optimizer, result, world, average)
    if average is not None:
        result.ema_weights = average.weights()
    return result


def _over_ranks(step_loss, window_tokens: int, world, device) -> tuple[float, int]:
    """(loss of the last step, tokens of the window) over all processes (mean loss, summed tokens): a log line."""
    if world.size == 1:
        return float(step_loss), window_tokens
    total = distributed.sum_over_ranks(torch.stack([torch.as_tensor(step_loss, dtype=torch.float64, device=device),
                                                    torch.tensor(float(window_tokens), dtype=torch.float64,
                                                                 device=device)]), world)
    return float(total[0]) / world.size, int(total[1])


def _save(cfg: TrainConfig, model, optimizer, result: TrainResult, world, average=None) -> Path | None:
    """Rank 0 writes the checkpoint; the others wait, so no one reads a file still being written."""
    if not cfg.checkpoint_dir:
        return None
    if world.is_main:
        save_checkpoint(cfg.checkpoint_dir, model, optimizer, result, cfg, average)
    distributed.barrier(world)
    return Path(cfg.checkpoint_dir) / CHECKPOINT_FILE


def _evaluate(model, eval_fn, average: WeightAverage | None = None) -> dict:
    """eval_fn's metrics of the model, and with weight averaging those of the averaged weights as ema_<name>."""
    model.eval()
    with torch.no_grad():
        metrics = dict(eval_fn(model))
        if average is not None:
            with average.swapped_in():
                metrics |= {f"ema_{name}": value for name, value in eval_fn(model).items()}
    model.train()
    return metrics


# --- checkpoints -------------------------------------------------------------------------------------------

def atomic_write(path: Path, write) -> None:
    """Write to a temporary file beside ``path``, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors


def save_checkpoint(directory: str | os.PathLike, model, optimizer, result: TrainResult, cfg: TrainConfig,
                    average: WeightAverage | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer))
    if average is not None:
        tensors.update({f"ema.{name}": value.contiguous() for name, value in average.weights().items()})
    state = {"step": result.step, "seconds": result.seconds, "tokens": result.tokens,
             "history": result.history, "evals": result.evals,
             "param_groups": optimizer.state_dict()["param_groups"]}
    atomic_write(directory / CHECKPOINT_FILE,
                 lambda p: save_file(tensors, str(p), metadata={"trainer_state": json.dumps(state)}))
    config = {"train": asdict(cfg), "model_class": type(model).__name__,
              "model": model.config.to_dict() if hasattr(getattr(model, "config", None), "to_dict") else None}
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2)))
    return directory / CHECKPOINT_FILE


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """(tensors, trainer_state, config) of a checkpoint directory, with a clear error if it is damaged.

    config is None when config.json is missing (``load_checkpoint`` does not need it; ``load_model`` does).
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {directory}: train one first, or pass the folder that holds "
                                f"{CHECKPOINT_FILE}")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first, or pass the folder that holds it")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            state = json.loads(handle.metadata()["trainer_state"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({error}); "
                         "delete it to start afresh, or point to an intact checkpoint") from error
    for name, tensor in tensors.items():  # flipped bytes in the tensor data pass every format check
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"checkpoint {path} holds non-finite values (nan or inf) in {name}: its data is corrupt "
                             "(or the run diverged); delete it to start afresh, or point to an intact checkpoint")
    config_path = Path(directory) / CONFIG_FILE
    if not config_path.exists():
        return tensors, state, None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{config_path} is truncated or corrupt ({error}); copy it from the run that wrote "
                         f"{CHECKPOINT_FILE}, or delete the folder to start afresh") from error
    return tensors, state, config


def _load_weights(directory, model, tensors: dict, config: dict | None) -> None:
    """Load the model's tensors; a checkpoint of another model (say another preset's) is named as such, with the
    two configurations, instead of one "size mismatch" line per tensor."""
    try:
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as error:
        saved = (config or {}).get("model") or {}
        ours = json.loads(json.dumps(model.config.to_dict())) if hasattr(getattr(model, "config", None), "to_dict") else {}
        differing = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        there = ", ".join(f"{k}={saved.get(k)}" for k in differing) or "unknown configuration"
        here = ", ".join(f"{k}={ours.get(k)}" for k in differing) or "different tensors"
        raise ValueError(f"{directory} holds a checkpoint of another model (saved: {there}; this model: {here}), "
                         "e.g. from another preset: pick another folder (CLI: --out) or delete it to start afresh"
                         ) from error


def load_checkpoint(directory, model, optimizer=None, average: WeightAverage | None = None) -> tuple[int, TrainResult]:
    tensors, state, config = read_checkpoint(directory)
    _load_weights(directory, model, tensors, config)
    if average is not None:
        average.load({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}, directory)
    if optimizer is not None:
        optim_state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                optim_state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": optim_state, "param_groups": state["param_groups"]})
    result = TrainResult(history=state["history"], evals=state["evals"], step=state["step"],
                         seconds=state["seconds"], tokens=state["tokens"])
    return state["step"], result


def load_model(directory, device: str = "cpu"):
    """Rebuild a Transformer from a checkpoint directory (config.json + weights)."""
    from minimdm.nn import Transformer, TransformerConfig

    tensors, _, config = read_checkpoint(directory)
    if config is None:
        raise FileNotFoundError(f"{Path(directory) / CONFIG_FILE} is missing ({CHECKPOINT_FILE} is there): copy it from "
                                "the run that wrote the checkpoint, or build the model yourself and use load_checkpoint")
    if config.get("model") is None:
        raise ValueError(f"{directory}/{CONFIG_FILE} holds no model config; build the model yourself and use load_checkpoint")
    model = Transformer(TransformerConfig(**config["model"]))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return model.to(device).eval()
