"""Zero-shot perplexity (RADD, arXiv 2406.03736): the NELBO per token of any corpus, an upper bound on its NLL."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minimdm.mdm.denoiser import device_of
from minimdm.mdm.elbo import Estimate
from minimdm.radd.losses import RADDLoss, get_loss


@dataclass
class PerplexityResult:
    nelbo_per_token: Estimate  # nats per token, an upper bound on the NLL, with a Monte Carlo standard error
    num_sequences: int
    seq_len: int

    @property
    def perplexity(self) -> float:
        """exp(NELBO per token) >= the true perplexity."""
        return math.exp(self.nelbo_per_token.mean)


@torch.no_grad()
def zero_shot_perplexity(model, data, mask_id: int, *, seq_len: int | None = None, loss: str | RADDLoss = "lambda_dce",
                         draws: int = 16, batch_size: int = 32, device=None, generator=None) -> PerplexityResult:
    """NELBO per token of ``data`` under ``model``: for each batch, ``draws`` stratified draws of ``loss``
    (eps = 0: unbiased), averaged; PPL = exp(mean / L) bounds the perplexity from above.

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
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = device if device is not None else device_of(model)
    values, count, length = [], 0, None
    for batch in batches:
        batch = batch.to(device)
        length, count = batch.shape[1], count + batch.shape[0]
        values += [loss(model, batch, generator=generator).double().cpu() / length for _ in range(draws)]
    if was_training:
        model.train()
    if not values:
        raise ValueError("data holds no sequence to evaluate")
    return PerplexityResult(Estimate.from_draws(torch.cat(values)), count, length)
