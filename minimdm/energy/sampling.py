"""The paper's per-token Bernoulli sampler, and prompt completion with either sampler for a trained MDM."""
from __future__ import annotations

import math

import torch

from minimdm.mdm.denoiser import check_model_mask_id, check_token_ids, logits_of, token_limits
from minimdm.checks import check_positive_int
from minimdm.mdm.sampler import SampleResult, check_temperature, generate, gumbel_argmax
from minimdm.mdm.schedules import Schedule


def time_grid(steps: int) -> torch.Tensor:
    """Course times 1 = t_0 > t_1 > ... > t_N = 0 on an even grid (the paper's tau_k = k/N), float64, (N+1,)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    return 1 - torch.arange(steps + 1, dtype=torch.float64) / steps


def unmask_probabilities(schedule: Schedule, steps: int) -> torch.Tensor:
    """r_j = (alpha_s - alpha_t) / (1 - alpha_t) for the step t = t_j -> s = t_{j+1}: the chance that a still-masked
    token is revealed (the paper's (alpha_{k+1} - alpha_k)/(1 - alpha_k)). alpha_0 = 1 makes the last r equal 1. (N,)"""
    alpha = schedule.alpha(time_grid(steps)).double()  # (N+1,) from alpha = 0 (all masked) up to 1
    return ((alpha[1:] - alpha[:-1]) / (1 - alpha[:-1])).clamp(0, 1)


@torch.no_grad()
def bernoulli_generate(denoiser, prompt: torch.Tensor | None = None, *, gen_length: int, steps: int, mask_id: int,
                       schedule: Schedule, temperature: float = 1.0, batch_size: int = 1, generator=None,
                       record_history: bool = True) -> SampleResult:
    """The per-token Bernoulli sampler (the continuous-time reverse process of Chen et al., arXiv 2509.13866, on
    the grid tau_k = k/N): at each step every still-masked token is revealed independently with
    probability r_j = (alpha_s - alpha_t)/(1 - alpha_t), its value drawn from p_theta(x^i | x_t). The number revealed
    per step is random (its mean follows the schedule); ``minimdm.mdm.sampler.generate`` fixes it instead (LLaDA).

    Same interface as ``generate``: prompt (B, P) or None (then batch_size rows); returns a SampleResult whose nfe
    counts denoiser calls (a step that reveals nothing skips the call: the prediction would not be used).
    """
    check_positive_int("gen_length", gen_length)
    check_temperature(temperature)  # nan would turn every proposal into token 0
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule={schedule!r} must be a Schedule (e.g. BetaCDFSchedule(a, b) or LinearSchedule())")
    check_model_mask_id(denoiser, mask_id)  # inside the vocabulary the sampler would run and return garbage
    device = prompt.device if prompt is not None else torch.device("cpu")
    if prompt is None:
        check_positive_int("batch_size", batch_size)
        prompt = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    check_token_ids(prompt, "prompt", mask_id, token_limits(denoiser)[0])  # (B, P) integer ids, no mask
    canvas = torch.full((prompt.shape[0], gen_length), mask_id, dtype=torch.long, device=device)
    x = torch.cat([prompt.long(), canvas], dim=1)  # (B, P + G)
    result = SampleResult(tokens=x, prompt_length=prompt.shape[1], mask_id=mask_id)
    if record_history:
        result.frames.append(x.cpu().clone())
    for reveal_prob in unmask_probabilities(schedule, steps).tolist():
        is_masked = x == mask_id
        reveal = is_masked & (torch.rand(x.shape, device=device, generator=generator) < reveal_prob)  # (B, L)
        if bool(reveal.any()):
            proposal = gumbel_argmax(logits_of(denoiser, x), temperature, generator)  # x_hat ~ p_theta(. | x_t)
            result.nfe += 1
            x = torch.where(reveal, proposal, x)
        if record_history:
            result.frames.append(x.cpu().clone())
    result.tokens = x
    return result


SAMPLERS = ("bernoulli", "fixed_counts", "low_confidence")
# what each sampler is, in words (for tables and legends)
SAMPLER_NAMES = {
    "bernoulli": "per-token Bernoulli reveals",
    "fixed_counts": "LLaDA sampler, random remasking",
    "low_confidence": "LLaDA sampler, low-confidence remasking",
}


def complete_prompts(denoiser, prompts: torch.Tensor, schedule: Schedule, *, gen_length: int, steps: int,
                     mask_id: int, sampler: str = "bernoulli", seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """Fill gen_length tokens after each prompt (B, P) with one of three samplers -> (B, P + G).

    * 'bernoulli': every still-masked token is revealed independently with probability r_j (``bernoulli_generate``);
      the number revealed per step is random, only its mean follows the schedule;
    * 'fixed_counts': the course's LLaDA ``generate`` with random remasking; the schedule sets how many tokens are
      committed at each step (m alpha at the grid, rounded, differenced: the counts sum to m), the positions are random;
    * 'low_confidence': the same counts in LLaDA's ``generate`` with low-confidence remasking, which commits the
      proposals the model is most sure of. Changing only the counts per step of this sampler is what the paper's
      LLaDA experiments do (arXiv 2509.13866, App. E.1).

    ``temperature`` is the sampling temperature of the proposals (1: sample from the model)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: allowed values are {SAMPLERS}")
    generator = torch.Generator(prompts.device).manual_seed(seed)
    kwargs = dict(gen_length=gen_length, steps=steps, mask_id=mask_id, schedule=schedule, temperature=temperature,
                  generator=generator, record_history=False)
    if sampler == "bernoulli":
        return bernoulli_generate(denoiser, prompts, **kwargs).tokens
    return generate(denoiser, prompts, remasking="random" if sampler == "fixed_counts" else "low_confidence", **kwargs).tokens


def completion_excess_nll(source, tokens: torch.Tensor, prompt_length: int):
    """Mean and standard error of [-log q(completion | prompt) - G H] / G in nats per token, for a stationary Markov
    source q with entropy rate H (``MarkovChain``): 0 for a perfect sampler, positive when tokens revealed together
    contradict each other. (Not a divergence: a sampler sharper than q could score below 0.)"""
    full, prompt = source.log_prob(tokens), source.log_prob(tokens[:, :prompt_length])  # (B,) each
    gen_length = tokens.shape[1] - prompt_length
    excess = (prompt - full) / gen_length - source.entropy_rate()  # (B,)
    return float(excess.mean()), float(excess.std() / math.sqrt(len(excess)))
