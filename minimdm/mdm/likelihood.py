"""Likelihood of an answer given a prompt, and of a corpus, from a masked diffusion model (LLaDA, Nie et al. 2025,
arXiv 2502.09992; estimators in docs/derivations.md).

An MDM has no exact log-likelihood, but its conditional ELBO bounds it:

    log p_theta(a | c) >= -L(a | c),   L(a | c) = E_{l ~ U{1..n}} (n / l) E_{|S| = l} sum_{i in S} -log p_theta(a^i | c, a with S masked)

where n is the answer length and the prompt c is never masked. The Monte Carlo draws come from
``minimdm.mdm.elbo.elbo_draws`` (one implementation of the estimators):

* the **l-estimator** (LLaDA's ``get_log_likelihood``): mask exactly l answer tokens, weight n / l;
* the **t-estimator** (SMDM's): mask each answer token with probability t, weight 1 / t;
* ``stratified=True`` spreads the draws of one batch evenly (LLaDA's linspace of mask counts), so a batch mean
  is still unbiased but has less variance. Standard errors therefore come from independent *batches*.

Classifier-free guidance (SMDM's unsupervised CFG, arXiv 2410.18514) reuses the sampler's ``guided_logits``: the
unconditional branch sees the prompt replaced by masks. Multiple choice picks the candidate with the highest bound; with *common random numbers* every
candidate is scored under the same random stream (same mask counts, the same positions when lengths agree), so
the noise largely cancels in the comparison. That last part is not in LLaDA's code.
"""
from __future__ import annotations

import torch

from minimdm.checks import check_positive_int
from minimdm.mdm.denoiser import check_model_mask_id, check_token_ids, device_of, token_limits
from minimdm.mdm.elbo import Estimate, elbo_draws
from minimdm.mdm.sampler import check_cfg_scale, guided_logits


def _guided(denoiser, prompt_length: int, mask_id: int, cfg_scale: float):
    """The denoiser with CFG applied, treating the first ``prompt_length`` columns as the prompt."""
    if cfg_scale == 0:
        return denoiser

    def guided(xt: torch.Tensor) -> torch.Tensor:
        prompt_mask = torch.zeros_like(xt, dtype=torch.bool)
        prompt_mask[:, :prompt_length] = True
        return guided_logits(denoiser, xt, prompt_mask, mask_id, cfg_scale)[0]

    return guided


def _as_ids(ids, name: str, device) -> torch.Tensor:
    ids = torch.as_tensor(ids, device=device)
    if ids.numel() and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")  # 3.7 would be read as 3
    ids = ids.long()
    if ids.dim() != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
    return ids


def answer_log_likelihood(denoiser, prompt, answer, mask_id: int, *, estimator: str = "l", mc_num: int = 128,
                          batch_size: int = 16, stratified: bool = True, cfg_scale: float = 0.0,
                          generator: torch.Generator | None = None, device=None, suffix=()) -> Estimate:
    """Monte Carlo lower bound on log p(answer | prompt) in nats, with its standard error.

    A ``suffix`` (ids after the answer, e.g. a line's closing token) is context that is never masked, in the guided
    branch too: the bound is then on log p(answer | prompt, suffix), and the sequence keeps its full length.

    ``mc_num`` masked copies are scored, ``batch_size`` per network call; the estimate averages
    mc_num / batch_size independent batch means (at least 2, so that there is a standard error). The ids go to
    ``device`` (default: where the denoiser's parameters live), and so must ``generator``.
    """
    if batch_size < 1 or mc_num < 2 * batch_size or mc_num % batch_size:
        raise ValueError(f"mc_num={mc_num} must be a multiple of batch_size={batch_size} and at least twice it")
    check_model_mask_id(denoiser, mask_id)  # before the guidance wrapper hides the model's config
    check_cfg_scale(cfg_scale)  # nan would make every estimate nan
    device = device_of(denoiser) if device is None else torch.device(device)
    prompt, answer = _as_ids(prompt, "prompt", device), _as_ids(answer, "answer", device)
    suffix = _as_ids(suffix, "suffix", device)
    if answer.numel() == 0:
        raise ValueError("answer is empty: there is nothing to score")
    for name, ids in (("prompt", prompt), ("answer", answer), ("suffix", suffix)):
        check_token_ids(ids, name, mask_id, token_limits(denoiser)[0], dim=1)  # no mask, ids in the vocabulary
    sequence = torch.cat([prompt, answer, suffix])  # (P + n + s,)
    position = torch.arange(sequence.numel(), device=sequence.device)
    maskable = (position >= prompt.numel()) & (position < prompt.numel() + answer.numel())  # the answer only
    draws = elbo_draws(_guided(denoiser, prompt.numel(), mask_id, cfg_scale), sequence.expand(batch_size, -1),
                       mask_id, estimator, mc_num // batch_size, maskable, stratified, generator)  # (R, B) nats
    return Estimate.from_draws(-draws.mean(1))  # R independent batch means of -ELBO


def score_choices(denoiser, prompt, choices, mask_id: int, *, common_random_numbers: bool = True,
                  seed: int = 0, **likelihood_kwargs) -> list[Estimate]:
    """The likelihood bound of every candidate answer (list of id sequences) after one prompt.

    With ``common_random_numbers`` all candidates draw their masks from generators seeded alike;
    otherwise each candidate gets its own seed.
    """
    device = likelihood_kwargs.get("device")
    device = device_of(denoiser) if device is None else torch.device(device)
    scores = []
    for index, choice in enumerate(choices):
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if common_random_numbers else seed * 1_000_003 + index + 1)
        scores.append(answer_log_likelihood(denoiser, prompt, choice, mask_id, generator=generator, **likelihood_kwargs))
    return scores


def multiple_choice_accuracy(denoiser, items, mask_id: int, seed: int = 0, **score_kwargs) -> tuple[Estimate, list[int]]:
    """Accuracy of argmax-likelihood over ``items``, each (prompt ids, list of choice ids, index of the correct one).

    Returns (accuracy with its binomial standard error, the predicted index of every item).
    """
    predictions, correct = [], []
    for number, (prompt, choices, answer_index) in enumerate(items):
        scores = score_choices(denoiser, prompt, choices, mask_id, seed=seed * 1_000_003 + number, **score_kwargs)
        predicted = max(range(len(choices)), key=lambda i: scores[i].mean)
        predictions.append(predicted)
        correct.append(float(predicted == answer_index))
    return Estimate.from_draws(torch.tensor(correct)), predictions


def corpus_nelbo(denoiser, sequences: torch.Tensor, mask_id: int, *, estimator: str = "l", num_draws: int = 1,
                 batch_size: int = 64, generator: torch.Generator | None = None) -> Estimate:
    """Negative ELBO of a corpus in nats per token (an upper bound on its NLL, comparable with an ARM's).

    ``sequences`` (N, L): each row gets ``num_draws`` independent unstratified draws. A row's mean over its draws
    is one observation and the standard error is over rows: draws of one row share that row, so treating all
    (row, draw) values as independent would understate the error.
    """
    per_row = corpus_nelbo_per_sequence(denoiser, sequences, mask_id, estimator=estimator, num_draws=num_draws,
                                        batch_size=batch_size, generator=generator)
    return Estimate.from_draws(per_row)


def corpus_nelbo_per_sequence(denoiser, sequences: torch.Tensor, mask_id: int, *, estimator: str = "l",
                              num_draws: int = 1, batch_size: int = 64,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """``corpus_nelbo``'s observations: each row's negative ELBO per token, its draws averaged, (N,) float64. Two
    models scored on the same rows with the same generator seed can be compared row by row (a paired difference)."""
    if sequences.dim() != 2:
        raise ValueError(f"sequences must have shape (num_sequences, length), got {tuple(sequences.shape)}")
    check_positive_int("batch_size", batch_size)
    per_row = []
    for start in range(0, sequences.shape[0], batch_size):
        batch = sequences[start:start + batch_size]
        draws = elbo_draws(denoiser, batch, mask_id, estimator, num_draws, generator=generator)  # (R, b) nats/seq
        per_row.append(draws.mean(0) / batch.shape[1])
    return torch.cat(per_row).double()
