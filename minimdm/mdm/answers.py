"""Answers from a fine-tuned masked diffusion model: conversations in, decoded assistant turns out.

The canvas is LLaDA's (Nie et al. 2025, arXiv 2502.09992, its inference procedure): the rendered
conversation, left-padded to a common width, then ``gen_length`` masks; the sampler fills them and the answer is
read up to the first EOS. The chat loop (``minimdm.chat``) and the preference data of VRPO (``minimdm.vrpo``) both
answer questions through here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from minimdm.mdm.sampler import generate
from minimdm.mdm.sft import ChatTemplate, left_pad

if TYPE_CHECKING:
    from minimdm.mdm.sampler import SampleResult


@dataclass
class Answers:
    texts: list[str]  # decoded answers, cut at the first EOS
    result: SampleResult  # the sampler's output and history (for the unmasking widget)


def answer_conversations(model, tokenizer, conversations: list[list[dict]], *, gen_length: int, steps: int,
                         block_length: int | None = None, remasking: str = "low_confidence",
                         temperature: float = 0.0, prompt_length: int | None = None, mask_id: int | None = None,
                         generator: torch.Generator | None = None, record_history: bool = False,
                         **sampler_kwargs) -> Answers:
    """The next assistant turn of every conversation (a list of {"role", "content"} messages), in one batch."""
    template = ChatTemplate.from_tokenizer(tokenizer)
    mask_id = model.mask_id if mask_id is None else mask_id
    device = next(iter(model.state_dict().values()), torch.empty(0)).device  # where the weights live
    prompts = left_pad([template.prompt(c) for c in conversations], tokenizer.pad_id, mask_id, prompt_length).to(device)
    result = generate(model, prompts, gen_length=gen_length, steps=steps, block_length=block_length, mask_id=mask_id,
                      remasking=remasking, temperature=temperature, eos_id=tokenizer.eos_id, eot_id=tokenizer.eot_id,
                      generator=generator, record_history=record_history, **sampler_kwargs)
    texts = [tokenizer.decode(row.tolist()) for row in result.generated]
    return Answers(texts, result)


def answer_prompts(model, tokenizer, prompts: list[str], **kwargs) -> Answers:
    """Single-turn questions: each prompt is one user message."""
    return answer_conversations(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], **kwargs)
