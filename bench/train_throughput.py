"""Training throughput of the minimdm trainer against a plain PyTorch loop, same model, same shapes, same run.

    python bench/train_throughput.py            # GPU: the nanoGPT shakespeare_char shape and a GPT-2-small shape
    python bench/train_throughput.py --shapes shakespeare_char --kinds arm mdm
    python bench/train_throughput.py --quick    # CPU smoke run at a tiny shape
    python bench/train_throughput.py --shapes shakespeare_char --kinds mdm --batches 512 \
        --columns other_mode --compile-mode max-autotune   # only the GPT-2-style loop and the last column

Both sides train the same ``minimdm.nn.Transformer`` (bidirectional with LLaDA's MDM loss, or causal with
next-token cross-entropy for ``--kinds arm``) on random token windows
already on the device, both compiled with ``torch.compile`` on CUDA (neither on CPU), both in bf16 autocast with
fused AdamW. The plain loop is the shortest loop that does the same work; that ratio is the trainer's overhead
(per-step reseeding, LR schedule, logging, clipping). The third column is what a user would write instead: a
nanoGPT-style GPT-2 network and loop of the same size in plain PyTorch (``bench/gpt2_reference.py``), and the
ratio after it compares the whole course stack (backbone and trainer) with it. Two more columns time the trainer
with ``TransformerConfig(autocast_residual=True)``, the residual stream in bf16 (on CUDA; the CPU runs without
autocast, so there it is the same model), and the last two with both that and another ``torch.compile``
mode (``--compile-mode``; default "reduce-overhead", which replays the step's kernels as CUDA graphs, against the
launch-bound small batch; "max-autotune-no-cudagraphs" tunes the matmuls instead). On the CPU nothing is compiled,
so there the last column is the trainer again. ``--columns`` times a subset of the trainer's columns (the GPT-2-style
loop always runs); a column left out prints as "-" (a slow compile mode then fits in one run).
"""
from __future__ import annotations

import argparse
import time

import torch

import gpt2_reference
from minimdm.arm import KINDS, loss_function
from minimdm.flops import non_embedding_params, peak_flops, training_flops_per_token
from minimdm.nn import Transformer, TransformerConfig
from minimdm.train import COMPILE_MODES, TrainConfig, make_optimizer, train

COLUMNS = ("reference", "minimdm", "bf16_residual", "other_mode")  # after the GPT-2-style loop, in print order
SHAPES = {  # name: (n_layers, d_model, n_heads, seq_len, vocab, batch sizes)
    "shakespeare_char": (6, 384, 6, 256, 65, (64, 512)),
    "gpt2_small": (12, 768, 12, 1024, 8192, (16,)),
    "tiny_cpu": (2, 64, 4, 64, 65, (16,)),
}


def build(shape, device, kind, autocast_residual=False):
    n_layers, d_model, n_heads, seq_len, vocab, _ = SHAPES[shape]
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=vocab, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                          max_len=seq_len, causal=kind == "arm", autocast_residual=autocast_residual))
    return model.to(device), seq_len, vocab


def random_batches(vocab, batch, seq_len, device):
    data = torch.randint(0, vocab, (1 << 20,), device=device)
    offsets = torch.arange(seq_len, device=device)

    def batch_fn(step):
        starts = torch.randint(0, data.numel() - seq_len, (batch, 1), device=device)
        return data[starts + offsets]

    return batch_fn


def plain_step(model, loss_fn, device, compile_model, steps=100):
    """One step of the plain loop as a function of the batch: forward, loss, backward, clip, fused AdamW."""
    optimizer = make_optimizer(model, TrainConfig(steps=steps, lr=1e-3, warmup_steps=10))
    forward = torch.compile(model) if compile_model else model
    use_amp = device.type == "cuda"

    def step(x0):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(forward, x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def reference_loop(model, loss_fn, batch_fn, steps, device, compile_model):
    """The plain loop (``plain_step`` over ``steps`` batches). Returns tokens/s of the timed half."""
    step_on = plain_step(model, loss_fn, device, compile_model, steps)
    timed_from, tokens, start = steps // 2, 0, None
    for step in range(steps):
        if step == timed_from:
            sync(device)
            start = time.perf_counter()
        x0 = batch_fn(step)
        step_on(x0)
        if step >= timed_from:
            tokens += x0.numel()
    sync(device)
    return tokens / (time.perf_counter() - start)


def minimdm_trainer(model, loss_fn, batch_fn, steps, device, compile_model, compile_mode="default"):
    """The course's trainer; its second logging window (after compilation) is the timed half."""
    cfg = TrainConfig(steps=steps, lr=1e-3, warmup_steps=10, log_every=steps // 2, compile=compile_model,
                      compile_mode=compile_mode if compile_model else "default", device=str(device), progress=False)
    result = train(model, loss_fn, batch_fn, cfg)
    return result.history[-1]["tokens_per_s"]


def cell(results, label, over=None):
    """A printed column: tokens/s of ``label``, or its ratio to ``over``; "-" where a column was left out."""
    if over is None:
        return f"{results[label]:11,.0f}" if label in results else f"{'-':>11s}"
    return f"{results[label] / results[over]:8.2f}" if label in results and over in results else f"{'-':>8s}"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny CPU shape, a few steps")
    parser.add_argument("--steps", type=int, default=None, help="steps per measurement (half are timed)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="default: both GPU shapes")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["mdm"], help="which losses to time")
    parser.add_argument("--batches", nargs="+", type=int, help="default: the shape's batch sizes")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="reduce-overhead",
                        help="torch.compile mode of the last column (bf16 residual stream too)")
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS),
                        help="which of the trainer's columns to time (default: all); the GPT-2-style loop always runs")
    args = parser.parse_args()
    if args.batches and min(args.batches) < 1:
        parser.error(f"--batches {' '.join(map(str, args.batches))}: batch sizes must be positive integers")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    shapes = args.shapes or (["tiny_cpu"] if args.quick or device.type == "cpu" else ["shakespeare_char", "gpt2_small"])
    steps = args.steps or (20 if device.type == "cpu" else 200)
    compile_model = device.type == "cuda"
    peak = peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name} | torch {torch.__version__} | compiled: {compile_model} | {steps} steps, last {steps // 2} timed")
    print(f"{'shape':18s} {'kind':>4s} {'batch':>5s} {'params':>8s} {'plain loop':>11s} {'GPT-2-style':>11s} "
          f"{'minimdm':>11s} {'vs plain':>8s} {'vs GPT-2':>8s} {'MFU':>6s} {'bf16 resid.':>11s} {'vs GPT-2':>8s} "
          f"{'+ ' + args.compile_mode[:9]:>11s} {'vs GPT-2':>8s}  "
          "(tokens/s; GPT-2-style params)")
    for shape in shapes:
        for batch, kind in [(batch, kind) for batch in (args.batches or SHAPES[shape][5]) for kind in args.kinds]:
            n_layers, d_model, n_heads, seq_len, vocab, _ = SHAPES[shape]
            results = {}
            gpt2, gpt2_loss, gpt2_params = gpt2_reference.build(kind, vocab, n_layers, d_model, n_heads, seq_len, device)
            results["gpt2"] = reference_loop(gpt2, gpt2_loss, random_batches(vocab, batch, seq_len, device), steps,
                                             device, compile_model)
            del gpt2
            variants = (("reference", reference_loop, False, {}), ("minimdm", minimdm_trainer, False, {}),
                        ("bf16_residual", minimdm_trainer, True, {}),
                        ("other_mode", minimdm_trainer, True, {"compile_mode": args.compile_mode}))
            for label, runner, bf16_residual, options in (v for v in variants if v[0] in args.columns):
                model, seq_len, vocab = build(shape, device, kind, bf16_residual)
                results[label] = runner(model, loss_function(kind, model), random_batches(vocab, batch, seq_len, device),
                                        steps, device, compile_model, **options)
                flops, params = training_flops_per_token(model, seq_len), non_embedding_params(model)
                del model
                torch._dynamo.reset()  # each variant compiles afresh: no recompile limit, no CUDA-graph pool left over
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            mfu = f"{results['minimdm'] * flops / peak:6.1%}" if peak and "minimdm" in results else "   n/a"
            print(f"{shape:18s} {kind:>4s} {batch:5d} {params / 1e6:7.1f}M {cell(results, 'reference')} "
                  f"{cell(results, 'gpt2')} {cell(results, 'minimdm')} {cell(results, 'minimdm', 'reference')} "
                  f"{cell(results, 'minimdm', 'gpt2')} {mfu} {cell(results, 'bf16_residual')} "
                  f"{cell(results, 'bf16_residual', 'gpt2')} {cell(results, 'other_mode')} "
                  f"{cell(results, 'other_mode', 'gpt2')}  ({gpt2_params / 1e6:.1f}M)")

if __name__ == "__main__":
    main()
