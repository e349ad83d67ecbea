"""The small data sets of the BFN notebooks, all offline.

* 2-D: the eight-Gaussians mixture of ``minimdm.toys.gmm`` (its exact denoiser is known).
* Digits: scikit-learn's bundled 8x8 digits (1797 images, pixel values 0..16), as 17 bins on [-1, 1] -- value v is
  bin v+1 with centre (2v + 1)/17 - 1, exactly the bin grid of
  ``minimdm.bfn.discretised`` -- or binarised at a threshold (K = 2 classes).
A fixed split keeps ``n_test`` images aside for test likelihoods (1797 images are easy to memorise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DIGIT_LEVELS = 17  # pixel values 0..16


@dataclass
class DigitsSplit:
    train: Tensor
    test: Tensor


def digit_pixel_values() -> Tensor:
    """(1797, 64) integer pixel values 0..16 from scikit-learn's bundled copy (no download)."""
    from sklearn.datasets import load_digits  # imported lazily: only the digits parts need scikit-learn

    return torch.from_numpy(load_digits().data).long()


def digit_labels() -> Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().target).long()


def split(data: Tensor, n_test: int = 300, seed: int = 0) -> DigitsSplit:
    """A fixed random split (the same permutation for every representation of the digits)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return DigitsSplit(train=data[order[n_test:]], test=data[order[:n_test]])


def values_to_bin_centres(values: Tensor) -> Tensor:
    """Pixel value v in 0..16 -> centre (2v + 1)/17 - 1 of bin v+1 of 17 on [-1, 1]."""
    return (2 * values.float() + 1) / DIGIT_LEVELS - 1


def bin_centres_to_values(x: Tensor) -> Tensor:
    """Inverse of :func:`values_to_bin_centres` (rounds to the nearest bin)."""
    return ((x + 1) * DIGIT_LEVELS / 2 - 0.5).round().clamp(0, DIGIT_LEVELS - 1).long()


def binarise(values: Tensor, threshold: int = 8) -> Tensor:
    """1 where the pixel value is above ``threshold`` (0..16 scale), else 0: class indices for K = 2."""
    return (values > threshold).long()


def random_batch(data: Tensor, batch_size: int) -> Tensor:
    """A batch drawn with replacement using the global RNG (the trainer reseeds it every step)."""
    return data[torch.randint(0, len(data), (batch_size,))]
