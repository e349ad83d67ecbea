"""The course's text recipe: a tiny MDM (or its ARM twin) on a character-level corpus, in three sizes.

Used by ``python -m minimdm train`` and by the notebooks, so the terminal and the lessons train the same model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from minimdm.data import TokenStream, get_tokenizer, load_corpus
from minimdm.distributed import current_world
from minimdm.mdm.denoiser import device_of
from minimdm.mdm.elbo import Estimate
from minimdm.mdm.likelihood import corpus_nelbo
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.nn import Transformer, TransformerConfig
from minimdm.presets import preset_name
from minimdm.train import CHECKPOINT_FILE, TrainConfig, TrainResult, prepare_checkpoint_dir, train

TOKENIZER_FILE = "tokenizer.json"  # beside the checkpoint: what `python -m minimdm sample` reads


@dataclass
class TextRecipe:
    corpus: str = "python_docs"
    tokenizer: str = "char"
    seq_len: int = 128
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    dropout: float = 0.0
    batch_size: int = 32
    steps: int = 700
    lr: float = 2e-3
    warmup_steps: int = 50
    eval_windows: int = 64  # validation windows for the NELBO
    eval_draws: int = 8  # l-estimator draws per window
    seed: int = 0
    autocast_residual: bool = False  # the residual stream in bf16 under autocast (TransformerConfig's field)


RECIPES = {
    # ~0.8M parameters. CPU: a couple of minutes on 2 cores. GPU: the nanoGPT shakespeare_char shape.
    "quick": TextRecipe(seq_len=32, n_layers=1, d_model=32, n_heads=2, batch_size=8, steps=20, warmup_steps=2,
                        eval_windows=8, eval_draws=2),
    "cpu": TextRecipe(),
    "gpu": TextRecipe(seq_len=256, n_layers=6, d_model=384, n_heads=6, dropout=0.1, batch_size=128, steps=5000,
                      lr=2e-3, warmup_steps=200, eval_windows=256, eval_draws=8),
}


def recipe_for(preset: str | None = None, **overrides) -> TextRecipe:
    preset = preset or preset_name()
    if preset not in RECIPES:
        raise ValueError(f"preset={preset!r}: allowed values are {sorted(RECIPES)}")
    return replace(RECIPES[preset], **overrides)


def prepare_data(recipe: TextRecipe, download: bool = False):
    text = load_corpus(recipe.corpus, download=download)
    tokenizer = get_tokenizer(recipe.tokenizer, text)
    return tokenizer, TokenStream(tokenizer.encode(text), recipe.seq_len)


def build_model(recipe: TextRecipe, vocab_size: int, causal: bool = False) -> Transformer:
    torch.manual_seed(recipe.seed)
    return Transformer(TransformerConfig(vocab_size=vocab_size, n_layers=recipe.n_layers, d_model=recipe.d_model,
                                         n_heads=recipe.n_heads, max_len=recipe.seq_len, causal=causal,
                                         dropout=recipe.dropout, autocast_residual=recipe.autocast_residual))


def save_tokenizer_beside(checkpoint_dir, tokenizer) -> None:
    """Write tokenizer.json into the checkpoint folder, refusing to replace another run's (that run's checkpoint
    would become unreadable)."""
    directory = Path(checkpoint_dir)
    path, tmp = directory / TOKENIZER_FILE, directory / f".{TOKENIZER_FILE}.tmp-{os.getpid()}"
    try:
        tokenizer.save(tmp)
        if path.exists() and (directory / CHECKPOINT_FILE).exists() and path.read_bytes() != tmp.read_bytes():
            raise ValueError(f"{directory} holds a checkpoint trained with another tokenizer (another corpus or "
                             "--tokenizer): pick another folder (CLI: --out) or delete it to start afresh")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def train_text_mdm(recipe: TextRecipe, device="cpu", checkpoint_dir=None, progress=True, compile=False,
                   download=False, max_seconds=None, checkpoint_every: int = 0):
    """Train the recipe's MDM with LLaDA's loss. Returns (model, tokenizer, stream, TrainResult).

    With a ``checkpoint_dir`` the tokenizer is saved there first, so that any checkpoint (``checkpoint_every``
    steps, or an interrupted run's) can be sampled from.
    """
    config = TrainConfig(steps=recipe.steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps, seed=recipe.seed,
                         device=str(device), checkpoint_dir=checkpoint_dir, progress=progress, compile=compile,
                         log_every=max(1, recipe.steps // 20), max_seconds=max_seconds,
                         checkpoint_every=checkpoint_every)
    writer = checkpoint_dir and current_world().is_main  # under torchrun, rank 0 writes
    if writer:
        prepare_checkpoint_dir(checkpoint_dir)  # a bad folder fails before the corpus is read
    tokenizer, stream = prepare_data(recipe, download)
    if writer:
        save_tokenizer_beside(checkpoint_dir, tokenizer)
    model = build_model(recipe, tokenizer.vocab_size)
    mask_id = model.mask_id
    result: TrainResult = train(model, lambda m, x: mdm_pretrain_loss(m, x, mask_id),
                                lambda step: stream.batch(recipe.batch_size), config)
    return model.eval(), tokenizer, stream, result


def validation_nelbo(model, stream: TokenStream, num_windows: int, draws: int, batch_size: int = 64,
                     seed: int = 0) -> Estimate:
    """NELBO in nats per token on held-out windows: the l-estimator, ``draws`` per window, with a standard error."""
    device = device_of(model)
    windows = stream.windows("val", num_windows).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    return corpus_nelbo(model, windows, model.mask_id, estimator="l", num_draws=draws, batch_size=batch_size,
                        generator=generator)


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)
