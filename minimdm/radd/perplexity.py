"""Likelihoods of an MDM (RADD, arXiv 2406.03736): the NELBO per token of any corpus (zero-shot perplexity, an upper
bound on the NLL), and the exact NLL of decoding in one fixed order (the AO-ARM view)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minimdm.mdm.denoiser import device_of
from minimdm.mdm.elbo import Estimate
from minimdm.nn import evaluation_mode
from minimdm.radd.losses import RADDLoss, get_loss
from minimdm.radd.sampling import order_tensor
from minimdm.radd.score import conditional_logits


@dataclass
class PerplexityResult:
    nelbo_per_token: Estimate  # nats per token, an upper bound on the NLL, with its standard error over the sequences
    num_sequences: int
    seq_len: int
    per_sequence: torch.Tensor  # (N,) float64: each sequence's NELBO per token, its draws averaged. Two models scored
    # on the same data are compared sequence by sequence (a paired difference), which cancels how hard each one is

    @property
    def perplexity(self) -> float:
        """exp(NELBO per token) >= the true perplexity."""
        return math.exp(self.nelbo_per_token.mean)


@torch.no_grad()
def zero_shot_perplexity(model, data, mask_id: int, *, seq_len: int | None = None, loss: str | RADDLoss = "lambda_dce",
                         draws: int = 16, batch_size: int = 32, device=None, generator=None) -> PerplexityResult:
    """NELBO per token of ``data`` under ``model``: for each batch, ``draws`` stratified draws of ``loss``
    (eps = 0: unbiased), averaged; PPL = exp(mean / L) bounds the perplexity from above. The standard error is taken
    over the sequences, each one's draws averaged first: draws of the same sequence are not independent of each
    other (they share how hard that sequence is), so treating them as independent would understate it.

    ``data``: windows (N, L) (e.g. ``TokenStream.windows('val')``), a 1-D token stream cut into seq_len windows,
    or an iterable of (B, L) batches.
    """
    if draws < 1:
        raise ValueError(f"draws={draws} must be a positive integer")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    loss = get_loss(loss, mask_id, eps=0.0) if isinstance(loss, str) else loss
    if isinstance(data, torch.Tensor):
        if data.dim() == 1:
            if seq_len is None or seq_len < 1:
                raise ValueError(f"seq_len={seq_len}: a 1-D token stream needs a positive seq_len to cut windows")
            data = data[: len(data) // seq_len * seq_len].view(-1, seq_len)
        batches = data.split(batch_size)
    else:
        batches = data
    device = device if device is not None else device_of(model)
    per_sequence, length = [], None
    with evaluation_mode(model):
        for batch in batches:
            batch = batch.to(device)
            length = batch.shape[1]
            batch_draws = torch.stack([loss(model, batch, generator=generator).double().cpu() / length
                                       for _ in range(draws)])  # (draws, B)
            per_sequence.append(batch_draws.mean(0))
    if not per_sequence:
        raise ValueError("data holds no sequence to evaluate")
    per_sequence = torch.cat(per_sequence)
    return PerplexityResult(Estimate.from_draws(per_sequence), len(per_sequence), length, per_sequence)


@torch.no_grad()
def ordered_nll(denoiser, x0: torch.Tensor, mask_id: int, order="left_to_right", batch_size: int = 4096) -> torch.Tensor:
    """Exact NLL (nats per sequence, (B,) float64) of ``x0`` (B, L) under ``ordered_sample`` with a fixed order pi:
        -log p_pi(x) = sum_j -log c_theta(x^{pi(j)} | x^{pi(<j)})     (RADD's AO-ARM theorem)
    Each order is a proper generative model, so this is a likelihood, not a bound; its average over all L! orders
    is the NELBO. ``order``: 'left_to_right', 'right_to_left' or a permutation (L,) or (B, L) ('random' is refused:
    an order drawn per call would make the number a one-draw estimate of the NELBO, not a likelihood).
    The L canvases of a row (the first j positions of pi visible) go through the network together,
    ``batch_size`` canvases a call.
    """
    if x0.dim() != 2:
        raise ValueError(f"x0 must have shape (num_sequences, length), got {tuple(x0.shape)}")
    if isinstance(order, str) and order == "random":
        raise ValueError("order='random' draws a new order per call: pass 'left_to_right', 'right_to_left' or a "
                         "permutation tensor")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    B, L = x0.shape
    x0 = x0.to(device_of(denoiser))
    order = order_tensor(order, B, L, x0.device, None)  # (B, L): pi(j) per row
    # rank[b, i] = the step at which row b reveals position i; canvas j shows the positions with rank < j
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(L, device=x0.device).expand(B, -1))
    rows, steps = torch.arange(B, device=x0.device).repeat_interleave(L), torch.arange(L, device=x0.device).repeat(B)
    nll = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for start in range(0, B * L, batch_size):
        row, step = rows[start:start + batch_size], steps[start:start + batch_size]
        canvas = torch.where(rank[row] < step[:, None], x0[row], mask_id)  # (n, L)
        logits = conditional_logits(denoiser, canvas, (L - step).double() / L)
        position = order[row, step]
        log_probs = torch.log_softmax(logits[torch.arange(len(row), device=x0.device), position].double(), -1)
        nll.index_add_(0, row, -log_probs.gather(1, x0[row, position][:, None]).squeeze(1))
    return nll
