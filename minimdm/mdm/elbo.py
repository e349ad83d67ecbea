"""The ELBO of a masked diffusion model: exactly by enumeration, and by Monte Carlo with standard errors.

    -log p_theta(x_0) <= L(x_0) = int_0^1 (-alpha'_t / (1 - alpha_t)) E_{x_t} sum_{i masked} -log p_theta(x_0^i | x_t) dt

(docs/derivations.md derives the forms). For short sequences three exact forms must agree (and do, to ~1e-12):

* the continuous-time integral, by Gauss-Legendre quadrature over t, for any schedule;
* the k-form  L = sum_{k=1}^{L} f(k)/k, with f(k) the mean summed NLL over the k-subsets of masked positions;
* the any-order autoregressive (AO-ARM) form: the average over all L! orders of the chain-rule NLL.

Conditional versions (a prompt that is never masked) pass ``maskable``; only those positions are noised.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from minimdm.mdm.denoiser import check_model_mask_id, check_token_ids, logits_of, token_limits
from minimdm.mdm.forward import mask_tokens_l, mask_tokens_t, stratified_counts, stratified_uniform
from minimdm.mdm.schedules import Schedule, get_schedule


@dataclass
class Estimate:
    """A Monte Carlo mean with its standard error."""

    mean: float
    stderr: float
    num_draws: int

    @classmethod
    def from_draws(cls, draws: torch.Tensor) -> "Estimate":
        draws = draws.double().flatten()
        stderr = draws.std().item() / math.sqrt(draws.numel()) if draws.numel() > 1 else float("nan")
        return cls(draws.mean().item(), stderr, draws.numel())

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.stderr:.4f}"


@torch.no_grad()
def masked_nll(denoiser, x0: torch.Tensor, xt: torch.Tensor, is_masked: torch.Tensor) -> torch.Tensor:
    """Per-position -log p_theta(x_0^i | x_t) at masked positions, 0 elsewhere: (B, L) in float64."""
    log_probs = torch.log_softmax(logits_of(denoiser, xt).double(), dim=-1)
    nll = -log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    return torch.where(is_masked, nll, torch.zeros_like(nll))


def _maskable_positions(length: int, maskable: torch.Tensor | None) -> list[int]:
    positions = list(range(length)) if maskable is None else maskable.nonzero().flatten().tolist()
    if not positions:
        raise ValueError("maskable selects no position: there is nothing to score")
    return positions


def all_subsets(length: int, maskable: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """Every subset S of the maskable positions as a (2^n, length) bool tensor: row s masks the j-th maskable
    position when bit j of s is set (row 0 is the empty set)."""
    positions = _maskable_positions(length, maskable)
    n = len(positions)
    if n > 16:
        raise ValueError(f"exact enumeration needs at most 16 maskable positions, got {n}")
    bits = (torch.arange(2**n, device=device)[:, None] >> torch.arange(n, device=device)) & 1  # (2^n, n)
    subsets = torch.zeros(2**n, length, dtype=torch.bool, device=device)
    subsets[:, positions] = bits.bool()
    return subsets


@torch.no_grad()
def subset_nll_table(denoiser, x0: torch.Tensor, mask_id: int, maskable: torch.Tensor | None = None,
                     chunk: int = 4096):
    """Enumerate every subset S of the maskable positions of one sequence x0 (L,).

    Returns (subsets (2^n, L) bool, nll (2^n, L) float64) where row s masks subset s (see ``all_subsets``)
    and nll holds -log p_theta(x_0^i | x_0 with S masked) for i in S.
    """
    check_model_mask_id(denoiser, mask_id)
    subsets = all_subsets(x0.shape[0], maskable, x0.device)
    clean = x0.expand(subsets.shape[0], -1)
    nll = torch.cat([
        masked_nll(denoiser, clean[i:i + chunk], clean[i:i + chunk].masked_fill(subsets[i:i + chunk], mask_id),
                   subsets[i:i + chunk])
        for i in range(0, subsets.shape[0], chunk)
    ])
    return subsets, nll


def exact_elbo(denoiser, x0: torch.Tensor, mask_id: int, maskable: torch.Tensor | None = None) -> float:
    """L = sum_{k=1}^{n} f(k) / k  (the k-form), by enumerating all 2^n masks of one sequence x0 (L,)."""
    subsets, nll = subset_nll_table(denoiser, x0, mask_id, maskable)
    sizes, summed = subsets.sum(1), nll.sum(1)
    n = int(sizes.max())
    f = [summed[sizes == k].mean().item() for k in range(1, n + 1)]  # f(k): mean over the C(n,k) subsets
    return sum(f_k / k for k, f_k in zip(range(1, n + 1), f))


def elbo_by_quadrature(denoiser, x0: torch.Tensor, mask_id: int, schedule: str | Schedule | None = None,
                       maskable: torch.Tensor | None = None, nodes: int = 64) -> float:
    """The continuous-time integral over t, by Gauss-Legendre quadrature, for any schedule.

    At time t each maskable token is masked with probability lambda_t = 1 - alpha_t, so
    E_{x_t}[...] = sum_S lambda_t^|S| (1 - lambda_t)^(n - |S|) g(S), with g(S) the summed NLL of subset S.
    """
    schedule = get_schedule(schedule)
    subsets, nll = subset_nll_table(denoiser, x0, mask_id, maskable)
    sizes, summed = subsets.sum(1).double(), nll.sum(1)
    n = len(_maskable_positions(x0.shape[0], maskable))
    nodes_x, weights = np.polynomial.legendre.leggauss(nodes)
    t = torch.tensor((nodes_x + 1) / 2, dtype=torch.float64)  # map [-1, 1] -> [0, 1]
    lam = schedule.mask_prob(t)[:, None]  # (nodes, 1)
    expected_nll = (lam**sizes * (1 - lam) ** (n - sizes) * summed).sum(1)  # E_{x_t} sum_masked NLL
    integrand = schedule.loss_weight(t) * expected_nll
    return float((torch.tensor(weights) / 2 * integrand).sum())


def elbo_over_orders(denoiser, x0: torch.Tensor, mask_id: int, maskable: torch.Tensor | None = None) -> float:
    """AO-ARM form: E_{pi ~ U(S_n)} sum_j -log p_theta(x^{pi(j)} | x^{pi(<j)}), averaged over all n! orders."""
    positions = _maskable_positions(x0.shape[0], maskable)
    n = len(positions)
    if n > 8:
        raise ValueError(f"averaging over all n! orders needs n <= 8 maskable positions, got {n}")
    subsets, nll = subset_nll_table(denoiser, x0, mask_id, maskable)
    total = 0.0
    for order in itertools.permutations(range(n)):
        still_masked = 2**n - 1  # bit j set = j-th maskable position still masked
        for j in order:  # reveal position j given the ones revealed before it
            total += nll[still_masked, positions[j]].item()
            still_masked &= ~(1 << j)
    return total / math.factorial(n)


@torch.no_grad()
def elbo_draws(denoiser, x0: torch.Tensor, mask_id: int, estimator: str = "l", num_draws: int = 1,
               maskable: torch.Tensor | None = None, stratified: bool = False, generator=None) -> torch.Tensor:
    """Monte Carlo draws of the ELBO (nats per sequence), shape (num_draws, B). Each draw is unbiased.

    * ``"t"``: lambda ~ U(0,1), mask each maskable token with probability lambda, weight the masked NLL by 1/lambda.
      Unbiased, but its variance is (logarithmically) infinite: near lambda = 0 one masked token is hit with
      probability ~ n lambda and weighted 1/lambda, so E[draw^2] ~ int n/lambda dlambda diverges. Training clips
      lambda away from 0 for this reason; evaluation should prefer the l-estimator.
    * ``"l"``: l ~ U{1..n}, mask exactly l of the n maskable tokens, weight by n/l (LLaDA's lower-variance form).
    stratified=True spreads the batch's draws evenly (docs/derivations.md, Monte Carlo estimators); draws within one call are then not independent.
    """
    if estimator not in ("t", "l"):
        raise ValueError(f"estimator={estimator!r}: allowed values are 't' and 'l'")
    if num_draws < 1:
        raise ValueError(f"num_draws={num_draws} must be >= 1")
    check_model_mask_id(denoiser, mask_id)
    check_token_ids(x0, "x0", mask_id, token_limits(denoiser)[0])  # one reduction per call, not per draw
    batch = x0.shape[0]
    if maskable is not None and (maskable.dtype != torch.bool or maskable.dim() > x0.dim() or any(
            m not in (1, n) for m, n in zip(maskable.shape[::-1], x0.shape[::-1]))):
        raise ValueError(f"maskable must be a bool tensor broadcastable to x0's shape {tuple(x0.shape)}, "
                         f"got {maskable.dtype} {tuple(maskable.shape)}")
    maskable = torch.ones_like(x0, dtype=torch.bool) if maskable is None else maskable.expand_as(x0)
    n = maskable.sum(1)  # (B,) maskable length of each row
    if bool((n == 0).any()):
        raise ValueError("some row has no maskable position")
    draws = []
    for _ in range(num_draws):
        if estimator == "t":
            lam = stratified_uniform(batch, x0.device, generator) if stratified else torch.rand(batch, device=x0.device, generator=generator)
            lam = lam.clamp_min(torch.finfo(torch.float32).tiny)
            xt, is_masked = mask_tokens_t(x0, lam, mask_id, maskable, generator)
            weight = 1.0 / lam.double()
        else:
            if stratified:
                counts = stratified_counts(batch, n, x0.device, generator)
            else:
                counts = (torch.rand(batch, device=x0.device, generator=generator) * n).long() + 1
            xt, is_masked = mask_tokens_l(x0, counts, mask_id, maskable, generator)
            weight = n.double() / counts.double()
        draws.append(weight * masked_nll(denoiser, x0, xt, is_masked).sum(1))
    return torch.stack(draws)
