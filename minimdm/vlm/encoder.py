"""A small vision encoder for 8x8 digits: it plays the role of LLaDA-V's SigLIP tower (arXiv 2505.16933, method section).

LLaDA-V takes SigLIP's patch features (a 27x27 grid for a 384x384 crop) and projects each one into the language
model's width with a two-layer MLP. Here a three-layer CNN turns an 8x8 digit into a 4x4 grid of ``width``-dim
features, read row by row as 16 image tokens. The encoder is first trained as a digit classifier (a linear head on
the whole grid, so every cell must carry information about its part of the image), then frozen until visual
instruction tuning, as SigLIP is pretrained before LLaDA-V ever sees it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimdm.nn import evaluation_mode

IMAGE_SHAPE = (1, 8, 8)  # one grey channel, 8x8 pixels
NUM_CLASSES = 10
GRID_CELLS = 16  # the 4x4 feature grid


def check_images(images: torch.Tensor) -> None:
    """Images must be (B, 1, 8, 8) floats; say which part is wrong in one line."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor of shape (batch, 1, 8, 8), got "
                         f"{type(images).__name__ if not torch.is_tensor(images) else images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (batch, 1, 8, 8), got {tuple(images.shape)}")
    if images.shape[1] != IMAGE_SHAPE[0]:
        raise ValueError(f"images must have 1 channel (grey 8x8 digits), got {images.shape[1]} channels")
    if tuple(images.shape[2:]) != IMAGE_SHAPE[1:]:
        raise ValueError(f"images must be 8x8 pixels, got {images.shape[2]}x{images.shape[3]}")


class DigitEncoder(nn.Module):
    """8x8 image -> 16 feature vectors (a 4x4 grid), plus a classifier head used only for its pretraining."""

    def __init__(self, width: int = 64):
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"width={width} must be an even integer >= 2")
        self.width = width
        self.conv1 = nn.Conv2d(1, width // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(width // 2, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.classifier = nn.Linear(GRID_CELLS * width, NUM_CLASSES)

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) -> (B, width, 4, 4)."""
        check_images(images)
        x = F.gelu(self.conv1(images))
        x = F.avg_pool2d(F.gelu(self.conv2(x)), 2)  # 8x8 -> 4x4
        return F.gelu(self.conv3(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) -> (B, 16, width): the grid in row-major order, one token per cell."""
        return self.grid(images).flatten(2).transpose(1, 2)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) -> (B, 10) class logits from the whole grid."""
        return self.classifier(self.grid(images).flatten(1))


def classifier_loss(encoder: DigitEncoder, batch) -> torch.Tensor:
    """Cross-entropy of the digit label: the encoder's pretraining objective."""
    images, digits = batch
    return F.cross_entropy(encoder.classify(images), digits)


@torch.no_grad()
def classifier_accuracy(encoder: DigitEncoder, images: torch.Tensor, digits: torch.Tensor) -> float:
    with evaluation_mode(encoder):
        return (encoder.classify(images).argmax(-1) == digits).float().mean().item()
