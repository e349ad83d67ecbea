"""Small trained models that ship with the course, loaded with one call and checked against their hashes.

    from minimdm import load_pretrained
    shakespeare = load_pretrained("shakespeare-char")   # a character MDM that writes Shakespeare-like English
    shakespeare.model, shakespeare.tokenizer, shakespeare.card

Each model lives in ``data/models/<name>/``: ``model.safetensors`` (float16 weights), ``config.json`` (the
Transformer's config, the recipe and the measured numbers), ``tokenizer.json``, ``metrics.json`` (training
curves and validation numbers) and ``README.md`` (the model card). The sha256 of every file is recorded in
``REGISTRY`` below (written by ``tools/export_pretrained.py``), so a missing or altered file is refused with a
one-line error instead of loading silently wrong weights.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
FILES = ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "README.md")

# BEGIN REGISTRY (written by tools/export_pretrained.py; name -> {file: sha256})
REGISTRY: dict[str, dict[str, str]] = {
    'llada-sft-tasks': {
        'model.safetensors': '27b1bfcb4e3b021e665ba15c4721d17f50d14cb0622eb6cb3601b1485ca36343',
        'config.json': '0a00ea8fb4bda9d41e41b6e6af89ca7d77bf186de08f2652e5df0855c8eb0b37',
        'tokenizer.json': '29d4f10631092aaf787bdb4714ada7a287457ba4dd26eae265f8e93d58c28c35',
        'metrics.json': '6cd4df5c67bb5c2a1372b28de0466e5619478cc4337447a2591ea4d95d17e85b',
        'README.md': 'b994aeb24b96e6f9c6be8e78c3958416dc8e01ad4c0180b7a00dbded318c466c',
    },
    'shakespeare-char': {
        'model.safetensors': '777f4cfa84877a381a7818eddba69fbf1018b95c21771154b9fbe852bae0b903',
        'config.json': '885c92b5bfcea8dc1c24f7e8713efc59839e458442f55b5fe28009983b2a8b0c',
        'tokenizer.json': 'ad9442287b9f6797a071a92171034b3976687c68b2e4e515965792adf5f8d0cb',
        'metrics.json': '92902c0e67f586b8248019e3194c5febb369e82920434f6d491f5fbb380db8a4',
        'README.md': '9e33c3edd38d92e91572255a55d35812afe797fe900d265d76b31cbcda7a353a',
    },
}
# END REGISTRY


class PretrainedError(ValueError):
    """A shipped model is unknown, incomplete or altered (the message says which file and what to do)."""


@dataclass
class Pretrained:
    name: str
    model: torch.nn.Module  # a minimdm Transformer in eval mode, float32
    tokenizer: object  # CharTokenizer or TaskTokenizer: encode(str) -> ids, decode(ids) -> str
    card: dict  # config.json: model config, corpus, recipe, training steps and seconds, validation NELBO
    metrics: dict  # metrics.json: the training run's histories and evaluations
    directory: Path

    @property
    def mask_id(self) -> int:
        return self.model.mask_id

    def token_text(self, token_id: int) -> str:
        """How one token id reads in a widget: its character, or a short label for a special token."""
        vocab = getattr(self.tokenizer, "vocab", None)
        if vocab is not None:  # the chat tokenizer: special tokens as short labels
            return SHORT_LABELS.get(vocab[token_id], vocab[token_id]) if 0 <= token_id < len(vocab) else ""
        return self.tokenizer.decode([token_id])


SHORT_LABELS = {"<pad>": "_", "<bos>": "B", "<eos>": "E", "<eot>": "T", "<user>": "U", "<assistant>": "A",
                "<system>": "S"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def available() -> list[str]:
    """Names of the registered models whose files are all present (hashes are checked on loading)."""
    return [name for name in REGISTRY if all((MODELS_DIR / name / f).exists() for f in REGISTRY[name])]


def verify(name: str, root: str | Path | None = None) -> Path:
    """The model's directory, after checking every file against the registry; PretrainedError otherwise."""
    if name not in REGISTRY:
        raise PretrainedError(f"name={name!r} is not a shipped model: allowed names are {sorted(REGISTRY)}")
    directory = Path(root if root is not None else MODELS_DIR) / name
    for file, expected in REGISTRY[name].items():
        path = directory / file
        if not path.exists():
            raise PretrainedError(f"{path} is missing: restore it (git checkout -- {path}) or train the model from "
                                  "scratch (TRAIN_FROM_SCRATCH = True in the notebook)")
        actual = sha256_of(path)
        if actual != expected:
            raise PretrainedError(f"{path} was altered (sha256 {actual[:12]}..., expected {expected[:12]}...): "
                                  f"restore it (git checkout -- {path}) or re-export the model")
    return directory


def load_tokenizer(path: Path):
    """The tokenizer a model was trained with: a character vocabulary, or the chat tasks' fixed vocabulary."""
    from minimdm.data.tasks import TaskTokenizer
    from minimdm.data.tokenizers import CharTokenizer

    spec = json.loads(Path(path).read_text())
    if spec.get("type") == "char":
        return CharTokenizer(spec["chars"])
    if spec.get("type") == "task":
        tokenizer = TaskTokenizer()
        if tokenizer.vocab != spec["vocab"]:
            raise PretrainedError(f"{path}: the chat vocabulary in minimdm.data.tasks has changed since this model "
                                  "was exported; re-export it")
        return tokenizer
    raise PretrainedError(f"{path}: unknown tokenizer type {spec.get('type')!r}; allowed: 'char', 'task'")


def load_pretrained(name: str, device: str | torch.device = "cpu", root: str | Path | None = None) -> Pretrained:
    """Load a shipped model by name (see ``available()``), verified file by file against its sha256.

    ``root`` replaces ``data/models`` (the hashes still come from the registry).
    """
    from minimdm.nn import Transformer, TransformerConfig

    directory = verify(name, root)
    card = json.loads((directory / "config.json").read_text())
    model = Transformer(TransformerConfig(**card["model"]))
    state = {key: value.float() for key, value in load_file(str(directory / "model.safetensors")).items()}
    model.load_state_dict(state)
    return Pretrained(name=name, model=model.to(device).eval(), tokenizer=load_tokenizer(directory / "tokenizer.json"),
                      card=card, metrics=json.loads((directory / "metrics.json").read_text()), directory=directory)
