"""Bayesian flow networks for discretised data: K bins on [-1, 1] (Graves et al. 2023, arXiv 2308.07037).

Input distribution, sender, Bayesian update, flow distribution and accuracy schedule are those of continuous
data (``minimdm.bfn.continuous``); only the output distribution changes. The network predicts a Gaussian
(mu_x, sigma_x) per dimension and the output puts on each bin the Gaussian mass inside it, the two outer bins
taking the tails.

A *bin predictor* here is a callable ``predict_bins(mu, t) -> probs`` with probs of shape (B, D, K): a trained
network wrapped by :func:`bin_predictor`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from minimdm.bfn import continuous
from minimdm.bfn.continuous import T_MIN, BFNSamples, ContinuousSchedule, per_sample, check_continuous_data, sample_flow
from minimdm.bfn.kl import gaussian_to_mixture_kl

BinPredictor = Callable[[Tensor, Tensor], Tensor]

SIGMA_X_RANGE = (1e-3, 10.0)  # sigma_x is clamped to this range


class Bins:
    """K equal bins on [-1, 1]: width 2/K, centres k_c = (2k - 1)/K - 1 for k = 1..K."""

    def __init__(self, num_bins: int):
        if not (isinstance(num_bins, int) and num_bins >= 2):
            raise ValueError(f"num_bins={num_bins!r}: need an integer >= 2")
        self.num_bins = num_bins
        self.width = 2.0 / num_bins

    def centres(self, dtype=torch.float32, device=None) -> Tensor:
        """(K,) bin centres."""
        k = torch.arange(1, self.num_bins + 1, dtype=dtype, device=device)
        return (2 * k - 1) / self.num_bins - 1

    def index(self, x: Tensor) -> Tensor:
        """Bin index in 0..K-1 of each value of x (the last bin includes +1)."""
        check_continuous_data(x)
        return torch.floor((x + 1) / 2 * self.num_bins).clamp(0, self.num_bins - 1).long()

    def quantise(self, x: Tensor) -> Tensor:
        """Replace each value by its bin centre."""
        return self.centres(x.dtype, x.device)[self.index(x)]


def _standard_normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def output_gaussian(net_output: Tensor, mu: Tensor, t: Tensor, schedule: ContinuousSchedule) -> tuple[Tensor, Tensor]:
    """(mu_x, sigma_x) from the network's (mu_eps, ln sigma_eps) = net_output[..., 0], net_output[..., 1]:

    mu_x = mu / gamma - sqrt((1 - gamma)/gamma) mu_eps,  sigma_x = sqrt((1 - gamma)/gamma) exp(ln sigma_eps),
    sigma_x clamped to [1e-3, 10]; before t_min (no information yet) mu_x = 0, sigma_x = 1.
    """
    mu_eps, log_sigma_eps = net_output[..., 0], net_output[..., 1]  # (B, D) each
    gamma = per_sample(schedule.gamma(t.clamp_min(T_MIN)), mu)
    noise_to_data = torch.sqrt((1 - gamma) / gamma)
    mu_x = mu / gamma - noise_to_data * mu_eps
    sigma_x = (noise_to_data * torch.exp(log_sigma_eps)).clamp(*SIGMA_X_RANGE)
    before_t_min = per_sample(t, mu) < T_MIN
    mu_x = torch.where(before_t_min, torch.zeros_like(mu_x), mu_x)
    sigma_x = torch.where(before_t_min, torch.ones_like(sigma_x), sigma_x)
    return mu_x, sigma_x


def bin_probabilities(mu_x: Tensor, sigma_x: Tensor, bins: Bins) -> Tensor:
    """p_O(k) = Phi((k_r - mu_x)/sigma_x) - Phi((k_l - mu_x)/sigma_x), outer edges at -inf / +inf.

    mu_x, sigma_x: (B, D) -> probabilities (B, D, K).
    """
    inner_edges = bins.centres(mu_x.dtype, mu_x.device)[:-1] + bins.width / 2  # (K-1,) right edges of bins 1..K-1
    cdf = _standard_normal_cdf((inner_edges - mu_x.unsqueeze(-1)) / sigma_x.unsqueeze(-1))  # (B, D, K-1)
    zeros, ones = torch.zeros_like(cdf[..., :1]), torch.ones_like(cdf[..., :1])
    cdf = torch.cat([zeros, cdf, ones], dim=-1)  # (B, D, K+1): "clip=True", the outer bins take the tails
    return (cdf[..., 1:] - cdf[..., :-1]).clamp_min(0.0)


def bin_predictor(net: Callable[[Tensor, Tensor], Tensor], schedule: ContinuousSchedule, bins: Bins) -> BinPredictor:
    """Wrap a network ``net(mu, t) -> (B, D, 2)`` [mu_eps, ln sigma_eps] into ``predict_bins(mu, t) -> (B, D, K)``."""

    def predict_bins(mu: Tensor, t: Tensor) -> Tensor:
        return bin_probabilities(*output_gaussian(net(mu, t), mu, t, schedule), bins)

    return predict_bins


def expected_bin_centre(probs: Tensor, bins: Bins) -> Tensor:
    """k_hat = sum_k p_O(k) k_c: the output's mean, the data prediction the solvers use. (B, D, K) -> (B, D)."""
    return probs @ bins.centres(probs.dtype, probs.device)


def data_predictor(predict_bins: BinPredictor, bins: Bins) -> Callable[[Tensor, Tensor], Tensor]:
    """The denoiser ``predict_x(mu, t) = k_hat`` so that the continuous solvers run on a discretised model."""
    return lambda mu, t: expected_bin_centre(predict_bins(mu, t), bins)


def _checked_flow_sample(x: Tensor, schedule: ContinuousSchedule, t: Tensor) -> Tensor:
    check_continuous_data(x)
    return sample_flow(x, t, schedule)


def continuous_time_loss(predict_bins: BinPredictor, x: Tensor, schedule: ContinuousSchedule, bins: Bins) -> Tensor:
    """L^inf per sample, nats/dim: -ln(sigma_1) sigma_1^(-2t) ||x - k_hat(theta, t)||^2. x: bin centres."""
    t = torch.rand(x.shape[0], dtype=x.dtype, device=x.device)
    mu = _checked_flow_sample(x, schedule, t)
    k_hat = expected_bin_centre(predict_bins(mu, t), bins)
    weight = -schedule.log_sigma_1 * schedule.precision(t).to(x.dtype)
    return weight * (x - k_hat).pow(2).flatten(1).mean(1)


def discrete_time_loss(
    predict_bins: BinPredictor, x: Tensor, schedule: ContinuousSchedule, bins: Bins, n_steps: int, n_samples: int = 10
) -> Tensor:
    """L^n per sample, nats/dim: n KL(N(x, 1/alpha_i) || sum_k p_O(k) N(k_c, 1/alpha_i)) at i ~ U{1..n},
    theta ~ p_F(. | x; t_{i-1}); the KL to a mixture has no closed form, so it is a Monte-Carlo estimate."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: the discrete-time loss needs n_steps >= 1")
    i = torch.randint(1, n_steps + 1, (x.shape[0],), device=x.device)
    t_prev = ((i - 1) / n_steps).to(x.dtype)
    mu = _checked_flow_sample(x, schedule, t_prev)
    probs = predict_bins(mu, t_prev)  # (B, D, K)
    alpha = (schedule.beta(i / n_steps) - schedule.beta((i - 1) / n_steps)).to(x.dtype)  # (B,) alpha_i
    centres = bins.centres(x.dtype, x.device)
    kl = gaussian_to_mixture_kl(
        sender_mean=x.flatten(1).unsqueeze(-1),  # (B, D, 1): one-dimensional Gaussians
        mixture_means=centres.view(1, 1, -1, 1),  # (1, 1, K, 1)
        mixture_weights=probs.flatten(1, -2),  # (B, D, K)
        variance=(1 / alpha).view(-1, 1),  # (B, 1)
        n_samples=n_samples,
    )  # (B, D)
    return n_steps * kl.mean(1)


def reconstruction_loss(predict_bins: BinPredictor, x: Tensor, schedule: ContinuousSchedule, bins: Bins) -> Tensor:
    """L^r per sample, nats/dim: -ln p_O(x | theta; 1), theta ~ p_F(. | x; 1)."""
    t = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    probs = predict_bins(_checked_flow_sample(x, schedule, t), t)  # (B, D, K)
    log_p = torch.log(probs.clamp_min(1e-12).gather(-1, bins.index(x).flatten(1).unsqueeze(-1)).squeeze(-1))
    return -log_p.mean(1)


def bin_sampler(predict_bins: BinPredictor, bins: Bins) -> Callable[[Tensor, Tensor], Tensor]:
    """A draw from the output distribution: a bin centre k_c with k ~ p_O(. | theta; t), shaped like mu."""

    def sample_output(mu: Tensor, t: Tensor) -> Tensor:
        probs = predict_bins(mu, t)  # (B, D, K)
        k = torch.distributions.Categorical(probs=probs).sample()
        return bins.centres(mu.dtype, mu.device)[k].view_as(mu)

    return sample_output


def bin_mode(predict_bins: BinPredictor, bins: Bins) -> Callable[[Tensor, Tensor], Tensor]:
    """The most probable bin's centre under p_O(. | theta; t), shaped like mu."""

    def mode_output(mu: Tensor, t: Tensor) -> Tensor:
        return bins.centres(mu.dtype, mu.device)[predict_bins(mu, t).argmax(-1)].view_as(mu)

    return mode_output


def original_sampler(
    predict_bins: BinPredictor,
    shape: tuple[int, ...],
    n_steps: int,
    schedule: ContinuousSchedule,
    bins: Bins,
    *,
    final: str = "sample",
    **kwargs,
) -> BFNSamples:
    """The BFN sampler for discretised data: as for continuous data, but each step's output sample is a bin
    centre drawn from p_O; the final output is such a draw (``final="sample"``) or the most probable bin
    (``final="mode"``, what the released BFN code returns). NFE = n_steps + 1."""
    if final not in ("sample", "mode"):
        raise ValueError(f"final={final!r}: allowed values are ('sample', 'mode')")
    draw = bin_sampler(predict_bins, bins)
    if final == "sample":
        return continuous.original_sampler(draw, shape, n_steps, schedule, **kwargs)
    mode = bin_mode(predict_bins, bins)

    def sample_output(mu: Tensor, t: Tensor) -> Tensor:  # the last call (t = 1) returns the mode
        return mode(mu, t) if bool((t >= 1.0).all()) else draw(mu, t)

    return continuous.original_sampler(sample_output, shape, n_steps, schedule, **kwargs)
