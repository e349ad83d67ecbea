"""The judge: a small CNN trained on all ten digit classes, the stand-in for RID's face detector + ArcFace.

It only evaluates. Its argmax says whether a generated image shows the identity (identity success rate, the analogue
of ArcFace identity similarity), its confidence below 0.5 counts as "no digit found" (the analogue of FDFR), and its
penultimate features are where the Frechet distance is measured (the analogue of FID's Inception features).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minimdm.train import TrainConfig, train

FEATURE_DIM = 32


class Judge(nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),  # -> 2x2
            nn.Flatten(), nn.Linear(8 * channels, FEATURE_DIM), nn.SiLU())
        self.classifier = nn.Linear(FEATURE_DIM, 10)

    def features(self, images: Tensor) -> Tensor:  # (B, 1, 8, 8) -> (B, 32)
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:  # -> logits (B, 10)
        return self.classifier(self.features(images))


def judge_loss(judge: Judge, batch, sign_noise: float = 0.0) -> Tensor:
    images, labels = batch
    if sign_noise > 0:  # a hardened judge: half the batch carries +-a noise, a ~ U(0, sign_noise), per image
        amplitude = sign_noise * torch.rand(len(images), 1, 1, 1, device=images.device)
        amplitude = amplitude * (torch.rand_like(amplitude) < 0.5)
        images = images + amplitude * (torch.randint_like(images, 0, 2) * 2 - 1)
    # a little pixel noise and a one-pixel shift make the judge robust to the mild artefacts of generated digits
    images = images + 0.1 * torch.randn_like(images)
    shift = tuple(int(s) for s in torch.randint(-1, 2, (2,)))
    images = torch.roll(images, shifts=shift, dims=(2, 3)).clamp(-1, 1)
    return F.cross_entropy(judge(images), labels)


def train_judge(images: Tensor, labels: Tensor, steps: int, batch_size: int = 128, lr: float = 1e-2, seed: int = 0,
                device: str | torch.device = "cpu", sign_noise: float = 0.0) -> Judge:
    """``sign_noise`` > 0 trains a judge that still reads digits under +-sign_noise pixel noise: it tells a defense
    that stops the attack from one that only makes the attacker's generations noisy."""
    if not 0 <= sign_noise <= 1:
        raise ValueError(f"sign_noise={sign_noise} must lie in [0, 1] (pixels live in [-1, 1])")
    torch.manual_seed(seed)
    judge = Judge()
    images, labels = images.to(device), labels.to(device)

    def batch(step):
        index = torch.randint(0, len(images), (batch_size,), device=images.device)
        return images[index], labels[index]

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(50, steps // 10 + 1), weight_decay=0.0, seed=seed,
                      device=str(device), progress=False, log_every=max(1, steps), amp=False)
    train(judge, functools.partial(judge_loss, sign_noise=sign_noise), batch, cfg)
    return judge.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(judge: Judge, images: Tensor, labels: Tensor) -> float:
    return float((judge(images).argmax(-1) == labels).float().mean())
