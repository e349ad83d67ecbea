"""The small training runs of notebooks 09 and 10, one function per data type, with the model cached on disk.

Each recipe builds a net, its loss and batch functions, and trains it with the course's trainer
(``minimdm.train.train``). The checkpoint goes to ``<data cache>/bfn/<name>-<preset>-<hash of the settings>`` (``minimdm.data.corpora.data_dir``); the
trainer resumes from it, so a second call (notebook 10 after notebook 09) loads the trained model in a second.
Sizes follow the preset via ``minimdm.presets.pick``; the GPU preset uses the CPU sizes, because these nets train on
the CPU (``device`` defaults to it) and larger ones took more than 5 minutes there.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minimdm.bfn import continuous, discrete, discretised
from minimdm.bfn.continuous import ContinuousSchedule
from minimdm.bfn.datasets import (
    DIGIT_LEVELS,
    binarise,
    digit_pixel_values,
    random_batch,
    split,
    values_to_bin_centres,
)
from minimdm.bfn.discrete import DiscreteSchedule
from minimdm.bfn.nets import DigitsConvNet, PointMLP
from minimdm.data.corpora import data_dir
from minimdm.presets import pick, preset_name
from minimdm.toys.gmm import GaussianMixture, eight_gaussians
from minimdm.train import TrainConfig, TrainResult, train



@dataclass
class TrainedBFN:
    """A trained model plus everything needed to use it: the predictor the samplers call, the schedule, the data."""

    net: nn.Module
    schedule: ContinuousSchedule | DiscreteSchedule
    predictor: object  # predict_x / predict_bins / predict_probs, see the data-type modules
    result: TrainResult
    train_data: Tensor
    test_data: Tensor
    settings: dict


def _train_cached(name: str, net: nn.Module, loss_fn, batch_fn, settings: dict, device: str) -> TrainResult:
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    cfg = TrainConfig(
        steps=settings["steps"], lr=settings["lr"], warmup_steps=min(100, settings["steps"] // 10), weight_decay=0.0,
        grad_clip=1.0, seed=0, log_every=max(1, settings["steps"] // 50), device=device, progress=False,
        checkpoint_dir=str(data_dir() / "bfn" / f"{name}-{preset_name()}-{key}"),  # the course's one data cache
    )
    result = train(net, loss_fn, batch_fn, cfg)
    net.eval()
    return result


def two_d_mixture(device: str = "cpu", gmm: GaussianMixture | None = None) -> TrainedBFN:
    """Continuous BFN on eight Gaussians (radius 0.7, std 0.02), sigma_1 = 1e-3, a 3-layer MLP predicting eps, trained on L^inf."""
    gmm = (gmm or eight_gaussians(std=0.02)).to(torch.float32)
    settings = dict(
        sigma_1=1e-3, hidden=pick(quick=64, cpu=128, gpu=128), depth=3, batch=pick(quick=256, cpu=1024, gpu=1024),
        steps=pick(quick=60, cpu=2000, gpu=2000), lr=2e-3,
    )
    schedule = ContinuousSchedule(settings["sigma_1"])
    net = PointMLP(2, 2, settings["hidden"], settings["depth"])
    train_loss = lambda model, x: continuous.continuous_time_loss(  # noqa: E731
        continuous.data_predictor(model, schedule, clip=False), x, schedule).mean()
    batch_fn = lambda step: gmm.sample(settings["batch"]).clamp(-1, 1)  # noqa: E731
    result = _train_cached("mixture2d", net, train_loss, batch_fn, settings, device)
    return TrainedBFN(net, schedule, continuous.data_predictor(net, schedule), result,
                      gmm.sample(20000), gmm.sample(20000), settings)


def _digits_settings(**extra) -> dict:
    return dict(
        channels=pick(quick=16, cpu=32, gpu=32), blocks=pick(quick=1, cpu=2, gpu=2), batch=pick(quick=32, cpu=128, gpu=128),
        steps=pick(quick=30, cpu=1000, gpu=1000), lr=2e-3, n_test=300, **extra,
    )


def digits_discretised(device: str = "cpu") -> TrainedBFN:
    """Discretised BFN on 8x8 digits in 17 bins (pixel value v -> bin v+1), sigma_1^2 = 1e-3 (the BFN paper's
    16-bin CIFAR-10 setting), a small residual conv net predicting (mu_eps, ln sigma_eps) per pixel, trained on L^inf."""
    settings = _digits_settings(sigma_1=math.sqrt(1e-3))
    schedule, bins = ContinuousSchedule(settings["sigma_1"]), discretised.Bins(DIGIT_LEVELS)
    data = split(values_to_bin_centres(digit_pixel_values()), settings["n_test"])
    net = DigitsConvNet(1, 2, settings["channels"], settings["blocks"])
    predict_bins = discretised.bin_predictor(lambda mu, t: net(mu.unsqueeze(-1), t), schedule, bins)
    train_loss = lambda model, x: discretised.continuous_time_loss(predict_bins, x, schedule, bins).mean()  # noqa: E731
    batch_fn = lambda step: random_batch(data.train, settings["batch"])  # noqa: E731
    result = _train_cached("digits17", net, train_loss, batch_fn, settings, device)
    return TrainedBFN(net, schedule, predict_bins, result, data.train, data.test, settings)


def digits_binarised(device: str = "cpu") -> TrainedBFN:
    """Discrete BFN (K = 2) on binarised digits (value > 8), beta_1 = 9 (sqrt(beta_1) = 3, the released BFN
    code's binarised-MNIST setting); the conv net sees 2 theta - 1 and returns two logits per pixel; trained on L^inf."""
    settings = _digits_settings(beta_1=9.0)
    schedule = DiscreteSchedule(settings["beta_1"], 2)
    data = split(binarise(digit_pixel_values()), settings["n_test"])
    net = DigitsConvNet(2, 2, settings["channels"], settings["blocks"])
    predict_probs = discrete.probability_predictor(lambda theta, t: net(2 * theta - 1, t))
    train_loss = lambda model, x: discrete.continuous_time_loss(predict_probs, x, schedule).mean()  # noqa: E731
    batch_fn = lambda step: random_batch(data.train, settings["batch"])  # noqa: E731
    result = _train_cached("digits_binary", net, train_loss, batch_fn, settings, device)
    return TrainedBFN(net, schedule, predict_probs, result, data.train, data.test, settings)
