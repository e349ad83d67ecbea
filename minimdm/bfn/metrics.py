"""Offline sample-quality metrics for the BFN notebooks: no network, no downloaded feature nets.

* 2-D points: total variation between 40x40 histograms, and the energy distance.
* Enumerable discrete data: exact total variation between laws on the table.
* 8x8 digits: the Frechet distance between Gaussian fits of features from a small MLP classifier trained on the
  digits (an FID in miniature), and in pixel space.
Always report the floor -- the same metric between two samples of real data of the same sizes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def total_variation(p: Tensor, q: Tensor) -> float:
    """1/2 sum |p - q| between two laws on the same finite set."""
    return 0.5 * float((p - q).abs().sum())


def histogram_tv_2d(a: Tensor, b: Tensor, bins: int = 40, limit: float = 1.0) -> float:
    """Total variation between the bins x bins histograms of two 2-D samples on [-limit, limit]^2 (points outside
    the square count in no bin, so mass lost there shows up as distance)."""

    def histogram(points: Tensor) -> Tensor:
        points = points.detach().double().cpu()
        cell = torch.floor((points + limit) / (2 * limit) * bins).long()
        inside = ((cell >= 0) & (cell < bins)).all(-1)
        flat = cell[inside, 0] * bins + cell[inside, 1]
        return torch.bincount(flat, minlength=bins * bins).double() / len(points)

    return total_variation(histogram(a), histogram(b))


def energy_distance(a: Tensor, b: Tensor, max_points: int = 4000) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely): zero iff the laws agree. Uses the first ``max_points`` of each."""
    a, b = a[:max_points].double(), b[:max_points].double()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||m_a - m_b||^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) between Gaussian fits of two feature sets."""
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    eigval_a, eigvec_a = np.linalg.eigh(cov_a)
    sqrt_a = (eigvec_a * np.sqrt(eigval_a.clip(min=0))) @ eigvec_a.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clip(min=0)  # eigenvalues of C_a^1/2 C_b C_a^1/2
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(cross).sum())


def frechet_distance_to_gaussian(features: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """||m_a - m||^2 + tr(C_a + C - 2 (C^1/2 C_a C^1/2)^1/2) between the Gaussian fit of ``features`` and a known
    Gaussian N(mean, cov) (e.g. the exact moments of a mixture)."""
    mean_a, cov_a = features.mean(0), np.cov(features, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)
    sqrt_c = (eigvec * np.sqrt(eigval.clip(min=0))) @ eigvec.T
    cross = np.linalg.eigvalsh(sqrt_c @ cov_a @ sqrt_c).clip(min=0)
    return float(((mean_a - mean) ** 2).sum() + np.trace(cov_a) + np.trace(cov) - 2 * np.sqrt(cross).sum())


class DigitFeatures:
    """A small MLP classifier (scikit-learn) fit on real digits; its hidden ReLU layer is the feature space.

    ``images``: (n, 64) floats in the representation the samples will have (pixel values / 16, or 0/1).
    """

    def __init__(self, images: Tensor, labels: Tensor, hidden: int = 64, seed: int = 0):
        from sklearn.neural_network import MLPClassifier

        self.classifier = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=500, random_state=seed)
        self.classifier.fit(images.double().numpy(), labels.numpy())

    def features(self, images: Tensor) -> np.ndarray:
        """Hidden-layer activations relu(x W + b): (n, 64) -> (n, hidden)."""
        weights, bias = self.classifier.coefs_[0], self.classifier.intercepts_[0]
        return np.maximum(images.double().numpy() @ weights + bias, 0.0)

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        return float(self.classifier.score(images.double().numpy(), labels.numpy()))

    def frechet_distance(self, images_a: Tensor, images_b: Tensor) -> float:
        return frechet_distance(self.features(images_a), self.features(images_b))


def independent_categorical_nll(train_values: Tensor, test_values: Tensor, num_classes: int) -> float:
    """Test NLL in bits/dim of the baseline that models every pixel independently by its training histogram
    (add-one smoothing). train/test_values: (n, D) integer classes. Exact, no sampling."""
    counts = torch.nn.functional.one_hot(train_values.long(), num_classes).sum(0).double() + 1  # (D, K)
    log_probs = torch.log(counts / counts.sum(-1, keepdim=True))
    picked = log_probs.gather(-1, test_values.long().T).T  # (n, D)
    return float(-picked.mean() / np.log(2))


def matching_nfe(nfes: list[int], scores: list[float], target: float) -> float:
    """Smallest NFE at which a sampler's score (lower is better) reaches ``target``, interpolating linearly in
    log NFE between the measured points; ``inf`` if it never does within the measured range."""
    for k, (nfe, score) in enumerate(zip(nfes, scores)):
        if score <= target:
            if k == 0:
                return float(nfe)
            prev_nfe, prev_score = nfes[k - 1], scores[k - 1]
            frac = (prev_score - target) / (prev_score - score)
            return float(np.exp(np.log(prev_nfe) + frac * (np.log(nfe) - np.log(prev_nfe))))
    return float("inf")
