"""IsoFLOP scaling laws for the ARM and the MDM (SMDM, arXiv 2410.18514, its IsoFLOP study;
Chinchilla's approach 2, Hoffmann et al. 2022, arXiv 2203.15556).

For each compute budget C, train several model sizes N of both kinds to *exactly* C training FLOPs:

    C = D * F(N),   F(N) = 6 N + 12 n_layers T d   (minimdm.flops: non-embedding N plus attention)

so a model with more parameters sees fewer tokens D. Then

1. per budget, fit a parabola of validation loss against log10 N and read off its vertex (N*(C), L*(C));
2. across budgets, fit power laws  L*(C) = a C^(-b)  and  N*(C) = k C^c  (straight lines in log-log);
3. the **compute multiplier** at a target loss L is C_MDM(L) / C_ARM(L), with C(L) = (a / L)^(1/b)
   from each kind's fitted L* line. SMDM reads ≈16x at its scale (arXiv 2410.18514, read from its IsoFLOP figure).

The sweep writes every finished run to a JSON file at once, so a sweep can be interrupted and resumed and a
notebook can plot the results without training again. ``python -m minimdm.scaling --preset cpu`` runs it.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from minimdm.arm import KINDS, check_kind, train_kind, validation_loss
from minimdm.flops import non_embedding_params, training_flops_per_token
from minimdm.recipes import TextRecipe, build_model, prepare_data


@dataclass
class SweepConfig:
    budgets: tuple[float, ...]  # training FLOPs per run
    sizes: tuple[tuple[int, int, int], ...]  # (n_layers, d_model, n_heads) of each model size
    base: TextRecipe  # data, sequence length, batch size, lr; n_layers/d_model/steps are set per run
    kinds: tuple[str, ...] = KINDS
    eval_windows: int = 64
    eval_draws: int = 32  # MC draws per window for the MDM's NELBO (at least 32 keeps its standard error small)
    warmup_fraction: float = 0.01  # SMDM: warmup max(1% of steps, ...), then cosine
    min_warmup: int = 5


SWEEPS = {
    # Seconds; a smoke run of the machinery only.
    "quick": SweepConfig(budgets=(1e8, 3e8), sizes=((1, 16, 2), (1, 24, 2), (1, 32, 2)),
                         base=TextRecipe(seq_len=32, batch_size=8, lr=2e-3), eval_windows=8, eval_draws=4),
    # 2 CPU cores: tiny budgets, 3 sizes (6k, 17k, 60k non-embedding parameters), 18 runs, ~13k steps in all.
    "cpu": SweepConfig(budgets=(3e10, 1e11, 3e11), sizes=((1, 16, 2), (1, 32, 2), (2, 48, 4)),
                       base=TextRecipe(seq_len=64, batch_size=32, lr=2e-3), eval_windows=64, eval_draws=32),
    # One GPU: 3 budgets x 5 sizes (0.24M-4.9M) x 2 kinds = 30 runs, T = 128. On one H200 the runs
    # summed to 28 min of training, the longest 233 s; --jobs 8 runs them side by side.
    # The corpus is the stdlib's source (~28M training characters): at these budgets Python's docs (0.42M) would
    # be seen up to 400 times and the ARM overfits (measured); here the most any run sees is ~6 epochs.
    "gpu": SweepConfig(budgets=(3e13, 1e14, 3e14),
                       sizes=((2, 96, 4), (3, 128, 4), (4, 160, 4), (4, 192, 4), (6, 256, 8)),
                       base=TextRecipe(corpus="python_stdlib", seq_len=128, batch_size=64, lr=1e-3),
                       eval_windows=256, eval_draws=32),
}


def sweep_for(preset: str) -> SweepConfig:
    if preset not in SWEEPS:
        raise ValueError(f"preset={preset!r}: allowed values are {sorted(SWEEPS)}")
    return SWEEPS[preset]


# --- FLOP accounting -------------------------------------------------------------------------------------------

def recipe_for_size(base: TextRecipe, size: tuple[int, int, int]) -> TextRecipe:
    n_layers, d_model, n_heads = size
    return replace(base, n_layers=n_layers, d_model=d_model, n_heads=n_heads)


def steps_for_budget(budget: float, flops_per_token: float, batch_size: int, seq_len: int) -> int:
    """Optimizer steps that spend ``budget`` FLOPs: D = C / F(N) tokens, in batches of B*T (at least 1)."""
    if budget <= 0:
        raise ValueError(f"budget={budget} must be > 0 FLOPs")
    return max(1, round(budget / (flops_per_token * batch_size * seq_len)))


def run_key(kind: str, budget: float, size) -> str:
    return f"{kind}|{budget:.3g}|{'x'.join(map(str, size))}"


# --- the sweep -------------------------------------------------------------------------------------------------

def load_runs(path) -> list[dict]:
    path = Path(path)
    return json.loads(path.read_text())["runs"] if path.exists() else []


def save_runs(path, runs: list[dict], meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    tmp.replace(path)


def train_one(sweep: SweepConfig, kind: str, budget: float, size, device="cpu", data=None) -> dict:
    """Train one (kind, budget, size) of the sweep to exactly ``budget`` FLOPs and evaluate it; one result dict."""
    tokenizer, stream = data or prepare_data(sweep.base)
    recipe = recipe_for_size(sweep.base, size)
    probe = build_model(recipe, tokenizer.vocab_size, causal=kind == "arm")
    flops_per_token = training_flops_per_token(probe, recipe.seq_len)
    steps = steps_for_budget(budget, flops_per_token, recipe.batch_size, recipe.seq_len)
    recipe = replace(recipe, steps=steps, warmup_steps=max(sweep.min_warmup, round(sweep.warmup_fraction * steps)))
    start = time.perf_counter()
    model, result = train_kind(recipe, kind, stream, tokenizer.vocab_size, device, progress=False)
    loss = validation_loss(kind, model, stream, sweep.eval_windows, sweep.eval_draws)
    return {"key": run_key(kind, budget, size), "kind": kind, "budget": budget, "n_layers": size[0],
            "d_model": size[1], "n_heads": size[2], "params": non_embedding_params(model),
            "flops_per_token": flops_per_token, "steps": steps, "tokens": steps * recipe.batch_size * recipe.seq_len,
            "loss": loss.mean, "loss_se": loss.stderr, "train_loss": result.history[-1]["loss"],
            "seconds": time.perf_counter() - start}


_worker_data = {}  # a worker process's corpus, prepared once and reused for every run it trains


def _train_one_job(job) -> dict:
    """A worker process's entry point (module level, so ``spawn`` can pickle it)."""
    base = job[0].base
    key = (base.corpus, base.tokenizer, base.seq_len)
    if key not in _worker_data:
        _worker_data[key] = prepare_data(base)
    return train_one(*job, data=_worker_data[key])


def run_sweep(sweep: SweepConfig, results_path=None, device="cpu", jobs: int = 1, log=print) -> list[dict]:
    """Train every (kind, budget, size) of the sweep once; return one dict per run.

    Runs already in ``results_path`` (same key) are kept and skipped, so an interrupted sweep resumes.
    ``jobs`` > 1 trains that many runs at once in worker processes: small models leave a GPU mostly idle, and
    every run is budgeted in FLOPs and seeded, so its result does not depend on what runs beside it.
    """
    for kind in sweep.kinds:
        check_kind(kind)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs} must be a positive integer")
    runs = load_runs(results_path) if results_path else []
    done = {run["key"] for run in runs}
    meta = {"corpus": sweep.base.corpus, "tokenizer": sweep.base.tokenizer, "seq_len": sweep.base.seq_len,
            "batch_size": sweep.base.batch_size, "lr": sweep.base.lr, "device": str(device),
            "python": platform.python_version(),  # the Python corpora depend on it
            "eval_windows": sweep.eval_windows, "eval_draws": sweep.eval_draws,
            "flops": "6 N_non-embedding + 12 n_layers T d per training token, charged alike to ARM and MDM"}
    if runs:  # resuming: the runs on file must have been made under the same settings as the new ones
        kept = json.loads(Path(results_path).read_text())["meta"]
        changed = [k for k in ("corpus", "tokenizer", "seq_len", "batch_size", "lr", "python", "eval_windows",
                               "eval_draws") if kept.get(k) != meta[k]]
        if changed:
            raise ValueError(f"results_path={str(results_path)!r} holds runs made with other settings "
                             f"({', '.join(f'{k}: {kept.get(k)!r} there, {meta[k]!r} now' for k in changed)}): "
                             "pass another path or delete the file")
    todo = [(sweep, kind, budget, size, device) for budget in sweep.budgets for size in sweep.sizes
            for kind in sweep.kinds if run_key(kind, budget, size) not in done]

    def record(run):  # keep every finished run at once, so an interrupted sweep loses at most the runs in flight
        runs.append(run)
        if results_path:
            save_runs(results_path, runs, meta)
        if log:
            log(f"{run['kind']} C={run['budget']:.0e} N={run['params']:>8,d} steps={run['steps']:>6d} "
                f"val={run['loss']:.4f}±{run['loss_se']:.4f} ({run['seconds']:.0f} s)")

    if jobs == 1:
        data = prepare_data(sweep.base)
        for job in todo:
            record(train_one(*job, data=data))
    else:
        import torch.multiprocessing as mp  # spawn: CUDA cannot be shared with forked children

        with mp.get_context("spawn").Pool(jobs) as pool:
            for run in pool.imap_unordered(_train_one_job, todo):
                record(run)
    return runs


# --- fits ------------------------------------------------------------------------------------------------------

@dataclass
class Optimum:
    budget: float
    params: float  # N*(C)
    loss: float  # L*(C)
    from_vertex: bool  # False: the sizes do not bracket the optimum, so the best measured point is used


def fit_parabola(params, losses) -> tuple[float, float, bool]:
    """Vertex of loss = A u^2 + B u + C0 with u = log10 N. Returns (N*, L*, from_vertex).

    The vertex is trusted only where the sizes bracket the optimum: the lowest measured loss has a larger one on
    each side. Otherwise (lowest loss at the smallest or largest size, a parabola opening downwards, or a vertex
    outside the measured range) the optimum may lie beyond the grid, and any vertex is the parabola's guess; then
    the best measured point stands in for the optimum and from_vertex is False.
    """
    u, losses = np.log10(np.asarray(params, dtype=float)), np.asarray(losses, dtype=float)
    if u.size < 3:
        raise ValueError(f"a parabola needs at least 3 model sizes per budget, got {u.size}")
    order = np.argsort(u)
    u, losses = u[order], losses[order]
    best = int(losses.argmin())
    curvature, slope, intercept = np.polyfit(u, losses, 2)
    if 0 < best < u.size - 1 and curvature > 0:
        u_star = -slope / (2 * curvature)  # d loss / du = 0
        if u[0] <= u_star <= u[-1]:
            return 10**u_star, float(np.polyval([curvature, slope, intercept], u_star)), True
    return 10 ** u[best], float(losses[best]), False


def fit_power_law(x, y) -> tuple[float, float]:
    """y = k x^e by least squares on log y = log k + e log x. Returns (k, e)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power law needs at least 2 points with positive x and y")
    exponent, log_k = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_k)), float(exponent)


@dataclass
class ScalingFit:
    kind: str
    optima: list[Optimum]
    loss_coef: float  # a in L* = a C^(-b)
    loss_exponent: float  # b (positive: loss falls with compute)
    params_coef: float  # k in N* = k C^c
    params_exponent: float  # c

    def loss_at(self, compute):
        return self.loss_coef * np.asarray(compute, dtype=float) ** (-self.loss_exponent)

    def compute_for(self, loss):
        """C(L) = (a / L)^(1/b): the compute at which the fitted L* line reaches ``loss``."""
        return (self.loss_coef / np.asarray(loss, dtype=float)) ** (1.0 / self.loss_exponent)


def fit_scaling(runs: list[dict], kind: str) -> ScalingFit:
    """Per-budget parabola optima, then the power laws of L* and N* against C, for one kind."""
    check_kind(kind)
    budgets = sorted({run["budget"] for run in runs if run["kind"] == kind})
    if len(budgets) < 2:
        raise ValueError(f"kind={kind!r} has runs at {len(budgets)} budget(s); a power law needs at least 2")
    optima = []
    for budget in budgets:
        points = sorted((run["params"], run["loss"]) for run in runs if run["kind"] == kind and run["budget"] == budget)
        params_star, loss_star, from_vertex = fit_parabola(*zip(*points))
        optima.append(Optimum(budget, params_star, loss_star, from_vertex))
    loss_coef, loss_slope = fit_power_law([o.budget for o in optima], [o.loss for o in optima])
    params_coef, params_exponent = fit_power_law([o.budget for o in optima], [o.params for o in optima])
    return ScalingFit(kind, optima, loss_coef, -loss_slope, params_coef, params_exponent)


def compute_multiplier(arm: ScalingFit, mdm: ScalingFit, loss: float) -> float:
    """C_MDM(L) / C_ARM(L): how much more compute the MDM's fitted line needs to reach loss L (SMDM: ≈16x)."""
    if loss <= 0:
        raise ValueError(f"loss={loss} must be > 0")
    return float(mdm.compute_for(loss) / arm.compute_for(loss))


def summary(runs: list[dict]) -> dict:
    """Both fits and the multiplier at the ARM's best L*, as plain numbers (for printing and JSON)."""
    fits = {kind: fit_scaling(runs, kind) for kind in KINDS}
    target = min(o.loss for o in fits["arm"].optima)
    return {"fits": {kind: asdict(fit) for kind, fit in fits.items()}, "target_loss": target,
            "compute_multiplier": compute_multiplier(fits["arm"], fits["mdm"], target)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(SWEEPS))
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/isoflop_<preset>.json)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    args = parser.parse_args(argv)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":  # tiny models gain nothing from a 2nd thread, and lose ~9x when other jobs share the cores
        torch.set_num_threads(1)
    out = args.out or f"bench/results/isoflop_{args.preset}.json"
    start = time.perf_counter()
    runs = run_sweep(sweep_for(args.preset), out, device, jobs=args.jobs)
    print(f"{len(runs)} runs in {out} ({time.perf_counter() - start:.0f} s this call)")
    result = summary(runs)
    for kind, fit in result["fits"].items():
        print(f"{kind}: L* = {fit['loss_coef']:.3g} C^-{fit['loss_exponent']:.3f}, "
              f"N* = {fit['params_coef']:.3g} C^{fit['params_exponent']:.3f}")
    print(f"compute multiplier at L = {result['target_loss']:.3f}: {result['compute_multiplier']:.1f}x")


if __name__ == "__main__":
    main()
