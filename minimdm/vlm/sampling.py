"""Answering visual questions turn by turn, with the course's sampler (MDM) or greedy decoding (AR control).

LLaDA-V (arXiv 2505.16933, its inference procedure) generates a response by appending a canvas of masks to the prompt (text and
spliced image features) and running LLaDA's low-confidence remasking sampler; the answer is cut at the end-of-turn
token. A multi-turn dialogue is answered one turn at a time: the model's own answer stays in the canvas, the next
question is appended, and a fresh slot of masks follows. Image positions are part of the prompt, so the sampler
never masks them. An answer may hold text, the end-of-turn token and end-of-sequence padding only: every other
special token (image placeholder, role headers, BOS, padding) gets logit -inf. LLaDA-V's sampler bans BOS, EOS
and its role headers likewise; ours must allow ``<eos>``, which pads every answer slot.

Prompts of one batch must have the same length (the sampler appends the same canvas to every row); with fixed-size
answer slots, the length of a prompt depends only on which questions were asked, so rows are grouped by length.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from minimdm.mdm.sampler import SampleResult, generate
from minimdm.nn import evaluation_mode
from minimdm.vlm.dialogues import SINGLE_KINDS, SLOT, Dialogue, DialogueTokenizer, DigitImages, encode_question
from minimdm.vlm.model import VisionLanguageModel, bind_images


def answer_forbidden(tokenizer: DialogueTokenizer) -> tuple[int, ...]:
    """The token ids an answer slot must not hold: every special token but <eot> and <eos>."""
    return tuple(sorted(tokenizer.special_ids - {tokenizer.eot_id, tokenizer.eos_id}))


def mdm_answer(model: VisionLanguageModel, prompt: torch.Tensor, images: torch.Tensor | None, steps: int,
               forbidden: tuple[int, ...] = (), record_history: bool = False) -> SampleResult:
    """Fill one answer slot of SLOT masks after ``prompt`` (B, P) by low-confidence remasking in ``steps`` steps."""
    return generate(bind_images(model, images, forbidden), prompt, gen_length=SLOT, steps=steps, mask_id=model.mask_id,
                    remasking="low_confidence", record_history=record_history)


@torch.no_grad()
def ar_answer(model: VisionLanguageModel, prompt: torch.Tensor, images: torch.Tensor | None,
              forbidden: tuple[int, ...] = ()) -> torch.Tensor:
    """Greedy next-token decoding of SLOT tokens after ``prompt`` (B, P) -> (B, SLOT)."""
    denoiser, canvas = bind_images(model, images, forbidden), prompt
    for _ in range(SLOT):
        next_token = denoiser(canvas)[:, -1].argmax(-1, keepdim=True)
        canvas = torch.cat([canvas, next_token], dim=1)
    return canvas[:, prompt.shape[1]:]


@torch.no_grad()
def converse(model: VisionLanguageModel, tokenizer: DialogueTokenizer, dialogues: list[Dialogue],
             data: DigitImages | None, steps: int = SLOT, batch_size: int = 1024) -> list[list[str]]:
    """The model's answers to every turn of every dialogue, each turn conditioned on its own earlier answers.

    ``steps`` is the MDM sampler's step count (1 .. SLOT); an autoregressive model (attention="causal") decodes
    greedily instead and ignores it.
    """
    if not 1 <= steps <= SLOT:
        raise ValueError(f"steps={steps} must lie in 1..{SLOT} (the answer slot has {SLOT} tokens)")
    device = next(model.parameters()).device
    canvases = [[tokenizer.bos_id] for _ in dialogues]
    forbidden = answer_forbidden(tokenizer)
    answers: list[list[str]] = [[] for _ in dialogues]
    with evaluation_mode(model):
        for turn in range(max(len(d.turns) for d in dialogues)):
            groups = defaultdict(list)  # (prompt length, has an image) -> dialogue numbers
            for i, dialogue in enumerate(dialogues):
                if turn < len(dialogue.turns):
                    canvases[i] += encode_question(tokenizer, dialogue, turn)
                    groups[len(canvases[i]), dialogue.context is None].append(i)
            for (_, has_image), members in groups.items():
                for start in range(0, len(members), batch_size):
                    rows = members[start: start + batch_size]
                    prompt = torch.tensor([canvases[i] for i in rows], device=device)
                    images = data.images[[dialogues[i].image for i in rows]].to(device) if has_image else None
                    if model.attention == "causal":
                        slots = ar_answer(model, prompt, images, forbidden)
                    else:
                        slots = mdm_answer(model, prompt, images, steps, forbidden).generated
                    for i, slot in zip(rows, slots.cpu()):
                        canvases[i] += slot.tolist()
                        answers[i].append(tokenizer.answer_text(slot))
    return answers


def accuracy_by_kind(dialogues: list[Dialogue], answers: list[list[str]]) -> dict[str, float]:
    """Exact match of single questions per kind, and of the second answer of multi-turn dialogues ("turn 2")."""
    hits, counts = defaultdict(int), defaultdict(int)
    for dialogue, predicted in zip(dialogues, answers):
        if len(dialogue.turns) == 1:
            key = dialogue.turns[0].kind
            hits[key] += predicted[0] == dialogue.turns[0].answer
            counts[key] += 1
        else:
            hits["turn 2"] += predicted[1] == dialogue.turns[1].answer
            counts["turn 2"] += 1
    order = [k for k in (*SINGLE_KINDS, "turn 2") if counts[k]]
    return {key: hits[key] / counts[key] for key in order}


def evaluate(model: VisionLanguageModel, tokenizer: DialogueTokenizer, dialogues: list[Dialogue],
             data: DigitImages | None, steps: int = SLOT) -> dict[str, float]:
    """Exact-match accuracy per question kind (see accuracy_by_kind) of answers generated turn by turn."""
    return accuracy_by_kind(dialogues, converse(model, tokenizer, dialogues, data, steps))
