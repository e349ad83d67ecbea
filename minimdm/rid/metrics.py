"""How well a protection works, and what it costs.

* identity success rate: the share of images the personalised model generates for its new word that the judge calls
  the identity class (RID evaluates identity similarity with ArcFace; a classifier is the digit analogue);
* no-digit rate: the share where the judge's top probability is below 0.5 (the analogue of a face-detection failure);
* Frechet distance between Gaussians fitted to judge features of generated and of real identity images (FID's formula,
  Heusel et al. 2017, in the judge's feature space);
* PSNR and L-infinity distance of the protected photos to the clean ones; defense time per image.
"""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from minimdm.rid.judge import Judge


@torch.no_grad()
def identity_success_rate(judge: Judge, images: Tensor, identity: int) -> float:
    return float((judge(images).argmax(-1) == identity).float().mean())


@torch.no_grad()
def no_digit_rate(judge: Judge, images: Tensor, threshold: float = 0.5) -> float:
    return float((judge(images).softmax(-1).max(-1).values < threshold).float().mean())


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64 (symmetric square roots)."""
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(features_a.shape)} and {tuple(features_b.shape)}")
    if min(len(features_a), len(features_b)) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross))


@torch.no_grad()
def judge_frechet_distance(judge: Judge, generated: Tensor, reference: Tensor) -> float:
    return frechet_distance(judge.features(generated), judge.features(reference))


def psnr(protected: Tensor, clean: Tensor, data_range: float = 2.0) -> float:
    """10 log10(range^2 / MSE) over the whole batch, images in [-1, 1] (range 2)."""
    mse = float((protected - clean).double().pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


def linf(protected: Tensor, clean: Tensor) -> float:
    return float((protected - clean).abs().max())


def seconds_per_image(protect, images: Tensor, repeats: int = 3) -> float:
    """Best of ``repeats`` wall-clock runs of ``protect(images)`` divided by the batch size (after one warm-up run)."""
    protect(images)
    best = math.inf
    for _ in range(repeats):
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        protect(images)
        if images.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / len(images)
