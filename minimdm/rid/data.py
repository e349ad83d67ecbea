"""The digits of the RID chapter: 8x8 images in [-1, 1], one class held out as the victim's "identity".

In RID (arXiv 2412.09844, method section) the identities a defender protects are never in its training set, and the attacked
text-to-image model has never seen them either. Here the identity is a digit class c*: the base diffusion models, their
autoencoders and the defender train on the other nine classes only, and :class:`TrainingDigits` refuses to hold an
image of c*. The judge (an evaluator, not part of the attacked system) trains on all ten classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minimdm.bfn.datasets import digit_labels, digit_pixel_values, split

SIDE = 8
PIXEL_MAX = 16  # scikit-learn's digits have integer pixel values 0..16
DEFAULT_IDENTITY = 8


def check_images(images: Tensor, name: str = "images") -> None:
    """One-line errors for anything that is not a batch of 8x8 one-channel images in [-1, 1]."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape (B, 1, {SIDE}, {SIDE}), got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, SIDE, SIDE) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, 1, {SIDE}, {SIDE}) with B >= 1, got {tuple(images.shape)}")
    low, high = float(images.min()), float(images.max())
    if low < -1 - 1e-5 or high > 1 + 1e-5:
        raise ValueError(f"{name} must lie in the model's range [-1, 1], got values in [{low:.3g}, {high:.3g}]")


def check_epsilon(epsilon: float) -> None:
    if not 0 < epsilon < 2:
        raise ValueError(f"epsilon={epsilon} must lie in (0, 2): an L-infinity budget in [-1, 1] pixel units "
                         "(2 spans the whole range, so it would bound nothing)")


def check_identity(identity: int) -> None:
    if not (isinstance(identity, int) and 0 <= identity <= 9):
        raise ValueError(f"identity={identity!r} must be a digit class 0..9")


@dataclass(frozen=True)
class TrainingDigits:
    """Images and labels a base model or the defender may train on: no image of class ``identity``, ever."""

    images: Tensor  # (N, 1, 8, 8) in [-1, 1]
    labels: Tensor  # (N,)
    identity: int

    def __post_init__(self):
        check_identity(self.identity)
        check_images(self.images)
        if len(self.images) != len(self.labels):
            raise ValueError(f"images ({len(self.images)}) and labels ({len(self.labels)}) must have the same length")
        if bool((self.labels == self.identity).any()):
            raise ValueError(f"TrainingDigits may not contain the identity class {self.identity}: "
                             f"{int((self.labels == self.identity).sum())} such images given")

    def batch(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """A batch drawn with replacement from the global RNG (the trainer reseeds it every step)."""
        index = torch.randint(0, len(self.images), (batch_size,))
        return self.images[index], self.labels[index]


@dataclass(frozen=True)
class RidDigits:
    """The whole data pipeline: a fixed train/test split, the identity class and the victim's K photos."""

    train_images: Tensor  # (N, 1, 8, 8), all ten classes: only the judge sees them all
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    identity: int

    def base_training_set(self) -> TrainingDigits:
        """Every training image except the identity class (what the diffusion models and the defender see)."""
        keep = self.train_labels != self.identity
        return TrainingDigits(self.train_images[keep], self.train_labels[keep], self.identity)

    def identity_photos(self, k: int, seed: int = 0) -> Tensor:
        """K training images of the identity class: the victim's published photos (B=K, 1, 8, 8)."""
        pool = self.train_images[self.train_labels == self.identity]
        if not 1 <= k <= len(pool):
            raise ValueError(f"k={k} must lie in 1..{len(pool)} (identity images in the training split)")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        return pool[order[:k]]

    def identity_reference(self) -> Tensor:
        """Held-out real images of the identity (the test split): what generations are compared with."""
        return self.test_images[self.test_labels == self.identity]


def values_to_unit_range(values: Tensor) -> Tensor:
    """Pixel values 0..16 -> [-1, 1], shaped as images (B, 1, 8, 8)."""
    return (values.float() / PIXEL_MAX * 2 - 1).reshape(-1, 1, SIDE, SIDE)


def load_rid_digits(identity: int = DEFAULT_IDENTITY, n_test: int = 360, seed: int = 0) -> RidDigits:
    """scikit-learn's 1797 digits (no download), split once with the course's fixed permutation."""
    check_identity(identity)
    images = values_to_unit_range(digit_pixel_values())
    index = split(torch.arange(len(images)), n_test=n_test, seed=seed)
    labels = digit_labels()
    return RidDigits(images[index.train], labels[index.train], images[index.test], labels[index.test], identity)
