"""RADD's four losses (Ou et al. 2024, arXiv 2406.03736): t-DSE, t-DCE, lambda-DCE, k-DCE, behind one interface.

All four estimate the same NELBO, which equals the expected NLL of an any-order autoregressive model; the
core computes that average exactly (``minimdm.mdm.elbo.elbo_over_orders``, ``exact_elbo``), and
``exact_loss_expectation`` evaluates each loss's own code exactly, so the two can be compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from minimdm.mdm.denoiser import check_model_mask_id
from minimdm.mdm.forward import mask_tokens_l, mask_tokens_t, stratified_counts, stratified_uniform
from minimdm.mdm.loss import masked_cross_entropy
from minimdm.mdm.schedules import Schedule
from minimdm.radd.score import conditional_logits, noise_rate, resolve_schedule, score_scale


@dataclass
class NoiseDraw:
    """One draw of the forward noise for a batch: which positions are masked, and at what level."""

    is_masked: torch.Tensor  # (B, L) bool
    mask_ratio: torch.Tensor  # (B,) lambda = 1 - alpha_t: what a time-conditioned network is told
    time: torch.Tensor | None = None  # (B,) t, for the time-indexed losses (t-DSE, t-DCE)


class RADDLoss:
    """loss(model, x0) -> (B,) nats per sequence: weight(noise) * term(c_theta(x_t), x_0).

    ``draw`` samples the noise (from the global RNG unless a generator is given: the trainer reseeds it);
    ``noise_law`` lists every noise a loss can draw with its probability, so ``exact_loss_expectation`` can
    evaluate the very same ``per_sequence`` code exactly. ``training_loss`` is a trainer ``loss_fn``.
    eps > 0 keeps the noise level away from 0, where the 1/lambda weights have unbounded variance; eps = 0
    is the unbiased NELBO.
    """

    name = "radd"

    def __init__(self, mask_id: int, schedule: str | Schedule | None = None, eps: float = 1e-3, stratified: bool = True):
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"eps={eps} must lie in [0, 1)")
        self.mask_id, self.schedule, self.eps, self.stratified = mask_id, resolve_schedule(schedule), eps, stratified

    def draw(self, x0: torch.Tensor, maskable=None, generator=None) -> NoiseDraw:
        raise NotImplementedError

    def noise_law(self, length: int, nodes: int) -> tuple[NoiseDraw, torch.Tensor]:
        raise NotImplementedError

    def weight(self, noise: NoiseDraw, num_maskable: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def term(self, logits: torch.Tensor, x0: torch.Tensor, noise: NoiseDraw) -> torch.Tensor:
        """The DCE term sum_{i masked} -log c_theta(x_0^i | x_t): (B, L, K) -> (B,)."""
        return masked_cross_entropy(logits, x0, noise.is_masked).sum(1)

    def per_sequence(self, model, x0: torch.Tensor, noise: NoiseDraw, maskable=None) -> torch.Tensor:
        check_model_mask_id(model, self.mask_id)  # plain Python: free in the training loop
        if x0.dim() != 2 or x0.is_floating_point():
            raise ValueError(f"x0 must be integer token ids of shape (batch, length), got {x0.dtype} {tuple(x0.shape)}")
        xt = x0.masked_fill(noise.is_masked, self.mask_id)
        term = self.term(conditional_logits(model, xt, noise.mask_ratio), x0, noise)
        num_maskable = torch.full_like(noise.mask_ratio, x0.shape[1]) if maskable is None else maskable.sum(1).double()
        return self.weight(noise, num_maskable).to(term.dtype) * term

    def __call__(self, model, x0: torch.Tensor, maskable=None, generator=None) -> torch.Tensor:
        return self.per_sequence(model, x0, self.draw(x0, maskable, generator), maskable)

    def training_loss(self, model, x0: torch.Tensor) -> torch.Tensor:
        """Per-token loss: normalised by all B*L positions (an unbiased per-token bound)."""
        return self(model, x0).sum() / x0.numel()

    def __repr__(self):
        return f"{type(self).__name__}(schedule={self.schedule}, eps={self.eps}, stratified={self.stratified})"


class _LevelLoss(RADDLoss):
    """Losses whose noise is a level u ~ U(0,1) mapped to (t, lambda); tokens are then masked i.i.d. with prob lambda."""

    def levels(self, u: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        raise NotImplementedError

    def uniforms(self, batch: int, device, generator) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, x0, maskable=None, generator=None):
        u = self.uniforms(x0.shape[0], x0.device, generator) if self.stratified else \
            torch.rand(x0.shape[0], device=x0.device, generator=generator)
        time, lam = self.levels(u.double())
        _, is_masked = mask_tokens_t(x0, lam, self.mask_id, maskable, generator)
        return NoiseDraw(is_masked, lam, time)

    def noise_law(self, length, nodes=64):
        """Every (quadrature node u_j, mask S): probability w_j lambda^|S| (1 - lambda)^(L - |S|)."""
        u, w = np.polynomial.legendre.leggauss(nodes)
        u, w = torch.tensor((u + 1) / 2), torch.tensor(w / 2)  # Gauss-Legendre on [0, 1]
        subsets = torch.cartesian_prod(*[torch.tensor([False, True])] * length).reshape(-1, length)  # (2^L, L)
        u_all, w_all = u.repeat_interleave(len(subsets)), w.repeat_interleave(len(subsets))
        is_masked = subsets.repeat(nodes, 1)
        time, lam = self.levels(u_all)
        k = is_masked.sum(1)
        probability = w_all * lam**k * (1 - lam) ** (length - k)
        return NoiseDraw(is_masked, lam, time), probability


class TimeDCE(_LevelLoss):
    """t-DCE: int_0^1 sigma(t) a(t) E sum_{i masked} -log c_theta(x_0^i | x_t) dt.

    t = (1 - eps) u + eps with u from the "vdm" stratified sampler. The official code scores -a log s_theta
    = -a log c_theta + a log(e^sigma_bar - 1); the second term is independent of theta and its expectation is
    L int_0^1 log(lambda / (1 - lambda)) d lambda = 0, so it only adds variance: we drop it.
    """

    name = "t_dce"

    def uniforms(self, batch, device, generator):
        return stratified_uniform(batch, device, generator)  # t_b = (u + b/B) mod 1

    def levels(self, u):
        t = ((1 - self.eps) * u + self.eps).clamp_min(torch.finfo(torch.float32).tiny)  # u = 0 happens
        return t, self.schedule.mask_prob(t).clamp_min(torch.finfo(torch.float32).tiny)

    def weight(self, noise, num_maskable):
        return self.schedule.loss_weight(noise.time)  # sigma(t) a(t) = -alpha'_t / (1 - alpha_t)  (1/t, log-linear)


class TimeDSE(TimeDCE):
    """t-DSE (SEDD's denoising score entropy) with the RADD score s_theta = a(t) c_theta:

        int_0^1 sigma(t) E sum_{i masked} [ sum_v s_theta(i,v) - a log s_theta(i, x_0^i) + a (log a - 1) ] dt

    With c_theta normalised, sum_v s = a and the bracket collapses to -a log c_theta: t-DSE = t-DCE draw by draw.
    It is written out here to show that, not to be cheaper.
    """

    name = "t_dse"

    def term(self, logits, x0, noise):
        log_c = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # (B, L, K)
        a = score_scale(self.schedule, noise.time).to(log_c.dtype)[:, None]  # (B, 1)
        score = a[..., None] * log_c.exp()  # s_theta(x_t, t)_{i, v}  (B, L, K)
        log_score_clean = a.log() + log_c.gather(-1, x0[..., None]).squeeze(-1)  # log s_theta(i, x_0^i)  (B, L)
        bracket = score.sum(-1) - a * log_score_clean + a * (a.log() - 1)
        return (bracket * noise.is_masked).sum(1)

    def weight(self, noise, num_maskable):
        return noise_rate(self.schedule, noise.time)  # sigma(t)


class LambdaDCE(_LevelLoss):
    """lambda-DCE: int_0^1 (1/lambda) E_{x_lambda} sum_{i masked} -log c_theta d lambda  (sigma a dt = d lambda / lambda).

    Schedule-free, and the same bound as the LLaDA/SMDM loss. lambda_b = (u_b + b)/B ("decoupled" stratification),
    then lambda = (1 - eps) lambda + eps.
    """

    name = "lambda_dce"

    def uniforms(self, batch, device, generator):
        return (torch.rand(batch, device=device, generator=generator) + torch.arange(batch, device=device)) / batch

    def levels(self, u):
        return None, ((1 - self.eps) * u + self.eps).clamp_min(torch.finfo(torch.float32).tiny)

    def weight(self, noise, num_maskable):
        return 1.0 / noise.mask_ratio


class KDCE(RADDLoss):
    """k-DCE, the any-order autoregressive loss: k ~ U{1..n}, mask exactly k positions, weight n/k.

    E_k (n/k) E_{|S|=k} sum_{i in S} -log c_theta(x^i | x^{not S}) = E_pi [AO-ARM NLL]; ``stratified`` spreads k
    over the batch (each k_b is still uniform).
    """

    name = "k_dce"

    def draw(self, x0, maskable=None, generator=None):
        n = torch.full((x0.shape[0],), x0.shape[1], device=x0.device) if maskable is None else maskable.sum(1)
        if self.stratified:
            k = stratified_counts(x0.shape[0], n, x0.device, generator)
        else:
            k = (torch.rand(x0.shape[0], device=x0.device, generator=generator) * n).long() + 1
        _, is_masked = mask_tokens_l(x0, k, self.mask_id, maskable, generator)
        return NoiseDraw(is_masked, k.double() / n.double())

    def noise_law(self, length, nodes=None):
        """Every nonempty mask S: probability (1/L) / C(L, |S|)."""
        subsets = torch.cartesian_prod(*[torch.tensor([False, True])] * length).reshape(-1, length)[1:]
        k = subsets.sum(1)
        probability = torch.tensor([1.0 / (length * math.comb(length, int(j))) for j in k], dtype=torch.float64)
        return NoiseDraw(subsets, k.double() / length), probability

    def weight(self, noise, num_maskable):
        return num_maskable / noise.is_masked.sum(1).double()  # n / k


LOSSES = {cls.name: cls for cls in (TimeDSE, TimeDCE, LambdaDCE, KDCE)}


def get_loss(name: str | RADDLoss, mask_id: int, **kwargs) -> RADDLoss:
    """get_loss('lambda_dce', mask_id) etc.; kwargs go to the loss (schedule, eps, stratified)."""
    if isinstance(name, RADDLoss):
        return name
    if name not in LOSSES:
        raise ValueError(f"loss={name!r}: allowed values are {sorted(LOSSES)}")
    return LOSSES[name](mask_id, **kwargs)


@torch.no_grad()
def exact_loss_expectation(loss: RADDLoss, model, x0: torch.Tensor, nodes: int = 64) -> float:
    """E[loss(model, x0)] for one short sequence x0 (L,), by feeding every noise in ``loss.noise_law`` through
    ``loss.per_sequence`` (exact for the polynomial integrands of lambda-DCE and, log-linear, t-DCE; L <= 12)."""
    if x0.dim() != 1 or x0.shape[0] > 12:
        raise ValueError(f"x0 must be one sequence of length <= 12, got shape {tuple(x0.shape)}")
    noise, probability = loss.noise_law(x0.shape[0], nodes)
    values = loss.per_sequence(model, x0.expand(len(probability), -1), noise).double()
    return float((probability * values).sum())
