"""Bayesian flow networks for discrete data: K classes per variable (Graves et al. 2023, arXiv 2308.07037).

The input distribution is a categorical theta on the simplex, prior uniform. The sender adds Gaussian noise to
alpha (K e_x - 1); the Bayesian update multiplies theta by exp(y), i.e. the *logits* add, so after total
accuracy beta(t) theta = softmax(y) with y ~ N(beta (K e_x - 1), beta K I).

A *probability predictor* is a callable ``predict_probs(theta, t) -> e_hat`` with theta and e_hat of shape
(B, L, K) and t of shape (B,): a trained network (see :func:`probability_predictor`) or the exact enumeration
denoiser of ``minimdm.toys.enumerable_discrete``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from minimdm.bfn.continuous import BFNSamples
from minimdm.bfn.kl import gaussian_to_mixture_kl

ProbabilityPredictor = Callable[[Tensor, Tensor], Tensor]


class DiscreteSchedule:
    """beta(t) = beta_1 t^2, alpha(t) = 2 beta_1 t, alpha_i = beta_1 (2i - 1) / n^2.

    ``beta_1`` is beta(1) as in the released code (which stores sqrt(beta_1), e.g. 3 for binarised MNIST, i.e.
    beta_1 = 9, and 0.75 for text8, beta_1 = 0.5625).
    """

    def __init__(self, beta_1: float, num_classes: int):
        if not (isinstance(beta_1, (int, float)) and 0.0 < beta_1 < float("inf")):
            raise ValueError(f"beta_1={beta_1!r}: the final accuracy must be a finite number > 0, e.g. 9.0 (sqrt 3)")
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(f"num_classes={num_classes!r}: need an integer >= 2")
        self.beta_1 = float(beta_1)
        self.num_classes = num_classes

    def __repr__(self) -> str:
        return f"DiscreteSchedule(beta_1={self.beta_1:g}, num_classes={self.num_classes})"

    def beta(self, t):
        """beta(t) = beta_1 t^2. Works on floats and tensors."""
        return self.beta_1 * t * t

    def step_accuracy(self, i: int, n_steps: int) -> float:
        """alpha_i = beta(i/n) - beta((i-1)/n) = beta_1 (2i - 1) / n^2."""
        return self.beta_1 * (2 * i - 1) / n_steps**2


def check_class_indices(x: Tensor, num_classes: int) -> None:
    if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"x: discrete BFN data are class indices (an integer tensor), got dtype {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(f"x: class indices must lie in 0..{num_classes - 1}, got [{x.min().item()}, {x.max().item()}]")


def sender_sample(class_weights: Tensor, alpha: Tensor | float, noise: Tensor) -> Tensor:
    """y = alpha (K e - 1) + sqrt(alpha K) noise ~ p_S(. | e; alpha).

    ``class_weights`` (..., K) is a one-hot e_x (the sender), a one-hot draw from the output (the original
    sampler), or the predicted probabilities e_hat (the solvers' drift). alpha is a float or broadcasts as (..., 1).
    """
    num_classes = class_weights.shape[-1]
    noise_std = torch.sqrt(alpha * num_classes) if isinstance(alpha, Tensor) else math.sqrt(alpha * num_classes)
    return alpha * (num_classes * class_weights - 1) + noise_std * noise


def bayesian_update(theta: Tensor, y: Tensor) -> Tensor:
    """theta' = theta exp(y) / sum_k theta_k exp(y_k): done in log space, so logits simply add."""
    return torch.softmax(torch.log(theta.clamp_min(1e-300 if theta.dtype == torch.float64 else 1e-38)) + y, dim=-1)


def sample_flow_logits(x: Tensor, t: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """y ~ N(beta(t) (K e_x - 1), beta(t) K I): the latent logits of the flow distribution   (Thm 5.1).

    x: (B, L) class indices, t: (B,) -> (B, L, K); theta = softmax(y).
    """
    check_class_indices(x, schedule.num_classes)
    beta = schedule.beta(t).view(-1, 1, 1)  # (B, 1, 1), t's float dtype
    one_hot = F.one_hot(x.long(), schedule.num_classes).to(beta.dtype)
    return sender_sample(one_hot, beta, torch.randn_like(one_hot))


def sample_flow(x: Tensor, t: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """theta ~ p_F(. | x; t) = softmax(y), y from :func:`sample_flow_logits`. (B, L) -> (B, L, K)."""
    return torch.softmax(sample_flow_logits(x, t, schedule), dim=-1)


def probability_predictor(net: Callable[[Tensor, Tensor], Tensor]) -> ProbabilityPredictor:
    """Wrap a network ``net(theta, t) -> logits (B, L, K)`` into ``predict_probs`` (softmax of the logits)."""
    return lambda theta, t: torch.softmax(net(theta, t), dim=-1)


def continuous_time_loss(predict_probs: ProbabilityPredictor, x: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """L^inf per sample, nats/variable: K beta_1 t ||e_x - e_hat(theta, t)||^2, t ~ U(0,1), theta ~ p_F.

    x: (B, L) class indices -> (B,). (The released code clamps t <= 1 - 1e-6; sampling t in [0, 1) does that.)
    """
    t = torch.rand(x.shape[0], device=x.device)
    e_hat = predict_probs(sample_flow(x, t, schedule), t)  # (B, L, K)
    one_hot = F.one_hot(x.long(), schedule.num_classes).to(e_hat.dtype)
    return schedule.num_classes * schedule.beta_1 * t * (one_hot - e_hat).pow(2).sum(-1).mean(1)


def discrete_time_loss(
    predict_probs: ProbabilityPredictor, x: Tensor, schedule: DiscreteSchedule, n_steps: int, n_samples: int = 10
) -> Tensor:
    """L^n per sample, nats/variable: n KL(p_S(. | x; alpha_i) || p_R(. | theta; t_{i-1}, alpha_i)) at
    i ~ U{1..n}, theta ~ p_F(. | x; t_{i-1}); receiver = sum_k p_O(k) N(alpha (K e_k - 1), alpha K I)  (MC)."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: the discrete-time loss needs n_steps >= 1")
    num_classes = schedule.num_classes
    i = torch.randint(1, n_steps + 1, (x.shape[0],), device=x.device)
    t_prev = (i - 1).float() / n_steps
    e_hat = predict_probs(sample_flow(x, t_prev, schedule), t_prev)  # (B, L, K)
    alpha = (schedule.beta_1 * (2 * i - 1) / n_steps**2).to(e_hat.dtype).view(-1, 1)  # (B, 1) alpha_i
    one_hot = F.one_hot(x.long(), num_classes).to(e_hat.dtype)  # (B, L, K)
    class_means = num_classes * torch.eye(num_classes, dtype=e_hat.dtype, device=x.device) - 1  # (K, K): row k = K e_k - 1
    kl = gaussian_to_mixture_kl(
        sender_mean=alpha.unsqueeze(-1) * (num_classes * one_hot - 1),  # (B, L, K)
        mixture_means=alpha.view(-1, 1, 1, 1) * class_means,  # (B, 1, K, K)
        mixture_weights=e_hat,  # (B, L, K)
        variance=alpha * num_classes,  # (B, 1)
        n_samples=n_samples,
    )  # (B, L)
    return n_steps * kl.mean(1)


def reconstruction_loss(predict_probs: ProbabilityPredictor, x: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """L^r per sample, nats/variable: -ln p_O(x | theta; 1), theta ~ p_F(. | x; 1)."""
    t = torch.ones(x.shape[0], device=x.device)
    e_hat = predict_probs(sample_flow(x, t, schedule), t)
    return -torch.log(e_hat.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).clamp_min(1e-12)).mean(1)


def original_sampler_step(theta: Tensor, class_weights: Tensor, alpha: float, noise: Tensor) -> Tensor:
    """One BFN step: y ~ p_S(. | k; alpha) around the drawn class k (one-hot ``class_weights``), then
    theta <- normalise(theta e^y). Passing e_hat instead of a one-hot gives SDE-BFN-Solver1 (Prop 5.3)."""
    return bayesian_update(theta, sender_sample(class_weights, alpha, noise))


def original_sampler(
    predict_probs: ProbabilityPredictor,
    shape: tuple[int, int],
    n_steps: int,
    schedule: DiscreteSchedule,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    keep_history: bool = False,
    final: str = "sample",
) -> BFNSamples:
    """The BFN sampler for discrete data: theta = 1/K; for i = 1..n draw k ~ p_O(. | theta; (i-1)/n),
    send y ~ p_S(. | k; alpha_i), update theta; finally draw x ~ p_O(. | theta; 1) (``final="sample"``) or take
    its most probable class (``final="mode"``, what the released BFN code returns). NFE = n + 1.

    shape = (B, L). Returns x (B, L) class indices; ``final_probs`` on the result holds p_O(. | theta; 1).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: the BFN sampler needs n_steps >= 1 (NFE = n_steps + 1 >= 2)")
    if final not in ("sample", "mode"):
        raise ValueError(f"final={final!r}: allowed values are ('sample', 'mode')")
    batch, length = shape
    num_classes = schedule.num_classes
    theta = torch.full((batch, length, num_classes), 1.0 / num_classes, dtype=dtype, device=device)
    out = BFNSamples(x=theta)
    for i in range(1, n_steps + 1):
        t = torch.full((batch,), (i - 1) / n_steps, dtype=dtype, device=device)
        if keep_history:
            out.times.append((i - 1) / n_steps)
            out.history.append(theta)
        drawn = torch.distributions.Categorical(probs=predict_probs(theta, t)).sample()  # (B, L)
        one_hot = F.one_hot(drawn, num_classes).to(dtype)
        theta = original_sampler_step(theta, one_hot, schedule.step_accuracy(i, n_steps), torch.randn_like(theta))
    if keep_history:
        out.times.append(1.0)
        out.history.append(theta)
    final_probs = predict_probs(theta, torch.ones(batch, dtype=dtype, device=device))
    out.x = final_probs.argmax(-1) if final == "mode" else torch.distributions.Categorical(probs=final_probs).sample()
    out.final_probs, out.state = final_probs, theta
    return out
