"""The harness check: minimdm's ARM at nanoGPT's shakespeare_char recipe, then the same-size MDM against it.

    python bench/nanogpt_anchor.py                      # CUDA: ARM 60 s, then MDM 300 s; writes a JSON
    python bench/nanogpt_anchor.py --skip arm --mdm-seconds 900 --checkpoint-dir runs/moonshot --out \
        bench/results/nanogpt_moonshot_<gpu>.json       # the moonshot: how close does the MDM get in 15 min?
                                                        # (run it again after a time limit: it resumes)
    python bench/nanogpt_anchor.py --skip arm --mdm-seconds 300 --mdm-set n_layers=8 d_model=512 n_heads=8 \
        --out bench/results/nanogpt_moonshot_trial_8l512_h100.json   # a moonshot trial: another MDM recipe
    python bench/nanogpt_anchor.py --skip arm --ema 0.999 ...  # also average the weights; both are evaluated
    python bench/nanogpt_anchor.py --skip arm --mdm-weight-decay 1.0 ...  # stronger weight decay for the MDM
    python bench/nanogpt_anchor.py --skip arm --mdm-steps 40000 ...  # the cosine's length, from an earlier run
    python bench/nanogpt_anchor.py --skip arm --mdm-min-lr-ratio 0 ...  # the cosine ends at zero (default: a tenth)
    python bench/nanogpt_anchor.py --skip arm --ema 0.999 --mdm-weight-decay 1.0 --mdm-min-lr-ratio 0 \
        --mdm-seconds 900 --mdm-steps 40000 --mdm-eval-every 2000 --checkpoint-dir runs/moonshot --out \
        bench/results/nanogpt_moonshot_trial_<name>_<gpu>.json   # the recipe that met the moonshot's goal (trial 12)
    python bench/nanogpt_anchor.py --skip arm --mdm-loss k_dce ...  # train on RADD's k-DCE (exactly k masked)
    python bench/nanogpt_anchor.py --arm-set autocast_residual=true --mdm-set autocast_residual=true \
        --out bench/results/nanogpt_anchor_bf16_residual_<gpu>.json    # both kinds with a bf16 residual stream
    python bench/nanogpt_anchor.py --quick              # CPU smoke run in seconds (tiny shapes)

Tiny Shakespeare (char level, 90/10 split, through ``load_corpus("tinyshakespeare")``), nats per character on
all validation windows of 256 characters, both kinds on the *same* windows:

* **ARM** at nanoGPT's ``train_shakespeare_char`` settings: 6 layers, d 384, 6 heads, T 256, batch 64, dropout 0.2,
  AdamW lr 1e-3 (betas 0.9/0.99, weight decay 0.1, clip 1.0), 100 warmup iterations, cosine to 1e-4 over 5000
  iterations; stopped after 60 s of training. nanoGPT reports val 1.4697 (A100); a plain compiled reference did
  1.4705 after 46 s on one H200. Target: <= 1.47 within 60 s. Our backbone is LLaMA-style (RMSNorm, SwiGLU, RoPE)
  where nanoGPT's is GPT-2 style; the parameter counts agree (10.6M). We report two numbers: the exact NLL of
  the whole window (the first character predicted from the start token, the quantity the MDM bounds) and the
  nanoGPT convention (every target has at least one character of context), which differ by ~0.005.
* **MDM**, the same network without the causal mask, with the course's recipe (RoPE, dropout 0.2, batch 256,
  lr 2e-3, LLaDA's loss with stratified t); its cosine schedule is sized from a measured step time so that it
  ends when the time budget does. Reported: the NELBO (l-estimator, an upper bound on the NLL) with its
  standard error. Target: <= 1.55 within 5 minutes. ``--mdm-loss k_dce`` trains it on RADD's k-DCE instead
  (arXiv 2406.03736: k ~ U{1..L} positions masked exactly, weight L/k), the same bound with a token-level masking
  rate in place of LLaDA's per-sequence t; the validation number is the same l-estimator either way. The MDM's
  report also scores its final weights decoded left to right, one character per call: an exact NLL, comparable
  with the ARM's (``final_left_to_right``; notebook 02), and the weights of its lowest look, again on the final
  look's masks (``kept_best_trained`` / ``kept_best_averaged``).
  The final looks, the kept best looks and the left-to-right MDM list each window's value (``per_window``), so two
  runs can be compared window by window, with a paired error (two MDM looks with the same seed share their masks).

Time is training time, the trainer's own clock: evaluations and checkpoints are excluded, and ``torch.compile`` is
warmed up before the clock starts (its compile time is reported separately). bf16 autocast and fused AdamW on
CUDA, as in the trainer. With ``--checkpoint-dir`` a run cut short by a time limit continues exactly where its last
checkpoint (one per evaluation) left it when the same command runs again; a finished run is not trained further.
The kept best looks are saved in the same folder, so they are chosen among the looks of every piece of the run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from field_settings import field_changes
from minimdm.arm import loss_function, token_nll, train_kind
from minimdm.data.corpora import TINYSHAKESPEARE_SHA256, data_dir
from minimdm.flops import non_embedding_params
from minimdm.mdm.elbo import Estimate
from minimdm.mdm.likelihood import corpus_nelbo_per_sequence
from minimdm.radd import KDCE, ordered_nll
from minimdm.recipes import TextRecipe, build_model, prepare_data
from minimdm.train import CHECKPOINT_FILE, atomic_write, read_checkpoint

NANOGPT_ARM = TextRecipe(corpus="tinyshakespeare", seq_len=256, n_layers=6, d_model=384, n_heads=6, dropout=0.2,
                         batch_size=64, steps=5000, lr=1e-3, warmup_steps=100)
NANOGPT_OPTIMIZER = dict(betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0, min_lr_ratio=0.1)
COURSE_MDM = replace(NANOGPT_ARM, dropout=0.2, batch_size=256, lr=2e-3, warmup_steps=200)

QUICK_SHAPE = dict(seq_len=64, n_layers=2, d_model=64, n_heads=4, batch_size=16)
QUICK_WINDOWS = 64  # validation windows scored under --quick


def quick_recipe(recipe: TextRecipe) -> TextRecipe:
    """--quick: tiny shapes, on Tiny Shakespeare where it is cached, else on a corpus every checkout has."""
    corpus = "tinyshakespeare" if (data_dir() / "tinyshakespeare.txt").exists() else "python_docs"
    return replace(recipe, corpus=corpus, **QUICK_SHAPE)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MDM_LOSSES = ("llada", "k_dce")


def mdm_loss_fn(name: str, model):
    """The MDM's training loss: LLaDA's (t per sequence, tokens masked independently) or RADD's k-DCE."""
    if name not in MDM_LOSSES:
        raise ValueError(f"MDM loss {name!r}: allowed values are {MDM_LOSSES}")
    return loss_function("mdm", model) if name == "llada" else KDCE(model.mask_id).training_loss


def check_same_loss(folder: Path, loss: str, resuming: bool) -> None:
    """A resumed MDM run must train on the loss it started with; the name is kept beside its checkpoint (a
    checkpoint without the record predates ``--mdm-loss`` and was trained on LLaDA's loss)."""
    record = folder / "mdm_loss.txt"
    before = record.read_text().strip() if record.exists() else ("llada" if resuming else None)
    if before is not None and before != loss:
        raise SystemExit(f"--mdm-loss {loss}: the checkpoint in {folder} was trained with --mdm-loss {before}; "
                         "give that loss again or start in another --checkpoint-dir")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(record, lambda path: path.write_text(loss + "\n"))


def warm_up(recipe: TextRecipe, kind: str, forward, stream, device, steps: int, loss_fn) -> tuple[float, float]:
    """Run forward+backward on the real shapes without changing the weights: the first passes compile
    ``forward`` (if it is a ``torch.compile`` wrapper), the next ``steps`` are timed.

    Returns (compile + first-pass seconds, seconds per forward+backward).
    """
    forward.to(device).train()

    def one_pass():
        batch = stream.batch(recipe.batch_size).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss_fn(forward, batch).backward()
        forward.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(2):
        one_pass()
    sync(device)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        one_pass()
    sync(device)
    return compile_seconds, (time.perf_counter() - start) / steps


def evaluate(kind, model, stream, windows, draws, seed=0, keep_windows=False) -> dict:
    """Nats per character on the fixed validation windows: exact NLL (ARM) or NELBO with SE (MDM).
    ``keep_windows``: the report also lists each window's value, for paired comparisons on the same windows (and,
    for the MDM, the same masks)."""
    if kind == "arm":
        device = next(model.parameters()).device
        nll = torch.cat([token_nll(model, chunk.to(device)) for chunk in windows.split(64)])  # (N, T)
        per_window, per_window_nanogpt = nll.mean(1), nll[:, 1:].mean(1)
        se = per_window.std().item() / math.sqrt(len(per_window))
        return {"val": per_window.mean().item(), "se": se, "val_nanogpt_convention": per_window_nanogpt.mean().item()} \
            | ({"per_window": per_window.tolist()} if keep_windows else {})
    # validation_nelbo's estimate (same windows, batches and generator seed), keeping each window's value
    device = next(model.parameters()).device
    per_window = corpus_nelbo_per_sequence(model, windows.to(device), model.mask_id, num_draws=draws,
                                           generator=torch.Generator(device=device).manual_seed(seed))
    estimate = Estimate.from_draws(per_window)
    return {"val": estimate.mean, "se": estimate.stderr} | ({"per_window": per_window.tolist()} if keep_windows else {})


def read_val(path: Path) -> float:
    """The validation value a kept best look's weights file carries in its metadata."""
    with safe_open(str(path), "pt") as handle:
        return float(handle.metadata()["val"])


def run_kind(kind, recipe, seconds, device, compile, eval_every, draws, trainer_settings, stream, vocab_size, log,
             max_windows=None, checkpoint_dir=None, steps=None, mdm_loss="llada"):
    model = build_model(recipe, vocab_size, causal=kind == "arm").to(device)
    loss_fn = mdm_loss_fn(mdm_loss, model) if kind == "mdm" else loss_function(kind, model)
    # The trainer gets the compiled wrapper itself (and compile=False), so the graphs compiled during the
    # warm-up are the ones it trains with; evaluation uses the eager model, which shares the parameters.
    forward = torch.compile(model) if compile else model
    compile_seconds, step_seconds = warm_up(recipe, kind, forward, stream, device, steps=10, loss_fn=loss_fn)
    resuming = checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_FILE).exists()
    if kind == "mdm" and checkpoint_dir is not None:
        check_same_loss(Path(checkpoint_dir), mdm_loss, resuming)
    if resuming:  # the first run sized the schedule; the rest of it must follow the same one
        _, _, config = read_checkpoint(checkpoint_dir)
        recipe = replace(recipe, steps=config["train"]["steps"])
    elif steps is not None:  # a schedule sized from an earlier run's measured step time
        recipe = replace(recipe, steps=steps)
    elif kind == "mdm":  # size the cosine so it ends with the time budget (optimizer step ~5% on top of fwd+bwd)
        recipe = replace(recipe, steps=max(recipe.warmup_steps + 10, int(0.97 * seconds / (1.05 * step_seconds))))
    log(f"[{kind}] compile/warm-up {compile_seconds:.1f} s, ~{step_seconds * 1e3:.1f} ms per fwd+bwd, "
        f"schedule {recipe.steps} steps, budget {seconds:.0f} s" + (f", resuming {checkpoint_dir}" if resuming else ""))
    windows = stream.windows("val", max_windows)

    calls = itertools.count()
    # "trained" / "averaged" -> (val, weights) of its lowest look so far, as nanoGPT keeps its best checkpoint; with
    # a checkpoint folder they are saved beside the checkpoint, so a resumed run keeps the looks of the runs before it
    kept_file = lambda label: Path(checkpoint_dir) / f"kept_best_{label}.safetensors"  # noqa: E731
    kept = {label: (read_val(kept_file(label)), load_file(str(kept_file(label))))
            for label in ("trained", "averaged") if resuming and kept_file(label).exists()}

    def eval_fn(_compiled):
        model.eval()
        metrics = evaluate(kind, model, stream, windows, draws)
        # with weight averaging the trainer evaluates the trained weights, then the averaged ones
        label = "averaged" if "ema_decay" in trainer_settings and next(calls) % 2 else "trained"
        log(f"[{kind}] {'averaged weights ' if label == 'averaged' else ''}val {metrics['val']:.4f} ± {metrics['se']:.4f}")
        if metrics["val"] < kept.get(label, (math.inf,))[0]:
            kept[label] = (metrics["val"], {name: value.detach().cpu().clone() for name, value in model.state_dict().items()})
            if checkpoint_dir is not None:  # the value travels in the weights' file: one atomic write holds both
                atomic_write(kept_file(label), lambda path: save_file(kept[label][1], str(path),
                                                                      metadata={"val": repr(metrics["val"])}))
        return metrics

    # The trainer's clock counts training only (not evaluations, not checkpoints), and a checkpoint at every
    # evaluation lets a run cut short by a time limit continue exactly where it stopped.
    _, result = train_kind(recipe, kind, stream, vocab_size, device, progress=False, compile=False, model=forward,
                           loss_fn=loss_fn,
                           max_seconds=seconds, eval_fn=eval_fn, eval_every=eval_every, checkpoint_dir=checkpoint_dir,
                           **({"log_every": eval_every, "checkpoint_every": eval_every if checkpoint_dir else 0}
                              | trainer_settings))
    model.eval()
    curve = result.evals  # {"step", "seconds", "val", "se"}: the trainer's record, kept across resumes
    final = evaluate(kind, model, stream, windows, draws * 4, seed=1, keep_windows=True)  # a more precise last look
    final["seconds"] = result.seconds
    tokens_per_s = result.tokens / result.seconds
    best = min(curve, key=lambda point: point["val"])  # nanoGPT's number: it saves only when val improves
    log(f"[{kind}] final after {final['seconds']:.1f} s of training ({result.step} steps, "
        f"{tokens_per_s:,.0f} tok/s): {final['val']:.4f} ± {final['se']:.4f}; lowest on the way "
        f"{best['val']:.4f} ± {best['se']:.4f} at {best['seconds']:.1f} s")
    report = {"recipe": asdict(recipe), "optimizer": trainer_settings,
              **({"loss": mdm_loss} if kind == "mdm" else {}),
              "params_non_embedding": non_embedding_params(model), "compile_seconds": compile_seconds,
              "step_seconds_measured": step_seconds, "steps_done": result.step,
              "tokens_per_s": tokens_per_s, "curve": curve, "best": best, "final": final}
    if result.ema_weights is not None:  # the same look at the averaged weights
        unknown = forward.load_state_dict(result.ema_weights, strict=False).unexpected_keys
        assert not unknown, f"averaged weights that the model does not have: {unknown}"
        report["final_ema"] = evaluate(kind, model, stream, windows, draws * 4, seed=1, keep_windows=True)
        report["best_ema"] = min(curve, key=lambda point: point["ema_val"])
        report["ema_decay"] = trainer_settings["ema_decay"]
        log(f"[{kind}] averaged weights (decay {trainer_settings['ema_decay']}): final {report['final_ema']['val']:.4f} ± "
            f"{report['final_ema']['se']:.4f}; lowest on the way {report['best_ema']['ema_val']:.4f} at "
            f"{report['best_ema']['seconds']:.1f} s")
    if kind == "mdm":
        # The same weights read as a left-to-right decoder: an exact NLL (RADD's AO-ARM view), one pass per character
        nll = torch.cat([ordered_nll(model, chunk, model.mask_id) for chunk in windows.split(16)]) / windows.shape[1]
        report["final_left_to_right"] = {"weights": "averaged" if result.ema_weights is not None else "trained",
                                         "val": nll.mean().item(), "se": nll.std().item() / math.sqrt(len(nll)),
                                         "per_window": nll.tolist()}
        log(f"[{kind}] the same weights decoded left to right: exact NLL {nll.mean().item():.4f}")
    # The kept best looks, scored again: the MDM's on the final look's masks (its curve value was picked as the
    # lowest of many looks on one set of masks, so it reads low), the ARM's exactly, window by window
    for label, (_, weights) in kept.items():
        model.load_state_dict(weights)
        report[f"kept_best_{label}"] = evaluate(kind, model, stream, windows, draws * 4, seed=1, keep_windows=True)
        log(f"[{kind}] kept best {label} weights, looked at again: {report[f'kept_best_{label}']['val']:.4f} ± "
            f"{report[f'kept_best_{label}']['se']:.4f}")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes on the CPU, a few seconds each")
    parser.add_argument("--arm-seconds", type=float, default=60.0)
    parser.add_argument("--mdm-seconds", type=float, default=None, help="default 300 (8 with --quick)")
    parser.add_argument("--skip", choices=("arm", "mdm"), default=None, help="run only the other kind")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/nanogpt_anchor_<device>.json)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="checkpoint every evaluation under DIR/<kind>; run the same command again to continue a "
                             "run that a time limit cut short (e.g. the 15-minute moonshot in 10-minute pieces)")
    parser.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                        help="MDM only: also average the weights (e.g. 0.999) and evaluate both")
    parser.add_argument("--mdm-weight-decay", type=float, default=NANOGPT_OPTIMIZER["weight_decay"], metavar="WD",
                        help="MDM only: AdamW's weight decay on the matrices (default 0.1, nanoGPT's)")
    parser.add_argument("--mdm-min-lr-ratio", type=float, default=NANOGPT_OPTIMIZER["min_lr_ratio"], metavar="R",
                        help="MDM only: where the cosine ends, as a fraction of the peak rate (default 0.1, nanoGPT's; "
                             "0 anneals to zero)")
    parser.add_argument("--mdm-steps", type=int, default=None, metavar="N",
                        help="MDM only: the cosine's length in steps (default: sized from a timed warm-up to end inside "
                             "--mdm-seconds, which leaves ~10%% of the budget unused); --mdm-seconds still stops it")
    parser.add_argument("--mdm-eval-every", type=int, default=None, metavar="N",
                        help="MDM only: steps between looks (and checkpoints) on the way (default 500, 20 with --quick); "
                             "fewer looks leave more of a time-limited call to training")
    parser.add_argument("--mdm-loss", choices=MDM_LOSSES, default="llada",
                        help="MDM only: the training loss, LLaDA's (default) or RADD's k-DCE (exactly k of L masked)")
    parser.add_argument("--mdm-set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="change fields of the MDM recipe for a moonshot trial, e.g. n_layers=8 d_model=512 n_heads=8")
    parser.add_argument("--arm-set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="change fields of the ARM recipe, e.g. autocast_residual=true")
    args = parser.parse_args(argv)
    if args.mdm_steps is not None and args.mdm_steps < 1:
        parser.error(f"--mdm-steps {args.mdm_steps}: the schedule needs at least 1 step")
    if not 0 <= args.mdm_min_lr_ratio <= 1:
        parser.error(f"--mdm-min-lr-ratio {args.mdm_min_lr_ratio}: give a fraction of the peak rate in [0, 1]")
    if args.mdm_eval_every is not None and args.mdm_eval_every < 1:
        parser.error(f"--mdm-eval-every {args.mdm_eval_every}: give a positive number of steps")

    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    arm_recipe, mdm_recipe = NANOGPT_ARM, COURSE_MDM
    arm_seconds, mdm_seconds, arm_every, mdm_every, draws = args.arm_seconds, args.mdm_seconds or 300.0, 250, 500, 8
    max_windows = None  # all of them
    if args.quick:
        torch.set_num_threads(1)
        arm_recipe, mdm_recipe = quick_recipe(arm_recipe), quick_recipe(mdm_recipe)
        arm_seconds, mdm_seconds, arm_every, mdm_every, draws, max_windows = 5.0, args.mdm_seconds or 8.0, 20, 20, 2, QUICK_WINDOWS
    elif device.type != "cuda":
        sys.exit("no CUDA device: the anchor is a GPU benchmark (use --quick for a CPU smoke run)")
    mdm_every = args.mdm_eval_every or mdm_every
    # both kinds see the same data and are scored on the same windows, the ARM follows nanoGPT's schedule and the
    # MDM's steps follow from its time budget: those fields are the benchmark's own
    fixed = ("corpus", "tokenizer", "seq_len", "steps", "eval_windows", "eval_draws")
    arm_recipe = replace(arm_recipe, **field_changes(arm_recipe, args.arm_set, "--arm-set", fixed=fixed))
    mdm_recipe = replace(mdm_recipe, **field_changes(mdm_recipe, args.mdm_set, "--mdm-set", fixed=fixed))
    compile = device.type == "cuda"
    tokenizer, stream = prepare_data(arm_recipe)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {"device": name, "torch": torch.__version__, "python": platform.python_version(),
              "corpus": arm_recipe.corpus, "corpus_sha256": TINYSHAKESPEARE_SHA256 if arm_recipe.corpus == "tinyshakespeare" else None,
              "vocab_size": tokenizer.vocab_size, "val_windows": len(stream.windows("val", max_windows)), "quick": args.quick,
              "unit": "nats per character; ARM exact NLL, MDM NELBO (l-estimator) upper bound",
              "targets": {"arm_60s": 1.47, "mdm_300s": 1.55, "moonshot_mdm": "<= ARM"}}
    print(f"device {name} | torch {torch.__version__} | corpus {arm_recipe.corpus} | "
          f"{report['val_windows']} validation windows of {arm_recipe.seq_len}", flush=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    checkpoint_for = lambda kind: str(Path(args.checkpoint_dir) / kind) if args.checkpoint_dir else None  # noqa: E731
    if args.skip != "arm":
        report["arm"] = run_kind("arm", arm_recipe, arm_seconds, device, compile, arm_every, draws,
                                 NANOGPT_OPTIMIZER, stream, tokenizer.vocab_size, log, max_windows,
                                 checkpoint_for("arm"))
    if args.skip != "mdm":
        report["mdm"] = run_kind("mdm", mdm_recipe, mdm_seconds, device, compile, mdm_every, draws,
                                 {k: v for k, v in NANOGPT_OPTIMIZER.items() if k != "betas"}
                                 | {"weight_decay": args.mdm_weight_decay, "min_lr_ratio": args.mdm_min_lr_ratio}
                                 | ({"ema_decay": args.ema} if args.ema else {}), stream,
                                 tokenizer.vocab_size, log, max_windows, checkpoint_for("mdm"), args.mdm_steps,
                                 args.mdm_loss)
    tag = "quick" if args.quick else name.split()[-1].lower()
    out = Path(args.out or f"bench/results/nanogpt_anchor_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
