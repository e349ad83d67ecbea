"""RADD's samplers (Ou et al. 2024, arXiv 2406.03736): Tweedie / Euler tau-leaping with and without the cache, and the
ordered any-order autoregressive sampler. NFE is counted per row: a row's network evaluation counts once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from minimdm.checks import check_positive_int
from minimdm.mdm.denoiser import check_model_mask_id, check_token_ids, device_of, token_limits
from minimdm.mdm.sampler import SampleResult
from minimdm.mdm.schedules import Schedule
from minimdm.radd.score import conditional_logits, resolve_schedule

SAMPLING_METHODS = ("tweedie", "euler")
ORDERS = ("left_to_right", "right_to_left", "random")


@dataclass
class RADDSampleResult(SampleResult):
    """``nfe`` counts batched network calls; ``nfe_per_row`` (B,) counts the rows each call recomputed."""

    nfe_per_row: torch.Tensor | None = None

    @property
    def mean_nfe(self) -> float:
        return float(self.nfe_per_row.double().mean())


def expected_nfe(steps: int, length: int) -> float:
    """E-NFE of the cached sampler: N [1 - (1 - 1/N)^L]  (each token's reveal step is uniform over N steps)."""
    return steps * (1.0 - (1.0 - 1.0 / steps) ** length)


def _start_canvas(canvas, length, batch_size, mask_id, device, vocab_size=None):
    """The starting x_1: all masks, or a given canvas whose non-mask positions stay fixed (prefix, infilling)."""
    if canvas is None:
        if length is None or length < 1:
            raise ValueError(f"length={length} must be a positive integer (or pass a canvas)")
        check_positive_int("batch_size", batch_size)
        return torch.full((batch_size, length), mask_id, dtype=torch.long, device=device)
    check_token_ids(canvas, "canvas", mask_id, vocab_size, masks_allowed=True)
    return canvas.clone()


def _draw_from_cdf(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF categorical draw: cdf (..., K), u (...) in [0, 1) -> index. One uniform per position."""
    return (cdf < (u * cdf[..., -1])[..., None]).sum(-1)


def _check_grid(steps: int, final_time: float) -> None:
    check_positive_int("steps", steps)
    if not 0.0 < final_time < 1.0:
        raise ValueError(f"final_time={final_time} must lie in (0, 1)")


def reveal_probabilities(steps: int, schedule: Schedule, method: str = "tweedie", final_time: float = 1e-5) -> torch.Tensor:
    """P(a masked token is revealed at step k), k = 0..N-1, on the grid t_k = linspace(1, final_time, N+1).

    Tweedie: (alpha_s - alpha_t) / (1 - alpha_t);  Euler: (t - s) sigma(t) a(t).  The last step reveals all.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"method={method!r}: allowed values are {SAMPLING_METHODS}")
    _check_grid(steps, final_time)
    grid = torch.linspace(1.0, final_time, steps + 1, dtype=torch.float64)
    t, s = grid[:-1], grid[1:]
    if method == "tweedie":
        p = (schedule.alpha(s) - schedule.alpha(t)) / (1.0 - schedule.alpha(t))
    else:
        p = (t - s) * schedule.loss_weight(t)  # Delta t sigma(t) e^{-sigma_bar} / (1 - e^{-sigma_bar})
    p = p.clamp(0.0, 1.0)
    p[-1] = 1.0  # forced final step: nothing stays masked
    return p


def _begin(denoiser, canvas, length, batch_size, mask_id, device, record_history):
    """The starting canvas, an empty result (NFE counters, history with its first frame) and the confidences."""
    check_model_mask_id(denoiser, mask_id)  # inside the vocabulary the samplers would run and return garbage
    if device is None:
        device = canvas.device if canvas is not None else device_of(denoiser)
    x = _start_canvas(canvas, length, batch_size, mask_id, device, token_limits(denoiser)[0])
    confidence = torch.full(x.shape, float("nan"), device=device)
    nfe_per_row = torch.zeros(x.shape[0], dtype=torch.long, device=device)
    result = RADDSampleResult(tokens=x, prompt_length=0, mask_id=mask_id, nfe_per_row=nfe_per_row)
    if record_history:
        result.frames.append(x.cpu().clone())
        result.confidences.append(confidence.cpu().clone())
    return x, result, confidence


def draw_reveal_steps(masked: torch.Tensor, reveal_p: torch.Tensor, generator=None) -> torch.Tensor:
    """The step at which each masked token is revealed, drawn up front; visible tokens get N (never).

    A masked token is revealed at step k with probability p_k whatever the network says (the values come from
    c_theta, the coin does not), so its reveal step has P(k) = p_k prod_{j<k} (1 - p_j). One uniform per token,
    inverted through the CDF 1 - prod_{j<=k} (1 - p_j), draws it; the forced last step (p = 1) caps it at N-1.
    """
    cdf = (1.0 - torch.cumprod(1.0 - reveal_p, 0)).to(masked.device)  # P(revealed by step k), last = 1
    u = torch.rand(masked.shape, dtype=torch.float64, device=masked.device, generator=generator)
    step = torch.searchsorted(cdf, u, right=True)  # the first k with u < cdf_k
    return torch.where(masked, step, len(reveal_p))


@torch.no_grad()
def tau_leaping_sample(denoiser, *, steps: int, mask_id: int, length: int | None = None, batch_size: int = 1,
                       canvas: torch.Tensor | None = None, schedule: str | Schedule | None = None,
                       method: str = "tweedie", cache: bool = True, final_time: float = 1e-5, device=None,
                       generator=None, record_history: bool = True) -> RADDSampleResult:
    """RADD's sampler: at each of N steps every masked token is revealed with ``reveal_probabilities`` and
    takes a value drawn from c_theta(x_t)_i.

    Which tokens are revealed when does not depend on the network, so every token's reveal step is drawn before
    the first call (``draw_reveal_steps``), then one value uniform (B, L) per step, whether or not the network
    runs: the cached and uncached samplers read the same random stream. cache=True calls the network for a row
    only at the steps where that row reveals something, and draws the revealed values from that very call; the
    calls it skips are those whose outputs the uncached sampler computes and never reads. So the two give the
    same samples for any deterministic network (eval mode) that treats rows independently, with or without a
    time input. Its NFE per row is the number of distinct reveal steps, known up front: as many calls as RADD's
    form of the cache (call after each change, reuse the output while the row is unchanged), which is exact
    only because c_theta has no t.
    """
    _check_grid(steps, final_time)
    schedule = resolve_schedule(schedule)
    x, result, confidence = _begin(denoiser, canvas, length, batch_size, mask_id, device, record_history)
    B, L = x.shape
    device = x.device
    mask_ratio = schedule.mask_prob(torch.linspace(1.0, final_time, steps + 1, dtype=torch.float64)).to(device)
    reveal_step = draw_reveal_steps(x == mask_id, reveal_probabilities(steps, schedule, method, final_time), generator)
    # row_reveals[k, b]: row b reveals something at step k. One transfer to the host, then the loop never waits
    # for the GPU to decide what to run.
    row_reveals = torch.zeros(B, steps + 1, dtype=torch.bool, device=device).scatter_(1, reveal_step, True)[:, :steps].T
    calls = row_reveals if cache else torch.ones_like(row_reveals)
    result.nfe_per_row = calls.sum(0)
    calls_per_step = calls.sum(1).tolist()
    rows_per_step = torch.split(calls.nonzero()[:, 1], calls_per_step)  # device indices of the rows to recompute
    any_reveal = row_reveals.any(1).tolist()
    cdf = torch.zeros(B, L, 0, dtype=torch.float64, device=device)  # cumulative c_theta(x)_i of each row's last call
    for k in range(steps):
        value_u = torch.rand((B, L), dtype=torch.float64, device=device, generator=generator)
        if calls_per_step[k]:
            every_row = calls_per_step[k] == B
            subset = x if every_row else x[rows_per_step[k]]
            logits = conditional_logits(denoiser, subset, mask_ratio[k].expand(len(subset)))
            new_cdf = torch.softmax(logits.double(), -1).cumsum(-1)
            if every_row:
                cdf = new_cdf
            else:
                if cdf.shape[-1] == 0:
                    cdf = torch.zeros(B, L, new_cdf.shape[-1], dtype=torch.float64, device=device)
                cdf[rows_per_step[k]] = new_cdf
            result.nfe += 1
        if any_reveal[k]:
            reveal = reveal_step == k  # (B, L) the masked tokens revealed at this step
            values = _draw_from_cdf(cdf, value_u)  # x_0^i ~ c_theta(x_t)_i, (B, L)
            x = torch.where(reveal, values, x)
            if record_history:
                probs_now = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[..., :1]))  # back from the CDF
                picked = probs_now.gather(-1, values[..., None]).squeeze(-1)
                confidence = torch.where(reveal, picked.float(), confidence)  # c_theta(x_0^i = drawn value)
        if record_history:
            result.frames.append(x.cpu().clone())
            result.confidences.append(confidence.cpu().clone())
    result.tokens = x
    return result


def order_tensor(order, batch_size: int, length: int, device, generator) -> torch.Tensor:
    """The decoding order as (B, L) positions: a named order or a permutation (L,) or (B, L)."""
    if isinstance(order, str):
        if order not in ORDERS:
            raise ValueError(f"order={order!r}: allowed values are {ORDERS} or a permutation tensor")
        if order == "random":
            return torch.rand((batch_size, length), device=device, generator=generator).argsort(1)
        positions = torch.arange(length, device=device)
        return (positions if order == "left_to_right" else positions.flip(0)).expand(batch_size, -1)
    order = torch.as_tensor(order, device=device).long()
    order = order.expand(batch_size, -1) if order.dim() == 1 else order
    if order.shape != (batch_size, length) or not bool(
            (order.sort(1).values == torch.arange(length, device=device)).all()):
        raise ValueError(f"order must be a permutation of 0..{length - 1}, of shape ({length},) or ({batch_size}, {length})")
    return order


@torch.no_grad()
def ordered_sample(denoiser, *, mask_id: int, length: int | None = None, batch_size: int = 1, order="random",
                   canvas: torch.Tensor | None = None, device=None, generator=None,
                   record_history: bool = True) -> RADDSampleResult:
    """Any-order autoregressive decoding (RADD's OrderedSampler): reveal one position per network call,
    x^{pi(j)} ~ c_theta(. | x^{pi(<j)}), in the given order. Positions already visible in ``canvas`` are skipped.
    With order='random' the law of the samples is p_mix (docs/derivations.md): the data law for exact conditionals.
    """
    x, result, confidence = _begin(denoiser, canvas, length, batch_size, mask_id, device, record_history)
    B, L = x.shape
    device, nfe_per_row = x.device, result.nfe_per_row
    order = order_tensor(order, B, L, device, generator)
    # Step j fills position pi(j) and nothing else, so it is masked then iff it is masked now: which rows call
    # the network at each step is known up front (one transfer to the host, no waiting inside the loop).
    to_fill = (x.gather(1, order) == mask_id).T  # (L, B)
    calls_per_step = to_fill.sum(1).tolist()
    rows_per_step = torch.split(to_fill.nonzero()[:, 1], calls_per_step)
    for j in range(L):
        value_u = torch.rand(B, dtype=torch.float64, device=device, generator=generator)
        if not calls_per_step[j]:
            continue
        rows, position = rows_per_step[j], order[:, j]  # position: (B,) pi(j)
        lam = (x[rows] == mask_id).double().mean(1)
        logits = conditional_logits(denoiser, x[rows], lam)  # (R, L, K)
        probs = torch.softmax(logits[torch.arange(len(rows), device=device), position[rows]].double(), -1)  # (R, K)
        values = _draw_from_cdf(probs.cumsum(-1), value_u[rows])
        x[rows, position[rows]] = values
        confidence[rows, position[rows]] = probs.gather(1, values[:, None]).squeeze(1).float()
        nfe_per_row[rows] += 1
        result.nfe += 1
        if record_history:
            result.frames.append(x.cpu().clone())
            result.confidences.append(confidence.cpu().clone())
    result.tokens = x
    return result
