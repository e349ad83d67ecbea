"""Train the character MDM on Tiny Shakespeare that the unmasking lab ships (one GPU, about four minutes).

    python tools/train_lab_char_mdm.py --out runs/lab_char_mdm            # CUDA: the shipped model
    python tools/train_lab_char_mdm.py --out runs/lab_quick --quick       # CPU smoke run in seconds

Both read Tiny Shakespeare from ``data/cache/tinyshakespeare.txt``: copy it there, or add ``--download`` when online.

Writes into ``--out``: ``model_fp16.safetensors`` (the network's weights in float16, what ships), ``config.json``
(the model and training settings), ``tokenizer.json`` (the character vocabulary), ``metrics.json`` (validation
NELBO with its standard error, steps, training seconds) and ``samples.txt`` (a few unconditional samples).
``tools/export_pretrained.py`` turns that folder into the shipped form under ``data/models/``.

The shape (6 layers, d 256, 4.8M parameters) is chosen for the lab, not for the best loss: a 64-token answer in
32 steps must sample in well under a second on a laptop CPU. Validation NELBO is measured with the weights
rounded to float16 as they ship, on every validation window (the l-estimator, 8 draws each).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from minimdm.data import load_corpus
from minimdm.mdm.sampler import generate
from minimdm.recipes import TextRecipe, train_text_mdm, validation_nelbo

LAB_RECIPE = TextRecipe(corpus="tinyshakespeare", seq_len=256, n_layers=6, d_model=256, n_heads=4, dropout=0.1,
                        batch_size=256, steps=14000, lr=2e-3, warmup_steps=200, eval_windows=10_000, eval_draws=8)
QUICK_RECIPE = TextRecipe(corpus="tinyshakespeare", seq_len=64, n_layers=2, d_model=64, n_heads=2, batch_size=16,
                          steps=30, warmup_steps=3, eval_windows=16, eval_draws=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny shapes on the CPU, seconds")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="training-time budget (default 240)")
    parser.add_argument("--download", action="store_true",
                        help="fetch Tiny Shakespeare into data/cache (checked by sha256) if it is not there")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out} is not empty: choose a new folder")
    recipe = QUICK_RECIPE if args.quick else LAB_RECIPE
    load_corpus(recipe.corpus, download=args.download)  # fills the data cache, or says what to do
    device = "cpu" if args.quick else "cuda"
    model, tokenizer, stream, result = train_text_mdm(recipe, device=device, compile=not args.quick,
                                                      progress=False, max_seconds=args.max_seconds)
    model = model.half().float()  # evaluate what ships: weights rounded to float16, computed in float32
    nelbo = validation_nelbo(model, stream, recipe.eval_windows, recipe.eval_draws, batch_size=128)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu", torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / "model_fp16.safetensors"))
    (out / "config.json").write_text(json.dumps({"model": model.config.to_dict(), "recipe": asdict(recipe)}, indent=2))
    tokenizer.save(out / "tokenizer.json")
    metrics = {"val_nelbo_nats_per_char": nelbo.mean, "val_nelbo_se": nelbo.stderr,
               "val_windows": int(stream.windows("val").shape[0]), "steps": result.step,
               "train_seconds": result.seconds, "tokens": result.tokens,
               "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    lines = []
    for temperature in (0.0, 1.0):
        for remasking in ("low_confidence", "random"):
            sample = generate(model, gen_length=recipe.seq_len, steps=recipe.seq_len, mask_id=model.mask_id,
                              remasking=remasking, temperature=temperature, batch_size=2, record_history=False,
                              generator=torch.Generator(device=device).manual_seed(0), device=torch.device(device))
            for row in sample.generated.tolist():
                lines.append(f"--- {remasking}, temperature {temperature}\n{tokenizer.decode(row)}\n")
    (out / "samples.txt").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
