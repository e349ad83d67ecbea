"""Long-context evaluation: passkey exact match over (length x depth), NELBO against length, wrong-document rate.

Passkey retrieval for a masked diffusion model: the answer digits are replaced by the mask and predicted. With
``steps=1`` that is one forward pass and the argmax at each masked digit; the key is a deterministic function of
the context (a copy of the needle), so the digits need not be decoded one after another. ``steps > 1`` runs the
course's sampler (``minimdm.mdm.sampler.generate``, low-confidence remasking) instead, revealing the digits over
several forward passes as LLaDA does; it needs the answer at the end of the sequence (a needle-first document).
Every evaluation draws its documents from a fixed seed per cell, so all models are scored on the same documents.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minimdm.longctx.passkey import PasskeyBatch, PasskeyTask
from minimdm.longctx.training import denoiser_with_mask
from minimdm.mdm.denoiser import device_of
from minimdm.mdm.elbo import Estimate
from minimdm.mdm.likelihood import corpus_nelbo
from minimdm.mdm.sampler import generate
from minimdm.nn import evaluation_mode


def _generator(seed: int, length: int, index: int) -> torch.Generator:
    """One fixed stream of documents per (seed, length, cell index): every model meets the same documents."""
    return torch.Generator().manual_seed((seed * 1_000_003 + length) * 1009 + index + 1)


@torch.no_grad()
def predict_keys(model, batch: PasskeyBatch, use_doc_mask: bool = False, steps: int = 1) -> torch.Tensor:
    """The model's answer (B, key_length) with the asked document's answer digits masked."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer")
    mask_id, key_length = model.mask_id, batch.key.shape[1]
    denoiser = denoiser_with_mask(model, batch.doc_ids if use_doc_mask else None)
    if steps == 1:
        logits = denoiser(batch.tokens.masked_fill(batch.answer_mask, mask_id))  # (B, T, K)
        return logits.argmax(-1)[batch.answer_mask].view(-1, key_length)
    if not bool(batch.answer_mask[:, -key_length:].all()):
        raise ValueError("steps > 1 uses the sampler, which fills a canvas at the end: the answer must come last")
    prompt = batch.tokens[:, :-key_length]
    result = generate(denoiser, prompt, gen_length=key_length, steps=steps, mask_id=mask_id,
                      remasking="low_confidence", record_history=False)
    return result.generated


def exact_match(predicted: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """1 where all digits of the key are right, (B,) float."""
    return (predicted == key).all(1).float()


def answer_outcomes(predicted: torch.Tensor, key: torch.Tensor, other_keys: torch.Tensor):
    """(exact, wrong_document), each (B,) float: the own key, or (not it and) exactly another document's key.

    predicted, key (B, n); other_keys (B, D, n) padded with rows of -1, which never match a digit.
    """
    exact = exact_match(predicted, key)
    is_other = (predicted[:, None, :] == other_keys).all(-1).any(1)
    return exact, (is_other & (exact == 0)).float()


@dataclass
class PasskeyGrid:
    lengths: list[int]
    depths: list[float]
    accuracy: torch.Tensor  # (len(lengths), len(depths)) exact-match rate
    samples: int  # documents per cell

    @property
    def stderr(self) -> torch.Tensor:
        """Binomial standard error of each cell."""
        return (self.accuracy * (1 - self.accuracy) / self.samples).sqrt()


def passkey_grid(model, task: PasskeyTask, lengths, depths, samples: int, seed: int = 0, steps: int = 1,
                 batch_size: int = 64) -> PasskeyGrid:
    """Exact-match rate of single needle-first documents for every (length, depth) cell."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be a positive integer")
    device = device_of(model)
    accuracy = torch.zeros(len(lengths), len(depths))
    with evaluation_mode(model):
        for i, length in enumerate(lengths):
            for j, depth in enumerate(depths):
                generator = _generator(seed, length, j)
                hits = 0.0
                for start in range(0, samples, batch_size):
                    batch = task.documents(min(batch_size, samples - start), length, depth, generator, device)
                    hits += exact_match(predict_keys(model, batch, steps=steps), batch.key).sum().item()
                accuracy[i, j] = hits / samples
    return PasskeyGrid(list(lengths), list(depths), accuracy, samples)


def nelbo_by_length(model, task: PasskeyTask, lengths, samples: int, seed: int = 0, num_draws: int = 1,
                    batch_size: int = 32) -> list[Estimate]:
    """Masked-token NELBO (nats per token, l-estimator) of single passkey documents at each length."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be a positive integer")
    device = device_of(model)
    estimates = []
    with evaluation_mode(model):
        for length in lengths:
            generator = _generator(seed, length, -1)
            tokens = task.documents(samples, length, None, generator, device).tokens
            estimates.append(corpus_nelbo(model, tokens, model.mask_id, estimator="l", num_draws=num_draws,
                                          batch_size=batch_size,
                                          generator=torch.Generator(device=device).manual_seed(seed)))
    return estimates


@dataclass
class DistractorResult:
    exact: float  # the asked document's own key
    wrong_document: float  # another document's key, exactly
    samples: int

    def stderr(self, rate: float) -> float:
        return math.sqrt(rate * (1 - rate) / self.samples)


def distractor_rates(model, task: PasskeyTask, strategy: str, length: int, samples: int, max_doc_length: int,
                     seed: int = 0, batch_size: int = 32) -> DistractorResult:
    """Packs of several documents, each with its own key: how often the answer is right, or another document's."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be a positive integer")
    device = device_of(model)
    generator = _generator(seed, length, max_doc_length)  # the same documents for every strategy
    exact = wrong = 0.0
    with evaluation_mode(model):
        for start in range(0, samples, batch_size):
            batch = task.packs(min(batch_size, samples - start), length, strategy, max_doc_length=max_doc_length,
                               generator=generator, device=device)
            predicted = predict_keys(model, batch, use_doc_mask=strategy == "doc_mask")
            hit, other = answer_outcomes(predicted, batch.key, batch.other_keys)
            exact, wrong = exact + hit.sum().item(), wrong + other.sum().item()
    return DistractorResult(exact / samples, wrong / samples, samples)
