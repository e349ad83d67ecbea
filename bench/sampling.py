"""RADD sampling speed: uncached vs cached tau-leaping vs ordered (AO-ARM) decoding, one model, across N.

    python bench/sampling.py                 # CUDA if present: L = 1024, N in 256..2048, batch 1 and 8, a ~5M model
    python bench/sampling.py --device cpu    # small: L = 64, N in 16..256 (a couple of minutes on 2 cores)
    python bench/sampling.py --checkpoint runs/radd   # a model saved by minimdm.train instead of a quick one

The cache reuses c_theta(x_t) while x_t is unchanged, so its expected NFE per sequence is N [1 - (1 - 1/N)^L]
(RADD, arXiv 2406.03736); the target is a wall-clock speed-up >= 0.8 x the NFE ratio at N = L = 1024 (1024/647).
Timings wrap each run in torch.cuda.synchronize(); the first run of each configuration is a warm-up. At batch 1
the cache skips whole network calls; at batch B it recomputes only the rows that reveal something, so a call
still happens at most steps, on fewer rows (which saves time only where the network is compute-bound).
Without --checkpoint the model is trained briefly on a Markov source (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import time

import torch

from minimdm.nn import Transformer, TransformerConfig
from minimdm.radd import expected_nfe, get_loss, ordered_sample, tau_leaping_sample
from minimdm.toys import MarkovChain
from minimdm.train import TrainConfig, load_model, train

SIZES = {  # device type -> (length, steps, batch sizes, layers, d_model, heads, train steps)
    "cuda": (1024, [256, 512, 1024, 2048], [1, 8], 6, 256, 8, 400),
    "cpu": (64, [16, 64, 256], [1, 4], 2, 64, 4, 100),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quick_model(vocab_size, length, layers, d_model, heads, train_steps, batch, device) -> Transformer:
    chain = MarkovChain(vocab_size=vocab_size, seed=0)
    model = Transformer(TransformerConfig(vocab_size=vocab_size, n_layers=layers, d_model=d_model, n_heads=heads, max_len=length))
    if train_steps:
        loss = get_loss("lambda_dce", model.mask_id)
        train(model, loss.training_loss, lambda step: chain.sample(batch, length),
              TrainConfig(steps=train_steps, lr=2e-3, warmup_steps=train_steps // 10, device=str(device), log_every=50))
    return model.to(device).eval()


def timed(run, device, repeats):
    """(seconds per run, last result): one warm-up run, then the mean of ``repeats`` synchronised runs."""
    run()
    seconds, result = 0.0, None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = run()
        synchronize(device)
        seconds += time.perf_counter() - start
    return seconds / repeats, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--length", type=int, help="sequence length L (default: 1024 on CUDA, 64 on CPU)")
    parser.add_argument("--steps", type=int, nargs="+", help="sampling steps N to compare")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="sequences sampled per run, one table each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=64, help="Markov source size for the quick model")
    parser.add_argument("--train-steps", type=int, help="training steps of the quick model (0: random weights)")
    parser.add_argument("--checkpoint", help="a minimdm.train checkpoint directory to load instead")
    parser.add_argument("--bf16", action="store_true", help="autocast the network to bfloat16 (CUDA)")
    args = parser.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    length, steps_list, batch_sizes, layers, d_model, heads, train_steps = SIZES["cuda" if device.type == "cuda" else "cpu"]
    length, steps_list, batch_sizes = args.length or length, args.steps or steps_list, args.batch_sizes or batch_sizes
    train_steps = train_steps if args.train_steps is None else args.train_steps
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_model(args.checkpoint, str(device)) if args.checkpoint else \
        quick_model(args.vocab_size, length, layers, d_model, heads, train_steps, 16, device)
    print(f"device {device} | torch {torch.__version__} | params {model.num_parameters():,} | L = {length} | "
          f"repeats {args.repeats}{' | bf16' if args.bf16 else ''}")
    return {batch: table(model, device, length, steps_list, batch, args.repeats, args.bf16) for batch in batch_sizes}


def table(model, device, length, steps_list, batch, repeats, bf16):
    """Time uncached, cached and ordered sampling at one batch size; print one row per (method, N)."""
    mask_id = model.mask_id

    def sampler(method, steps, seed=0):
        def run():
            generator = torch.Generator(device).manual_seed(seed)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
                if method == "ordered":
                    return ordered_sample(model, mask_id=mask_id, length=length, batch_size=batch, order="random",
                                          device=device, generator=generator, record_history=False)
                return tau_leaping_sample(model, steps=steps, mask_id=mask_id, length=length, batch_size=batch,
                                          cache=method == "cached", device=device, generator=generator, record_history=False)
        return run

    header = f"{'method':>9} {'N':>6} {'mean NFE':>9} {'formula':>8} {'seconds':>9} {'tokens/s':>10} {'speed-up':>9} {'NFE ratio':>10} {'same samples':>13}"
    print(f"\nbatch {batch}\n{header}")
    print("-" * len(header))
    rows = []
    for steps in steps_list:
        base_seconds, base = timed(sampler("uncached", steps), device, repeats)
        for method in ("uncached", "cached", "ordered"):
            if method == "ordered" and steps != steps_list[-1]:
                continue  # ordered decoding takes L calls whatever N: time it once
            seconds, result = (base_seconds, base) if method == "uncached" else timed(sampler(method, steps), device, repeats)
            formula = {"uncached": float(steps), "cached": expected_nfe(steps, length), "ordered": float(length)}[method]
            same = "-" if method == "ordered" else str(bool(torch.equal(result.tokens, base.tokens)))
            nfe_ratio = base.mean_nfe / result.mean_nfe
            rows.append((method, steps, result.mean_nfe, formula, seconds, batch * length / seconds, base_seconds / seconds, nfe_ratio))
            print(f"{method:>9} {steps if method != 'ordered' else '-':>6} {result.mean_nfe:9.1f} {formula:8.1f} {seconds:9.3f} "
                  f"{batch * length / seconds:10.0f} {base_seconds / seconds:9.2f} {nfe_ratio:10.2f} {same:>13}")
    at_l = [r for r in rows if r[0] == "cached" and r[1] == length]
    if at_l:
        _, _, _, _, _, _, speed_up, nfe_ratio = at_l[0]
        verdict = "meets" if speed_up >= 0.8 * nfe_ratio else "misses"
        print(f"batch {batch}, N = L = {length}: wall-clock speed-up {speed_up:.2f} vs NFE ratio {nfe_ratio:.2f} "
              f"({speed_up / nfe_ratio:.2f} of it; {verdict} the 0.8 target)")
    return rows


if __name__ == "__main__":
    main()
