"""LLaDA-V's training recipe, shrunk (arXiv 2505.16933, its training strategy), every stage run by ``minimdm.train.train``.

The numbers are the course's: stages 0 and 1 stand in for the pretrained models LLaDA-V starts from, stages 2 and 3
are the paper's stages 1 and 2, and the paper's stage 3 (multimodal reasoning enhancement) is left out.

0. The vision encoder is pretrained as a digit classifier, then frozen until stage 3 (SigLIP arrives pretrained).
1. The language model is trained on text-only dialogues (LLaDA-V starts from LLaDA-8B-Instruct; the AR control
   from LLaMA3-8B-Instruct): it learns the chat format, parity and addition from captions written as text.
2. Language-image alignment: only the MLP connector trains, on "describe it" captions of the images.
3. Visual instruction tuning: everything trains on the visual dialogues, the encoder at a lower learning rate
   (LLaDA-V: 2e-6 for the vision tower against 1e-5 for the rest).

``train`` gives every parameter the same learning rate, and Adam's step does not change when a gradient is scaled,
so the lower rate is obtained by a parameter multiplier: the encoder's weights are stored as W' = W / s and used as
W = s W'. Adam moves W' by about lr per step, hence W by about s lr: the encoder's gradient steps are s times
smaller. AdamW's decoupled weight decay is not scaled: it multiplies W', hence W, by 1 - lr * weight_decay each step
whatever s is (LLaDA-V's separate parameter group would scale the decay too).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from minimdm.nn import Transformer, TransformerConfig
from minimdm.train import TrainConfig, TrainResult, train
from minimdm.vlm.dialogues import (DialogueTokenizer, DigitImages, EncodedDialogues, batch_sampler,
                                   encode_dialogues, make_dialogue, text_dialogues)
from minimdm.vlm.encoder import DigitEncoder, classifier_loss
from minimdm.vlm.loss import ar_dialogue_loss, mdm_dialogue_loss
from minimdm.vlm.model import ATTENTION, Connector, VisionLanguageModel


@dataclass
class RecipeConfig:
    """Sizes and steps of every stage; the notebook picks one per preset."""

    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 4
    encoder_width: int = 32
    batch_size: int = 64
    encoder_steps: int = 200
    text_steps: int = 600
    align_steps: int = 150
    tune_steps: int = 600
    encoder_lr: float = 1e-2
    lr: float = 2e-3
    align_lr: float = 1e-3
    tune_lr: float = 1e-3
    encoder_lr_scale: float = 0.2
    text_dialogues: int = 20000
    device: str = "cpu"
    amp: bool = True  # bf16 autocast on CUDA in every stage (the trainer's default)
    compile: bool = False  # torch.compile in every stage; each stage compiles afresh, which in notebook 07 on an H100
    # cost more time than the faster steps saved (bench/results/vlm_repeats_h100.txt, wave 7)
    progress: bool = False


def freeze(module: nn.Module, frozen: bool = True) -> nn.Module:
    for parameter in module.parameters():
        parameter.requires_grad_(not frozen)
    return module


STAGES = ("text", "alignment", "tuning")


def train_only(model: VisionLanguageModel, stage: str) -> None:
    """Set which parameters ``stage`` trains: text -> the LM; alignment -> the connector; tuning -> everything but
    the encoder's classifier head (not part of the vision tower's features)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: allowed values are {STAGES}")
    freeze(model, stage != "tuning")
    if stage == "text":
        freeze(model.lm, False)
    elif stage == "alignment":
        freeze(model.connector, False)
    else:
        freeze(model.encoder.classifier)


class _Scaled(nn.Module):
    """W = s W' (forward) and W' = W / s (right inverse, applied once when registered)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, stored):
        return self.scale * stored

    def right_inverse(self, weight):
        return weight / self.scale


def scale_learning_rate(module: nn.Module, scale: float) -> nn.Module:
    """Make Adam(W) move ``module``'s parameters ``scale`` times slower, without touching the optimizer."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale={scale} must lie in (0, 1]")
    for submodule in list(module.modules()):
        for name, _ in list(submodule.named_parameters(recurse=False)):
            parametrize.register_parametrization(submodule, name, _Scaled(scale))
    return module


def _config(cfg: RecipeConfig, steps: int, lr: float, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, lr=lr, warmup_steps=min(50, steps // 10), seed=seed, device=cfg.device,
                       amp=cfg.amp, compile=cfg.compile, progress=cfg.progress, log_every=max(1, steps // 10))


def pretrain_encoder(data: DigitImages, cfg: RecipeConfig, seed: int = 0) -> tuple[DigitEncoder, TrainResult]:
    """Stage 0: a digit classifier on the training split, returned frozen."""
    torch.manual_seed(seed)
    encoder = DigitEncoder(cfg.encoder_width)
    images, digits = data.images[data.train_index], data.digits[data.train_index]

    def batch_fn(step):
        rows = torch.randint(len(digits), (cfg.batch_size,))
        return images[rows], digits[rows]

    result = train(encoder, classifier_loss, batch_fn, _config(cfg, cfg.encoder_steps, cfg.encoder_lr, seed))
    return freeze(encoder.eval()), result


def build_model(encoder: DigitEncoder, tokenizer: DialogueTokenizer, cfg: RecipeConfig, attention: str,
                seed: int = 0) -> VisionLanguageModel:
    """A fresh LM (causal for the AR control) and connector around a copy of the frozen encoder.

    The copy's weights get the learning-rate multiplier of stage 3 here, once, so every later copy of this model
    (one per tuning run) shares its parametrized classes.
    """
    torch.manual_seed(seed)
    causal = attention == "causal"
    lm = Transformer(TransformerConfig(vocab_size=tokenizer.vocab_size, n_layers=cfg.n_layers, d_model=cfg.d_model,
                                       n_heads=cfg.n_heads, max_len=128, causal=causal, mask_token=not causal))
    vision = scale_learning_rate(freeze(copy.deepcopy(encoder)), cfg.encoder_lr_scale)
    return VisionLanguageModel(vision, lm, image_id=tokenizer.image_id, user_id=tokenizer.user_id,
                               pad_id=tokenizer.pad_id, attention=attention).to(cfg.device)


def loss_for(model: VisionLanguageModel):
    """The loss of the model's kind: LLaDA-V's masked loss, or next-token prediction for the AR control."""
    return ar_dialogue_loss if model.attention == "causal" else mdm_dialogue_loss


def pretrain_text(model: VisionLanguageModel, tokenizer: DialogueTokenizer, cfg: RecipeConfig,
                  seed: int = 0) -> TrainResult:
    """Stage 1: only the language model trains, on text dialogues (captions written where the image goes)."""
    train_only(model, "text")
    pool = encode_dialogues(tokenizer, text_dialogues(cfg.text_dialogues, seed=seed))
    return train(model, loss_for(model), batch_sampler(pool, None, cfg.batch_size),
                 _config(cfg, cfg.text_steps, cfg.lr, seed))


def caption_pool(tokenizer: DialogueTokenizer, data: DigitImages, seed: int = 0) -> EncodedDialogues:
    """One "describe it" dialogue per training image: the alignment stage's captioning data."""
    import random

    rng = random.Random(seed)
    return encode_dialogues(tokenizer, [make_dialogue(int(i), int(data.digits[i]), data.caption(int(i)), rng, 1,
                                                      first_kind="describe") for i in data.train_index])


def align_connector(model: VisionLanguageModel, tokenizer: DialogueTokenizer, data: DigitImages, cfg: RecipeConfig,
                    seed: int = 0) -> TrainResult:
    """Stage 2: only the connector trains, on image captions (LLaDA-V's LLaVA-Pretrain stage)."""
    train_only(model, "alignment")
    pool = caption_pool(tokenizer, data, seed)
    return train(model, loss_for(model), batch_sampler(pool, data, cfg.batch_size),
                 _config(cfg, cfg.align_steps, cfg.align_lr, seed))


def tune_all(model: VisionLanguageModel, pool: EncodedDialogues, data: DigitImages, cfg: RecipeConfig,
             seed: int = 0, fraction: float = 1.0) -> TrainResult:
    """Stage 3: everything trains on the first ``fraction`` of the visual dialogues, the encoder more slowly
    (``build_model`` gave its weights the multiplier ``cfg.encoder_lr_scale``)."""
    train_only(model, "tuning")
    return train(model, loss_for(model), batch_sampler(pool, data, cfg.batch_size, fraction),
                 _config(cfg, cfg.tune_steps, cfg.tune_lr, seed))


def visual_tuning(text_model: VisionLanguageModel, tokenizer: DialogueTokenizer, data: DigitImages,
                  pool: EncodedDialogues, cfg: RecipeConfig, *, seed: int = 0, fraction: float = 1.0,
                  attention: str | None = None) -> tuple[VisionLanguageModel, TrainResult, TrainResult]:
    """Stages 2 and 3 on a copy of a text-pretrained model: a fresh connector (seeded), alignment, full tuning.

    ``attention`` switches a bidirectional model to "dialogue_causal" (the LM was pretrained bidirectionally,
    as LLaDA was; the mask changes only for visual tuning). Returns (model, alignment result, tuning result).
    """
    model = copy.deepcopy(text_model)
    if attention is not None and attention != model.attention:
        if attention not in ATTENTION or "causal" in (attention, model.attention):
            raise ValueError(f"attention={attention!r}: a {model.attention} model can switch only between "
                             "'bidirectional' and 'dialogue_causal'")
        model.attention = attention
    torch.manual_seed(seed)
    model.connector = Connector(model.encoder.width, model.lm.config.d_model).to(next(model.parameters()).device)
    aligned = align_connector(model, tokenizer, data, cfg, seed)
    tuned = tune_all(model, pool, data, cfg, seed, fraction)
    return model, aligned, tuned
