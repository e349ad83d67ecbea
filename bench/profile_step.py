"""Where does one training step spend its GPU time? The minimdm network against the GPT-2-style reference.

    python bench/profile_step.py                 # batch 512, MDM and ARM, the nanoGPT shakespeare_char shape
    python bench/profile_step.py --batch 64

Both networks are compiled (``torch.compile``), trained in bf16 autocast with fused AdamW and gradient clipping, by
``bench/train_throughput.py``'s ``plain_step``. After 30 warm-up steps, 20 steps are timed on the wall clock and 10 are
recorded by ``torch.profiler``; every CUDA kernel's time is summed per step and sorted into matmuls, attention,
Triton kernels (what the compiler fused: norms, activations, RoPE, residual adds, casts) and the optimizer. When
the kernel time is close to the wall time the GPU is never idle, and launch-overhead levers (CUDA graphs, fewer host
syncs) have nothing left to win. Results: ``bench/results/train_profile_h100.txt``. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import collections
import time

import torch

import gpt2_reference
from minimdm.arm import loss_function
from train_throughput import SHAPES, build, plain_step, random_batches

MATMUL = ("gemm", "nvjet", "cutlass", "sm90_xmma", "ampere_bf16", "cublas")
ATTENTION = ("flash", "fmha", "attention")


def category(kernel: str) -> str:
    name = kernel.lower()
    if any(key in name for key in MATMUL):
        return "matmul"
    if any(key in name for key in ATTENTION):
        return "attention"
    if "triton" in name:
        return "triton (fused elementwise/norm)"
    if any(key in name for key in ("adam", "foreach", "multi_tensor")):
        return "optimizer"
    return "other"


def profile(model, loss_fn, batch_fn, top: int) -> None:
    plain = plain_step(model, loss_fn, torch.device("cuda"), compile_model=True)

    def step(i):
        plain(batch_fn(i))

    for i in range(30):
        step(i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(20):
        step(i)
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) / 20 * 1e3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(10):
            step(i)
        torch.cuda.synchronize()
    per_kernel, per_category = collections.Counter(), collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name] += event.device_time / 10 / 1e3  # microseconds over 10 steps -> ms per step
            per_category[category(event.name)] += event.device_time / 10 / 1e3
    print(f"{wall_ms:.2f} ms/step wall, {sum(per_category.values()):.2f} ms GPU kernels; "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in per_category.most_common()), flush=True)
    for name, ms in per_kernel.most_common(top):
        print(f"   {ms:6.3f} ms  {name[:150]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--kinds", nargs="+", choices=("mdm", "arm"), default=["mdm", "arm"])
    parser.add_argument("--top", type=int, default=14, help="how many kernels to list")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/profile_step.py profiles CUDA kernels: run it on a machine with a CUDA GPU")
    device = torch.device("cuda")
    n_layers, d_model, n_heads, seq_len, vocab, _ = SHAPES["shakespeare_char"]
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | shakespeare_char shape, "
          f"batch {args.batch}", flush=True)
    for kind in args.kinds:
        for side in ("minimdm", "gpt2"):
            if side == "minimdm":
                model, _, _ = build("shakespeare_char", device, kind)
                loss_fn = loss_function(kind, model)
            else:
                model, loss_fn, _ = gpt2_reference.build(kind, vocab, n_layers, d_model, n_heads, seq_len, device)
            torch._dynamo.reset()
            print(f"\n== {kind} batch {args.batch} {side}: ", end="")
            profile(model, loss_fn, random_batches(vocab, args.batch, seq_len, device), args.top)
            del model
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
