"""Does a compiled model give the same gradients as the eager one through notebook 07's training stages?

    python bench/compile_stages.py                 # CUDA if present: the trainer's guard option on
    python bench/compile_stages.py --unguarded     # torch.compile's default guards, to see the stale graph

Notebook 07 trains one model object in stages that freeze and unfreeze parts of it (text: the LM; alignment: the
connector; tuning: everything but the classifier head), with a fresh ``torch.compile`` per stage, as ``train`` does.
For each stage this compares the loss and the gradients of the eager and the compiled model on the same batches
(bf16 autocast on CUDA): "params with grad" must agree, and the gradients differ only by rounding (~3e-3 in bf16).
With torch 2.11's default guards the tuning stage reran the alignment graph: 4 parameters got a gradient instead
of 37 (bench/results/vlm_repeats_h100.txt, wave 7).
"""
from __future__ import annotations

import argparse
import contextlib

import torch

from minimdm.presets import default_device
from minimdm.train import _guard_every_parameter
from minimdm.vlm.dialogues import (DialogueTokenizer, batch_sampler, encode_dialogues, load_digit_images,
                                   make_dialogues, text_dialogues)
from minimdm.vlm.loss import mdm_dialogue_loss
from minimdm.vlm.stages import RecipeConfig, build_model, pretrain_encoder, train_only


def loss_and_grads(net, model, batch, device, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same masks for both
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = mdm_dialogue_loss(net, batch)
    loss.backward()
    return loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unguarded", action="store_true", help="leave torch.compile's guards at their default")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    device = default_device()
    recipe = RecipeConfig(d_model=128, n_layers=4, n_heads=4, batch_size=args.batch_size, encoder_steps=100,
                          device=str(device))
    tokenizer, data = DialogueTokenizer(), load_digit_images()
    pools = {"text": (encode_dialogues(tokenizer, text_dialogues(4000, seed=0)), None),
             "images": (encode_dialogues(tokenizer, make_dialogues(data, data.train_index, 4000, seed=1)), data)}
    encoder, _ = pretrain_encoder(data, recipe, 0)
    model = build_model(encoder, tokenizer, recipe, "bidirectional", 0)
    print(f"torch {torch.__version__}, {device}, guards {'default' if args.unguarded else 'of the trainer'}")
    print("stage      | loss eager | loss compiled | params with grad (eager / compiled) | worst relative grad gap")
    worst_gap, missing_any = 0.0, False
    for stage in ("text", "alignment", "tuning", "alignment", "tuning"):
        train_only(model, stage)
        compiled = torch.compile(model)  # a fresh wrapper per stage, as train() makes one per call
        pool, images = pools["text" if stage == "text" else "images"]
        sample = batch_sampler(pool, images, args.batch_size)
        guards = contextlib.nullcontext() if args.unguarded else _guard_every_parameter(True)
        with guards:
            for step in range(2):
                torch.manual_seed(step)
                batch = [x.to(device) for x in sample(step)]
                loss_eager, grads_eager = loss_and_grads(model, model, batch, device, step)
                loss_compiled, grads_compiled = loss_and_grads(compiled, model, batch, device, step)
                shared = [n for n in grads_eager if n in grads_compiled]
                gap = max(((grads_eager[n] - grads_compiled[n]).norm() / grads_eager[n].norm().clamp_min(1e-12)).item()
                          for n in shared)
                worst_gap, missing_any = max(worst_gap, gap), missing_any or len(shared) < len(grads_eager)
                print(f"{stage:10s} | {loss_eager:10.5f} | {loss_compiled:13.5f} | "
                      f"{len(grads_eager):>16d} / {len(grads_compiled):<18d} | {gap:.2e}")
    verdict = "a stage reran a stale graph" if missing_any else "same gradients up to rounding"
    print(f"{verdict}; worst relative gradient gap {worst_gap:.2e}")


if __name__ == "__main__":
    main()
