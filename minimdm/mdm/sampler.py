"""LLaDA's sampler (arXiv 2502.09992, §2.4): fill a canvas of masks in a fixed number of steps.

At each step the denoiser proposes a token for every masked position; a *transfer count* of them is
committed and the rest are remasked. Which ones are kept is the remasking strategy (LLaDA §2.4 and its
appendix's remasking algorithms):

* ``"random"``: uniformly random positions. With steps = gen_length, one block and temperature 1 this is exactly
  the any-order autoregressive sampler, whose law is the data law when the conditionals are exact (RADD,
  arXiv 2406.03736, shows that absorbing diffusion and any-order autoregressive models share one objective);
* ``"low_confidence"``: the positions whose proposal the model is most sure of (mode-seeking).

End tokens: ``logits_eos_inf`` never proposes EOS; ``confidence_eos_eot_inf`` is the option of LLaDA's reference
sampler, reproduced exactly (see ``generate``); ``eos_eot_last`` is a gentler variant of ours that only moves EOS /
EoT proposals to the back of the queue.

``block_length < gen_length`` fills the canvas block by block, left to right ("semi-autoregressive"); attention
still sees the whole canvas. With ``record_history=True`` the sampler records every frame, the model's
probability of each committed token, and its current top proposal at every masked position, so widgets and
plots only scrub a history.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minimdm.checks import check_positive_int, is_finite_number, is_integer
from minimdm.mdm.denoiser import check_embedding_id, check_mask_id, check_token_ids, logits_of, token_limits
from minimdm.mdm.schedules import Schedule

REMASKING = ("low_confidence", "random")


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, P + G) final canvas, prompt included
    prompt_length: int
    mask_id: int
    frames: list[torch.Tensor] = field(default_factory=list)  # canvas after each step, frames[0] = start
    # (B, P+G) per frame: the model's probability of each committed token when it was committed (softmax of the
    # step's logits, after guidance and logits_eos_inf, at temperature 1), nan where nothing is committed yet
    confidences: list[torch.Tensor] = field(default_factory=list)
    nfe: int = 0  # network evaluations (a CFG step counts 2)
    # Optional, per frame k: the model's top proposal (argmax of the logits computed on frame k, i.e. the next
    # step's logits) and its probability at every position still masked in frame k; -1 / nan elsewhere
    proposals: list[torch.Tensor] = field(default_factory=list)  # (B, P+G) long
    proposal_probs: list[torch.Tensor] = field(default_factory=list)  # (B, P+G) float

    @property
    def generated(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_length:]


def transfer_counts(num_masked: torch.Tensor, steps: int, schedule: Schedule | None = None) -> torch.Tensor:
    """How many tokens to reveal at each of ``steps`` steps: (B,) -> (B, steps), rows sum to num_masked.

    schedule=None is LLaDA's rule for the linear schedule: floor(m/n) per step, the remainder m mod n
    going one each to the first steps. With a schedule alpha, the count revealed by step j is
    round(m * alpha(t_j)) at the grid t_j = 1 - j/n (the expected number unmasked at t_j), differenced.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer")
    num_masked = torch.as_tensor(num_masked).reshape(-1, 1)
    if schedule is None:
        base = num_masked // steps
        remainder = num_masked % steps
        return base + (torch.arange(steps, device=num_masked.device) < remainder).long()
    grid = 1.0 - torch.arange(steps + 1, dtype=torch.float64) / steps  # t_0 = 1 (all masked) ... t_n = 0 (clean)
    revealed = torch.round(num_masked.double().cpu() * schedule.alpha(grid)[None]).long()  # (B, n+1)
    revealed[:, 0], revealed[:, -1] = 0, num_masked.flatten().cpu()  # alpha_1 = 0, alpha_0 = 1 exactly
    return revealed.diff(dim=1).clamp_min(0).to(num_masked.device)


def guided_logits(denoiser, x: torch.Tensor, prompt_mask: torch.Tensor, mask_id: int, cfg_scale: float):
    """Unsupervised classifier-free guidance (SMDM, arXiv 2410.18514; LLaDA §2.4).

    The unconditional input is x with its prompt positions replaced by the mask (generated tokens kept):
        l = l_u + (w + 1)(l_c - l_u)
    w = 0 is the plain conditional model. Returns (logits, number of network evaluations).
    """
    if cfg_scale == 0:
        return logits_of(denoiser, x), 1
    unconditional = x.masked_fill(prompt_mask, mask_id)
    both = logits_of(denoiser, torch.cat([x, unconditional]))
    conditional, unconditional = both.chunk(2)
    return unconditional + (cfg_scale + 1) * (conditional - unconditional), 2


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """Sample from softmax(logits / tau) as argmax(logits / tau + g), g ~ Gumbel, in float64 (as LLaDA's code does).

    float64 matters: in low precision the Gumbel noise is coarse and the effective temperature drops.
    temperature 0 is the greedy argmax.
    """
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return (logits.double() / temperature + gumbel).argmax(-1)


def check_temperature(temperature) -> None:
    if not (is_finite_number(temperature) and temperature >= 0):
        # nan would turn every proposal into token 0
        raise ValueError(f"temperature={temperature} must be a finite number >= 0 (0 is greedy)")


def check_cfg_scale(cfg_scale) -> None:
    if not (is_finite_number(cfg_scale) and cfg_scale >= 0):
        raise ValueError(f"cfg_scale={cfg_scale} must be a finite number >= 0 (0 turns guidance off)")


def _check_arguments(gen_length, steps, block_length, remasking, temperature, cfg_scale, mask_id, vocab_size,
                     embedding_size):
    check_positive_int("gen_length", gen_length)
    if not is_integer(block_length) or block_length < 1 or gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be divisible by block_length={block_length}")
    num_blocks = gen_length // block_length
    if not is_integer(steps) or steps < 1 or steps % num_blocks:
        raise ValueError(f"steps={steps} must be a positive multiple of the number of blocks ({num_blocks} = gen_length / block_length)")
    if steps > gen_length:  # every step past one token per step would run the network and commit nothing
        raise ValueError(f"steps={steps} exceeds gen_length={gen_length}: use at most one step per generated token")
    if remasking not in REMASKING:
        raise ValueError(f"remasking={remasking!r}: allowed values are {REMASKING}")
    check_temperature(temperature)
    check_cfg_scale(cfg_scale)
    if vocab_size is not None:
        check_mask_id(mask_id, vocab_size)
    if embedding_size is not None:
        check_embedding_id(mask_id, embedding_size)


def _check_end_ids(eos_id, eot_id, mask_id, vocab_size) -> None:
    """End-token ids index the logits: -1 would silently pick the last token, a large id fail inside torch."""
    for name, value in (("eos_id", eos_id), ("eot_id", eot_id)):
        if value is None:
            continue
        if not is_integer(value) or value < 0 or value == mask_id or (vocab_size is not None and value >= vocab_size):
            allowed = "an id >= 0" if vocab_size is None else f"an id in 0..{vocab_size - 1} (the vocabulary)"
            raise ValueError(f"{name}={value!r}: allowed is {allowed}, not the mask id, or None")


def _check_prompt(prompt: torch.Tensor, mask_id: int, vocab_size: int | None) -> None:
    if prompt.dim() == 2 and prompt.shape[0] == 0:
        raise ValueError("the batch is empty (prompt has 0 rows): ask for at least one sample")
    check_token_ids(prompt, "prompt", mask_id, vocab_size)


@torch.no_grad()
def generate(denoiser, prompt: torch.Tensor | None = None, *, gen_length: int, steps: int, mask_id: int,
             block_length: int | None = None, remasking: str = "low_confidence", temperature: float = 0.0,
             schedule: Schedule | None = None, cfg_scale: float = 0.0, batch_size: int = 1,
             eos_id: int | None = None, eot_id: int | None = None, logits_eos_inf: bool = False,
             confidence_eos_eot_inf: bool = False, eos_eot_last: bool = False, vocab_size: int | None = None,
             generator=None, record_history: bool = True, device=None) -> SampleResult:
    """Generate gen_length tokens after ``prompt`` (B, P) (or unconditionally: batch_size rows on ``device``).

    Follows LLaDA's ``generate`` step by step (arXiv 2502.09992, §2.4); any ``schedule`` can also set the counts.
    Bad arguments raise a ``ValueError`` before the network runs. ``vocab_size`` (K) enables the checks that the
    mask id lies outside the vocabulary and the prompt's ids inside it; a minimdm ``Transformer`` supplies it
    itself, and its embedding size too.

    End tokens (``eos_id``, and ``eot_id`` for chat models):

    * ``logits_eos_inf``: the EOS logit is set to -inf before sampling, so EOS is never proposed.
    * ``confidence_eos_eot_inf``: exactly what LLaDA's reference sampler does. After the proposals are drawn, end
      logits are set to -inf and the low-confidence score is the softmax of *those* logits at the proposal:
      at temperature 0 both EOS and EoT, at temperature > 0 only EoT (in its code the EOS line then writes to the
      noisy copy of the logits, which is no longer read). An end proposal thus scores 0 and is committed last,
      and every other proposal's score is renormalised over the non-end tokens, which can reorder them too. With
      random remasking the scores are random draws and the option changes nothing, as in LLaDA's code.
    * ``eos_eot_last``: ours, gentler: EOS and EoT proposals (at any temperature, under either remasking) are
      ranked after every other candidate; all other scores, hence their order, are left as they were.

    Neither confidence option changes the proposals, only the order in which they are committed.

    ``record_history=True`` also records, per frame, the model's probability of every committed token (whatever
    chose its position: under random remasking the colour is still the model's probability, never the random
    draw) and the model's top proposal with its probability at every still-masked position. None of it is
    computed when ``record_history=False``.
    """
    block_length = gen_length if block_length is None else block_length
    model_vocab, embedding_size = token_limits(denoiser)
    vocab_size = model_vocab if vocab_size is None else vocab_size
    _check_arguments(gen_length, steps, block_length, remasking, temperature, cfg_scale, mask_id, vocab_size,
                     embedding_size)
    if (logits_eos_inf or confidence_eos_eot_inf or eos_eot_last) and eos_id is None:
        raise ValueError("logits_eos_inf / confidence_eos_eot_inf / eos_eot_last need eos_id")
    _check_end_ids(eos_id, eot_id, mask_id, vocab_size)
    if prompt is None and (not is_integer(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r}: the batch is empty; ask for at least one sample "
                         f"(a positive integer)")
    if prompt is not None:
        device = prompt.device
    elif device is None:  # unconditional: the denoiser's device if it has parameters, else the CPU
        first = next(denoiser.parameters(), None) if hasattr(denoiser, "parameters") else None
        device = first.device if first is not None else torch.device("cpu")
    if prompt is None:
        prompt = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    _check_prompt(prompt, mask_id, vocab_size)
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, dtype=torch.long, device=device)], dim=1)
    prompt_mask = torch.zeros_like(x, dtype=torch.bool)
    prompt_mask[:, :P] = True
    committed_probability = torch.full(x.shape, float("nan"), device=device)
    result = SampleResult(tokens=x, prompt_length=P, mask_id=mask_id)
    if record_history:
        result.frames.append(x.cpu().clone())
        result.confidences.append(committed_probability.cpu().clone())

    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    positions = torch.arange(x.shape[1], device=device)
    # LLaDA's code: at temperature 0 the noisy logits *are* the logits, so both of its -inf writes land there
    llada_ends = [i for i in ((eos_id, eot_id) if temperature == 0 else (eot_id,)) if i is not None]
    for block in range(num_blocks):
        block_end = P + (block + 1) * block_length
        in_block = (positions >= P + block * block_length) & (positions < block_end)
        counts = transfer_counts((x[:, in_block] == mask_id).sum(1), steps_per_block, schedule)  # (B, n)
        for step in range(steps_per_block):
            is_masked = x == mask_id
            logits, nfe = guided_logits(denoiser, x, prompt_mask, mask_id, cfg_scale)
            result.nfe += nfe
            if logits_eos_inf:
                logits[..., eos_id] = -torch.inf
            proposal = gumbel_argmax(logits, temperature, generator)  # x_hat (B, L)
            probs = torch.softmax(logits.double(), -1) if remasking == "low_confidence" or record_history else None
            model_probability = probs.gather(-1, proposal[..., None]).squeeze(-1) if probs is not None else None
            if record_history:  # what the model now thinks of the cells still masked in the previous frame
                top_probability, top_token = probs.max(-1)
                result.proposals.append(top_token.masked_fill(~is_masked, -1).cpu())
                result.proposal_probs.append(top_probability.float().masked_fill(~is_masked, float("nan")).cpu())
            if remasking == "low_confidence" and confidence_eos_eot_inf and llada_ends:
                ranked = logits.double().clone()
                ranked[..., llada_ends] = -torch.inf  # after sampling: the proposals keep their end tokens
                confidence = torch.softmax(ranked, -1).gather(-1, proposal[..., None]).squeeze(-1)
            elif remasking == "low_confidence":  # softmax(l)[x_hat], from the noise-free logits
                confidence = model_probability
            else:
                confidence = torch.rand(x.shape, dtype=torch.float64, device=device, generator=generator)
            if eos_eot_last:  # scores lie in [0, 1]: minus 2 ranks EOS / EoT after every other candidate
                is_end = proposal == eos_id if eot_id is None else (proposal == eos_id) | (proposal == eot_id)
                confidence = torch.where(is_end, confidence - 2.0, confidence)
            # Only masked positions inside the current block may be committed.
            confidence = confidence.masked_fill(~(is_masked & in_block), -torch.inf)
            rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
            commit = rank < counts[:, step, None]  # the top-s_j positions of each row
            x = torch.where(commit, proposal, x)
            if record_history:
                committed_probability = torch.where(commit, model_probability.float(), committed_probability)
                result.frames.append(x.cpu().clone())
                result.confidences.append(committed_probability.cpu().clone())
    if record_history:  # the last frame has no masked cells left, hence no proposals
        result.proposals.append(torch.full(x.shape, -1, dtype=torch.long))
        result.proposal_probs.append(torch.full(x.shape, float("nan")))
    result.tokens = x
    return result
