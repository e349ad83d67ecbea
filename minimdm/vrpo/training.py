"""DPO-E training on the shared trainer, and the gradient noise of an estimator on real preference pairs."""
from __future__ import annotations

import copy

import torch

from minimdm.train import TrainConfig, TrainResult, resolve_device, train
from minimdm.vrpo.estimators import ELBOSampling
from minimdm.vrpo.objective import dpo_e_loss, exact_dpo_e, flat_gradient
from minimdm.vrpo.preference import PreferenceData


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference pi_ref: a copy of the starting policy, in eval mode, with no trainable parameter."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def train_dpo_e(policy, reference, data: PreferenceData, cfg: TrainConfig, *, sampling: ELBOSampling | None,
                beta: float = 0.1, batch_size: int = 16, eval_fn=None) -> TrainResult:
    """DPO-E on the shared trainer: each step draws ``batch_size`` pairs and one set of masks from the global RNG
    (which the trainer reseeds per step, so a run is reproducible and resumable). ``reference`` is frozen here.

    ``sampling=None`` trains on the exact ELBOs (every mask enumerated; answers of at most 16 tokens): the
    noise-free limit that the estimators approach.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    device = resolve_device(cfg.device)
    reference = reference.to(device).eval().requires_grad_(False)
    mask_id = policy.mask_id

    def batch_fn(step: int):
        return data.batch(torch.randint(len(data), (batch_size,)))

    def loss_fn(model, batch):
        chosen, rejected, answer_mask = batch
        if sampling is None:
            return exact_dpo_e(model, reference, chosen, rejected, answer_mask, mask_id, beta).loss
        return dpo_e_loss(model, reference, chosen, rejected, answer_mask, mask_id, sampling, beta).loss

    return train(policy, loss_fn, batch_fn, cfg, eval_fn)


def gradient_norms(policy, reference, data: PreferenceData, *, sampling: ELBOSampling, beta: float = 0.1,
                   batch_size: int = 16, repeats: int = 32, seed: int = 0) -> torch.Tensor:
    """|grad| of ``repeats`` independent DPO-E estimates on one fixed batch of pairs (R,): the estimator's noise."""
    generator = torch.Generator(device=data.chosen.device).manual_seed(seed)
    indices = torch.randperm(len(data), generator=generator)[:batch_size]
    chosen, rejected, answer_mask = data.batch(indices)
    parameters = [p for p in policy.parameters() if p.requires_grad]
    norms = [flat_gradient(dpo_e_loss(policy, reference, chosen, rejected, answer_mask, policy.mask_id, sampling,
                                      beta, generator).loss, parameters).norm() for _ in range(repeats)]
    return torch.stack(norms)
