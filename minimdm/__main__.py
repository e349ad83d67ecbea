"""Command line: ``python -m minimdm train | sample`` (``--help`` on each).

A mistake in the input (a bad option value, a missing or damaged file, a device this machine lacks) prints one
line naming it and exits with status 2; the checks themselves live in the functions the commands call.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from minimdm.data import BPETokenizer, CharTokenizer
from minimdm.distributed import current_world
from minimdm.mdm.denoiser import device_of
from minimdm.mdm.sampler import REMASKING, generate
from minimdm.presets import PRESETS, preset_name
from minimdm.recipes import TOKENIZER_FILE, TextRecipe, nats_to_bits, recipe_for, train_text_mdm, validation_nelbo
from minimdm.train import CHECKPOINT_FILE, TrainingInterrupted, load_model, resolve_device

USAGE_ERROR = 2  # argparse's status for a bad command line


def load_tokenizer(directory: Path):
    path = directory / TOKENIZER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: sample from a folder written by `python -m minimdm train`")
    try:
        data = json.loads(path.read_text())
        return CharTokenizer(data["chars"]) if data.get("type") == "char" else BPETokenizer.load(path)
    except Exception as error:  # json, a missing key, or the tokenizers library's own errors
        raise ValueError(f"{path} is damaged ({error}): copy it from the run that trained the model") from error


def print_samples(model, tokenizer, stream, count: int, gen_length: int, steps: int, remasking: str,
                  temperature: float, prompt_length: int = 16, seed: int = 0) -> None:
    device = device_of(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    prompts = stream.windows("val", count)[:, :prompt_length].to(device)
    result = generate(model, prompts, gen_length=gen_length, steps=steps, mask_id=model.mask_id,
                      remasking=remasking, temperature=temperature, generator=generator, record_history=False)
    for row in range(count):
        prompt = tokenizer.decode(prompts[row].tolist())
        text = tokenizer.decode(result.generated[row].tolist())
        print(f"--- sample {row + 1} (prompt in brackets) ---\n[{prompt}]{text}")


def cmd_train(args) -> None:
    overrides = {k: v for k, v in {"corpus": args.corpus, "tokenizer": args.tokenizer, "steps": args.steps}.items()
                 if v is not None}
    recipe: TextRecipe = recipe_for(args.preset, **overrides)
    device = resolve_device(args.device)
    world = current_world()  # under torchrun: one process per GPU, and rank 0 alone prints
    processes = f" | {world.size} processes (torchrun)" if world.size > 1 else ""
    say = print if world.is_main else (lambda *args, **kwargs: None)
    say(f"minimdm train | preset {args.preset or preset_name()} | device {device}{processes} | corpus {recipe.corpus}")
    if (Path(args.out) / CHECKPOINT_FILE).exists():
        say(f"resuming from the checkpoint in {args.out} (delete that folder, or pass another --out, to start afresh)")
    try:  # a checkpoint every tenth of the run (and on Ctrl-C): an interrupted run resumes where it stopped
        model, tokenizer, stream, result = train_text_mdm(recipe, device=device, checkpoint_dir=args.out,
                                                          compile=args.compile, download=args.download,
                                                          checkpoint_every=max(1, recipe.steps // 10))
    except TrainingInterrupted as stop:
        say(f"interrupted: step {stop.step} saved in {args.out}; run the same command again to resume",
            file=sys.stderr)
        raise SystemExit(130) from None  # the shell's status for Ctrl-C
    if not world.is_main:
        return  # rank 0 evaluates and samples
    params = model.num_parameters()
    # result.seconds is training time, summed over resumed runs (evaluation and checkpoints excluded)
    print(f"trained {result.step} steps in {result.seconds:.0f} s ({result.tokens_per_s:,.0f} tokens/s), "
          f"{params / 1e6:.2f}M non-embedding parameters; checkpoint in {args.out}")
    nelbo = validation_nelbo(model, stream, recipe.eval_windows, recipe.eval_draws)
    unit = "char" if recipe.tokenizer == "char" else "token"
    print(f"validation NELBO: {nelbo.mean:.3f} ± {nelbo.stderr:.3f} nats/{unit} = "
          f"{nats_to_bits(nelbo.mean):.3f} ± {nats_to_bits(nelbo.stderr):.3f} bits/{unit} "
          f"(l-estimator, {recipe.eval_windows} windows x {recipe.eval_draws} draws)")
    if args.samples < 1:
        return
    gen_length = min(64, recipe.seq_len // 2)
    # random remasking: a small base model's most confident guess is a space, so low-confidence floods (notebook 01)
    print_samples(model, tokenizer, stream, args.samples, gen_length, gen_length, "random", 0.8,
                  prompt_length=min(16, recipe.seq_len - gen_length))


def cmd_sample(args) -> None:
    from minimdm.chat import chat_from_checkpoint, chat_with
    from minimdm.pretrained import load_pretrained

    if not args.chat and args.num < 1:
        raise ValueError(f"--num={args.num} must be at least 1")
    device = resolve_device(args.device)
    if args.pretrained is not None:  # a model shipped with the course, instead of a training checkpoint
        shipped = load_pretrained(args.pretrained, device=device)
        if args.chat:
            chat_with(shipped.model, shipped.card.get("chat"), where=f"the shipped model {args.pretrained!r}")
            return
        model, tokenizer = shipped.model, shipped.tokenizer
    else:
        directory = Path(args.checkpoint)
        if args.chat:  # an interactive chat with a model fine-tuned on minimdm.data.tasks (notebook 05)
            chat_from_checkpoint(directory, device=str(device))
            return
        model, tokenizer = load_model(directory, device=str(device)), load_tokenizer(directory)
    prompt_ids = tokenizer.encode(args.prompt) if args.prompt else []
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device).reshape(1, -1).repeat(args.num, 1)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    steps = args.gen_length if args.steps is None else args.steps
    result = generate(model, prompt, gen_length=args.gen_length, steps=steps,
                      block_length=args.block_length, mask_id=model.mask_id, remasking=args.remasking,
                      temperature=args.temperature, cfg_scale=args.cfg_scale, generator=generator,
                      record_history=False)
    if len(prompt_ids) + args.gen_length > model.config.max_len:  # after generate's checks: errors stay one line
        print(f"note: prompt ({len(prompt_ids)}) + gen_length ({args.gen_length}) exceeds the training length "
              f"{model.config.max_len}; RoPE extrapolates, quality may drop", file=sys.stderr)
    for row in range(args.num):
        print(f"--- sample {row + 1} ---\n{args.prompt}{tokenizer.decode(result.generated[row].tolist())}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimdm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a tiny character MDM, report its NELBO and print samples")
    train.add_argument("--preset", choices=PRESETS, default=None, help="size (default: quick if MINIMDM_QUICK=1, else gpu/cpu by device)")
    train.add_argument("--corpus", default=None, help="python_docs (default), tinyshakespeare, a text file, or hf:NAME[:SPLIT]")
    train.add_argument("--tokenizer", choices=("char", "bpe"), default=None)
    train.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    train.add_argument("--out", default="runs/mdm", help="checkpoint directory, saved every tenth of the run and on Ctrl-C; the same command resumes from it")
    train.add_argument("--device", default="auto")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on GPU)")
    train.add_argument("--download", action="store_true", help="allow downloading tinyshakespeare (checked by sha256)")
    train.add_argument("--samples", type=int, default=3, help="how many samples to print after training")
    train.set_defaults(func=cmd_train)

    sample = sub.add_parser("sample", help="sample from a trained checkpoint")
    sample.add_argument("--checkpoint", default="runs/mdm")
    sample.add_argument("--pretrained", default=None, metavar="NAME",
                        help="a model shipped with the course instead of --checkpoint, e.g. shakespeare-char or "
                             "llada-sft-tasks (minimdm.pretrained.available() lists them)")
    sample.add_argument("--prompt", default="")
    sample.add_argument("--gen-length", type=int, default=64)
    sample.add_argument("--steps", type=int, default=None, help="default: gen_length (one token per step)")
    sample.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block size (default: gen_length)")
    sample.add_argument("--remasking", choices=REMASKING, default="random",
                        help="random (default; faithful to the model) or low_confidence (LLaDA's; floods small models)")
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--cfg-scale", type=float, default=0.0)
    sample.add_argument("--num", type=int, default=3)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="auto")
    sample.add_argument("--chat", action="store_true", help="interactive chat with a fine-tuned checkpoint (notebook 05)")
    sample.set_defaults(func=cmd_sample)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:  # the user's input: one line, no traceback
        message = " ".join(str(error).split())
        print(f"python -m minimdm {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


if __name__ == "__main__":
    main()
