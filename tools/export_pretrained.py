"""Turn a trainer checkpoint into a shipped model: data/models/<name>/ and its hashes in minimdm/pretrained.py.

    python tools/export_pretrained.py runs/lab_char_mdm --name shakespeare-char \\
        --corpus "Tiny Shakespeare (nanoGPT's input.txt, 1,115,394 characters; last 10% held out)" \\
        --eval-corpus tinyshakespeare

The run directory holds what ``minimdm.train`` writes (``checkpoint.safetensors`` + ``config.json``), the
tokenizer (``tokenizer.json`` from ``CharTokenizer.save``, or ``--tokenizer task`` for the chat tasks' fixed
vocabulary), and ``metrics.json`` (validation NELBO with its standard error, the recipe, ...). The weights are
stored as float16 (half the bytes; the validation NELBO is re-measured with them when ``--eval-corpus`` is given)
and the model card README.md is written from those numbers. ``--hf-out DIR`` also writes the model as a Hugging Face
folder (``minimdm.hf.to_hugging_face``: AutoModelForMaskedLM / AutoTokenizer with trust_remote_code=True, and its
own model card).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from minimdm.chat import CHAT_SETTINGS_FILE  # noqa: E402
from minimdm.data.tasks import TaskTokenizer  # noqa: E402
from minimdm.nn import Transformer, TransformerConfig  # noqa: E402
from minimdm.pretrained import FILES, MODELS_DIR, load_tokenizer, sha256_of  # noqa: E402
from minimdm.train import CHECKPOINT_FILE, read_checkpoint  # noqa: E402

REGISTRY_FILE = REPO / "minimdm" / "pretrained.py"


def read_run(run_dir: Path) -> tuple[dict, dict, dict]:
    """(model state_dict, trainer state, config) of a run directory in either form:

    * a ``minimdm.train`` checkpoint: ``checkpoint.safetensors`` (model + optimizer) and ``config.json``;
    * a bare state_dict: ``model_fp16.safetensors`` or ``model.safetensors`` and ``config.json`` with
      ``{"model": TransformerConfig dict, "recipe": ...}`` (no trainer state: steps and seconds come from
      metrics.json).
    """
    if (run_dir / CHECKPOINT_FILE).exists():
        tensors, state, config = read_checkpoint(run_dir)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    else:
        found = [run_dir / f for f in ("model_fp16.safetensors", "model.safetensors") if (run_dir / f).exists()]
        if not found:
            raise FileNotFoundError(f"{run_dir} holds neither {CHECKPOINT_FILE} nor model(_fp16).safetensors")
        weights = load_file(str(found[0]))
        config = json.loads((run_dir / "config.json").read_text())
        state = {"step": None, "seconds": None, "tokens": None, "history": [], "evals": []}
    if config.get("model") is None:
        raise ValueError(f"{run_dir}/config.json holds no model config: only minimdm Transformers can be exported")
    return weights, state, config


def _first(mapping: dict, *keys, default=None):
    """The first of several spellings a metrics file may use for one number."""
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return default


def export(run_dir, name: str, corpus: str, out_root=MODELS_DIR, tokenizer: str = "file", eval_corpus: str | None = None,
           eval_windows: int = 256, eval_draws: int = 8, update_registry: bool = True, summary: str = "",
           measured_with: str | None = None) -> dict:
    """Write data/models/<name>/ from a trainer checkpoint; return {file: sha256}."""
    run_dir, out = Path(run_dir), Path(out_root) / name
    weights, state, config = read_run(run_dir)
    model = Transformer(TransformerConfig(**config["model"]))
    model.load_state_dict(weights)  # refuses a checkpoint that does not fit its own config
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    out.mkdir(parents=True, exist_ok=True)

    half = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(half, str(out / "model.safetensors"))
    if tokenizer == "task":
        (out / "tokenizer.json").write_text(json.dumps({"type": "task", "vocab": TaskTokenizer().vocab}))
    else:
        (out / "tokenizer.json").write_text((run_dir / "tokenizer.json").read_text())
    token_codec = load_tokenizer(out / "tokenizer.json")
    if token_codec.vocab_size != config["model"]["vocab_size"]:
        raise ValueError(f"tokenizer has {token_codec.vocab_size} tokens, the model {config['model']['vocab_size']}")

    nelbo = _first(metrics, "val_nelbo", "val_nelbo_nats_per_char", "validation_nelbo", "nelbo")
    nelbo_se = _first(metrics, "val_nelbo_se", "validation_nelbo_se", "nelbo_se", "nelbo_stderr", "val_nelbo_stderr")
    if isinstance(nelbo, dict):  # {"mean": ..., "stderr": ...}
        nelbo, nelbo_se = _first(nelbo, "mean", "value"), _first(nelbo, "stderr", "se")
    unit = metrics.get("unit", "nats per character" if "val_nelbo_nats_per_char" in metrics else "nats per token")
    validation = {"nelbo": nelbo, "se": nelbo_se, "unit": unit,
                  "measured_with": measured_with or "the trained weights, by the training run (metrics.json)"}
    if eval_corpus is not None:  # measure again with the float16 weights that actually ship
        from minimdm.data import TokenStream, load_corpus
        from minimdm.recipes import validation_nelbo

        shipped = Transformer(TransformerConfig(**config["model"]))
        shipped.load_state_dict({k: v.float() for k, v in half.items()})
        stream = TokenStream(token_codec.encode(load_corpus(eval_corpus)), config["model"]["max_len"])
        estimate = validation_nelbo(shipped.eval(), stream, eval_windows, eval_draws)
        validation.update(nelbo_float16=estimate.mean, se_float16=estimate.stderr, windows=eval_windows,
                          draws_per_window=eval_draws,
                          measured_with_float16=f"l-estimator on {eval_windows} held-out windows of "
                                                f"{config['model']['max_len']} tokens (last 10% of {eval_corpus})")

    chat_path = run_dir / CHAT_SETTINGS_FILE
    card = {
        "name": name,
        "model": config["model"],
        "mask_id": model.mask_id,
        "parameters": sum(p.numel() for p in model.parameters()),
        "non_embedding_parameters": model.num_parameters(),
        "weights": "float16 (loaded as float32)",
        "corpus": corpus,
        "recipe": _first(metrics, "recipe", default=config.get("recipe", config.get("train"))),
        "training": {"steps": _first(metrics, "steps", default=state["step"]),
                     "seconds": _first(metrics, "seconds", "train_seconds", default=state["seconds"]),
                     "tokens": _first(metrics, "tokens", default=state.get("tokens")),
                     "device": _first(metrics, "device", default=None)},
        "validation": validation,
        "chat": json.loads(chat_path.read_text()) if chat_path.exists() else None,
        "summary": summary,
    }
    (out / "config.json").write_text(json.dumps(card, indent=2))
    (out / "metrics.json").write_text(json.dumps({**metrics, "trainer": {
        "step": state["step"], "seconds": state["seconds"], "tokens": state["tokens"],
        "history": state["history"], "evals": state["evals"]}}, indent=1))
    hashes = {file: sha256_of(out / file) for file in FILES if file != "README.md"}
    (out / "README.md").write_text(model_card(card, hashes))
    hashes["README.md"] = sha256_of(out / "README.md")
    if update_registry:
        write_registry_entry(name, hashes)
    return hashes


def _number(value, digits=4):
    return "—" if value is None else f"{value:.{digits}f}"


def model_card(card: dict, hashes: dict) -> str:
    model, training, validation = card["model"], card["training"], card["validation"]
    lines = [
        f"# {card['name']}",
        "",
        card["summary"] or "A masked diffusion language model (LLaDA's loss, arXiv 2502.09992) trained with minimdm.",
        "",
        f"    from minimdm import load_pretrained\n    pretrained = load_pretrained(\"{card['name']}\")",
        "",
        "| | |", "|---|---|",
        f"| corpus | {card['corpus']} |",
        f"| network | bidirectional Transformer, {model['n_layers']} layers, d_model {model['d_model']}, "
        f"{model['n_heads']} heads, RoPE, context {model['max_len']}, vocabulary {model['vocab_size']} + mask |",
        f"| parameters | {card['parameters']:,} ({card['non_embedding_parameters']:,} without embeddings); "
        f"{card['weights']} |",
        f"| training | {training['steps']} steps, {_number(training['seconds'], 0)} s"
        f"{' on ' + training['device'] if training.get('device') else ''} |",
        f"| recipe | `{json.dumps(card['recipe'], sort_keys=True)}` |",
        f"| validation NELBO | {_number(validation['nelbo'])} ± {_number(validation['se'])} {validation['unit']} "
        f"({validation['measured_with']}) |",
    ]
    if "nelbo_float16" in validation:
        lines.append(f"| validation NELBO, shipped float16 weights | {_number(validation['nelbo_float16'])} ± "
                     f"{_number(validation['se_float16'])} {validation['unit']} ({validation['measured_with_float16']}) |")
    if card.get("chat"):
        lines.append(f"| chat settings | `{json.dumps(card['chat'], sort_keys=True)}` |")
    lines += ["", "NELBO is an upper bound on the negative log-likelihood (± one Monte Carlo standard error).", "",
              "sha256 (checked by `load_pretrained` against the registry in `minimdm/pretrained.py`):", ""]
    lines += [f"* `{file}`: `{digest}`" for file, digest in hashes.items()]
    return "\n".join(lines) + "\n"


def write_registry_entry(name: str, hashes: dict) -> None:
    """Rewrite the REGISTRY block of minimdm/pretrained.py with this model's hashes (others kept)."""
    from minimdm import pretrained

    registry = dict(pretrained.REGISTRY)
    registry[name] = hashes
    body = "REGISTRY: dict[str, dict[str, str]] = {\n" + "".join(
        f"    {model!r}: {{\n" + "".join(f"        {file!r}: {digest!r},\n" for file, digest in files.items()) + "    },\n"
        for model, files in sorted(registry.items())) + "}\n"
    text = REGISTRY_FILE.read_text()
    new = re.sub(r"(# BEGIN REGISTRY[^\n]*\n).*?(# END REGISTRY)", lambda m: m.group(1) + body + m.group(2), text,
                 flags=re.S)
    REGISTRY_FILE.write_text(new)
    pretrained.REGISTRY.clear()
    pretrained.REGISTRY.update(registry)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--name", required=True)
    parser.add_argument("--corpus", required=True, help="one line for the model card: which text, which split")
    parser.add_argument("--summary", default="", help="the model card's opening sentence")
    parser.add_argument("--tokenizer", choices=("file", "task"), default="file")
    parser.add_argument("--eval-corpus", default=None, help="re-measure the validation NELBO on this minimdm corpus")
    parser.add_argument("--eval-windows", type=int, default=256)
    parser.add_argument("--measured-with", default=None, help="how metrics.json's NELBO was measured (model card)")
    parser.add_argument("--out-root", default=str(MODELS_DIR))
    parser.add_argument("--hf-out", default=None, help="also save the exported model as a Hugging Face folder here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    hashes = export(args.run_dir, args.name, args.corpus, args.out_root, args.tokenizer, args.eval_corpus,
                    args.eval_windows, summary=args.summary, measured_with=args.measured_with)
    size = sum((Path(args.out_root) / args.name / f).stat().st_size for f in hashes)
    print(f"exported {args.name}: {size / 1e6:.2f} MB in {Path(args.out_root) / args.name}")
    for file, digest in hashes.items():
        print(f"  {file}: {digest}")
    if args.hf_out is not None:
        from minimdm.hf import to_hugging_face
        from minimdm.pretrained import load_pretrained

        to_hugging_face(load_pretrained(args.name, root=args.out_root), args.hf_out)
        print(f"Hugging Face folder: {args.hf_out}")


if __name__ == "__main__":
    main()
