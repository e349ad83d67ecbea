"""Supervised fine-tuning of a masked diffusion model, as LLaDA does it (Nie et al. 2025, arXiv 2502.09992).

A training row is a *prompt*, which is never masked, followed by a *response canvas*: the answer, then |EOS|
repeated up to a fixed length. The EOS padding is an ordinary target (maskable, counted in the loss), which
teaches the model to fill the unused tail of a canvas with EOS; the decoder strips it. The loss is the
pretraining loss restricted to the response, normalised per sequence by the response length A_b (EOS padding
included):

    loss = 1/B sum_b 1/A_b sum_{i in response, masked} -log p_theta(x_0^i | x_t) / p_b,   p_b = (1 - eps) t_b + eps

A tiny chat template with role tokens turns conversations into (prompt, answer) pairs; a dialogue of n
assistant turns gives n pairs, each with the earlier turns folded into its prompt (as in LLaDA's SFT).

Layout, a deliberate simplification of LLaDA's: prompts are *left*-padded with ``pad_id`` (part of the prompt,
never masked, never scored) and the response canvas has a fixed length ``gen_length``. Training rows then look
exactly like the sampler's canvas ``[prompt; M^gen_length]``, so a batch of prompts of different lengths can be
generated together. (LLaDA right-pads prompt+answer with EOS to the longest row of the mini-batch instead.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from minimdm.mdm.loss import weighted_masked_nll

ROLES = ("system", "user", "assistant")


# --- chat template ---------------------------------------------------------------------------------------

@dataclass
class ChatTemplate:
    """``<bos> <user> question <eot> <assistant> answer <eot> <user> ... <assistant>`` then the answer + EOS padding.

    Every turn ends with ``<eot>`` except the answer being trained or generated, which ends with ``<eos>``
    (then more EOS up to the canvas), as in LLaDA's data layout.
    """

    encode: Callable[[str], list[int]]
    bos_id: int
    eos_id: int
    eot_id: int
    role_ids: dict[str, int]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ChatTemplate":
        """Any tokenizer with ``encode``, ``bos_id``, ``eos_id``, ``eot_id`` and ``role_ids`` (e.g. TaskTokenizer)."""
        return cls(tokenizer.encode, tokenizer.bos_id, tokenizer.eos_id, tokenizer.eot_id, dict(tokenizer.role_ids))

    def _turn(self, message: dict) -> list[int]:
        role = message.get("role")
        if role not in self.role_ids:
            raise ValueError(f"unknown chat role {role!r}: allowed roles are {tuple(self.role_ids)}")
        return [self.role_ids[role]] + self.encode(message["content"]) + [self.eot_id]

    def prompt(self, messages: list[dict]) -> list[int]:
        """Ids of a conversation so far, ending with the assistant header that asks for the next answer."""
        ids = [self.bos_id]
        for message in messages:
            ids += self._turn(message)
        return ids + [self.role_ids["assistant"]]

    def answer(self, text: str) -> list[int]:
        """Ids of the answer being trained on: its text then one EOS (more EOS pad the canvas)."""
        return self.encode(text) + [self.eos_id]

    def training_pairs(self, messages: list[dict]) -> list[tuple[list[int], list[int]]]:
        """One (prompt ids, answer ids) pair per assistant turn, the earlier turns folded into the prompt."""
        pairs = []
        for i, message in enumerate(messages):
            self._turn(message)  # validates the role
            if message["role"] == "assistant":
                pairs.append((self.prompt(messages[:i]), self.answer(message["content"])))
        if not pairs:
            raise ValueError("the conversation has no assistant turn to train on")
        return pairs


# --- canvases --------------------------------------------------------------------------------------------

def left_pad(sequences: list[list[int]], pad_id: int, mask_id: int, length: int | None = None) -> torch.Tensor:
    """Stack prompts right-aligned, padded on the left with ``pad_id``: -> (B, length).

    ``length`` defaults to the longest prompt. The pad must not be the mask: the sampler and the likelihood
    treat every mask as a position to fill (LLaDA's generate asserts the same).
    """
    if pad_id == mask_id:
        raise ValueError(f"pad_id={pad_id} equals mask_id; the pad must be a real token id other than {mask_id} "
                         "(LLaDA pads with EOS)")
    longest = max(len(s) for s in sequences)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a prompt of {longest} tokens is longer than the canvas's prompt part, "
                         f"prompt_length={length}: allowed are prompts of at most {length} tokens")
    rows = [[pad_id] * (length - len(s)) + list(s) for s in sequences]
    return torch.tensor(rows, dtype=torch.long)


@dataclass
class SFTBatch:
    tokens: torch.Tensor  # (B, P + G) clean rows: left-padded prompt, answer, EOS padding
    prompt_mask: torch.Tensor  # (B, P + G) bool, True on the prompt (pads included): never masked

    @property
    def prompt_length(self) -> int:
        return int(self.prompt_mask[0].sum())


def make_sft_batch(pairs: list[tuple[list[int], list[int]]], *, gen_length: int, pad_id: int, eos_id: int,
                   mask_id: int, prompt_length: int | None = None) -> SFTBatch:
    """(prompt ids, answer ids) pairs -> rows [pad.. prompt | answer EOS EOS ..] of a fixed response canvas."""
    if eos_id == mask_id:
        raise ValueError(f"eos_id={eos_id} equals mask_id; EOS must be a real token id other than {mask_id}")
    prompts = left_pad([p for p, _ in pairs], pad_id, mask_id, prompt_length)
    longest_answer = max(len(a) for _, a in pairs)
    if longest_answer > gen_length:
        raise ValueError(f"an answer of {longest_answer} tokens does not fit the response canvas "
                         f"gen_length={gen_length}: allowed are answers of at most {gen_length} tokens")
    answers = torch.tensor([list(a) + [eos_id] * (gen_length - len(a)) for _, a in pairs], dtype=torch.long)
    tokens = torch.cat([prompts, answers], dim=1)
    prompt_mask = torch.zeros_like(tokens, dtype=torch.bool)
    prompt_mask[:, : prompts.shape[1]] = True
    return SFTBatch(tokens, prompt_mask)


# --- the loss --------------------------------------------------------------------------------------------

def sft_loss(model, tokens: torch.Tensor, prompt_mask: torch.Tensor, mask_id: int, eps: float = 1e-3,
             stratified: bool = True) -> torch.Tensor:
    """LLaDA's SFT loss for clean rows ``tokens`` (B, L) whose ``prompt_mask`` (B, L) marks the prompt.

    One t per sample (stratified across the batch when asked; each t_b is still U(0,1)). Only response
    positions are masked, so only they are scored; each row is normalised by its response length A_b.
    """
    if prompt_mask.shape != tokens.shape or prompt_mask.dtype != torch.bool:
        raise ValueError(f"prompt_mask must be a bool tensor of shape {tuple(tokens.shape)}")
    response = ~prompt_mask
    response_length = response.sum(1)  # A_b, EOS padding included
    if bool((response_length == 0).any()):
        raise ValueError("some row has no response position: there is nothing to train on")
    # the pretraining integrand with the prompt never masked: CE_i / p_b on masked response positions
    weighted = weighted_masked_nll(model, tokens, mask_id, eps, stratified, maskable=response)
    per_row = weighted.sum(1) / response_length  # 1/A_b sum_{masked} CE_i / p_b
    return per_row.mean()
