"""One protection experiment: personalise a base model on (protected) photos, generate, and let the judge score it."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from minimdm.rid.ddpm import DiffusionModel
from minimdm.rid.judge import Judge
from minimdm.rid.metrics import identity_success_rate, judge_frechet_distance, no_digit_rate
from minimdm.rid.personalize import generate_identity, personalize


@dataclass
class AttackOutcome:
    success: list[float]  # identity success rate per attack seed
    no_digit: float  # mean over seeds
    frechet: float  # mean over seeds
    samples: Tensor  # the first seed's generations (n, 1, 8, 8), on the CPU
    n_samples: int
    robust_success: list[float] | None = None  # the same generations scored by a judge trained to read through noise

    @property
    def mean(self) -> float:
        return _mean_and_error(self.success, self.n_samples)[0]

    @property
    def error(self) -> float:
        return _mean_and_error(self.success, self.n_samples)[1]

    @property
    def robust_mean(self) -> float:
        return _mean_and_error(self._robust(), self.n_samples)[0]

    @property
    def robust_error(self) -> float:
        return _mean_and_error(self._robust(), self.n_samples)[1]

    def _robust(self) -> list[float]:
        if self.robust_success is None:
            raise ValueError("this outcome was scored without robust_judge")
        return self.robust_success


def _mean_and_error(rates: list[float], n_samples: int) -> tuple[float, float]:
    """Mean rate and its standard error: across seeds when there are several, else the binomial one of the samples."""
    n, mean = len(rates), sum(rates) / len(rates)
    if n > 1:
        return mean, math.sqrt(sum((r - mean) ** 2 for r in rates) / (n - 1) / n)
    return mean, math.sqrt(mean * (1 - mean) / n_samples)


def attack_and_judge(base: DiffusionModel, photos: Tensor, judge: Judge, identity: int, reference: Tensor, *,
                     method: str = "dreambooth", steps: int = 300, n_samples: int = 256, seeds=(0,),
                     prior=None, robust_judge: Judge | None = None) -> AttackOutcome:
    """For each seed: personalise ``base`` on ``photos``, sample the new word, score identity success and FD.

    ``robust_judge`` (optional) scores the same generations a second time: a judge trained on noisy digits tells an
    attack that failed from one whose generations are merely noisy."""
    if len(seeds) == 0:
        raise ValueError("seeds=() is empty: give at least one attack seed, e.g. seeds=(0,)")
    device = base.betas.device
    photos, reference = photos.to(device), reference.to(device)
    success, robust, no_digit, frechet, first = [], [], [], [], None
    for seed in seeds:
        model = personalize(base, photos, method, steps=steps, seed=seed, prior=prior)
        generated = generate_identity(model, n_samples, seed=seed)
        success.append(identity_success_rate(judge, generated, identity))
        if robust_judge is not None:
            robust.append(identity_success_rate(robust_judge, generated, identity))
        no_digit.append(no_digit_rate(judge, generated))
        frechet.append(judge_frechet_distance(judge, generated, reference))
        first = generated.cpu() if first is None else first
    return AttackOutcome(success, sum(no_digit) / len(no_digit), sum(frechet) / len(frechet), first, n_samples,
                         robust if robust_judge is not None else None)
