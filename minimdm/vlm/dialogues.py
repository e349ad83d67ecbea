"""Templated visual dialogues about scikit-learn's 8x8 digits, with answers a program can check.

Every dialogue is about one held-in or held-out digit image and has 1 to 3 turns:

* ``digit``     "digit?"     -> "7"
* ``parity``    "parity?"    -> "odd"
* ``plus``      "plus 3?"    -> "10"
* ``describe``  "describe"   -> "thick 7"   (the stroke is thick when the image has more ink than the median
  image of its digit in the training split: an exact rule, roughly balanced per digit, 34-49 % thick, since ties
  at the median count as thin)
* follow-ups that refer back to the previous answer: ``then_plus`` "that +2?" -> "12", ``then_even``
  "that even?" -> "yes".

The chat layout is LLaDA-V's (arXiv 2505.16933; LLaMA3-style role headers and end-of-turn tokens) shrunk to single tokens::

    <bos> <user> <image>x16 digit? <eot> <assistant> 7 <eot> <eos> <eos> ... <user> that +2? <eot> <assistant> ...

Each answer fills a fixed *slot* of ``SLOT`` tokens: its text, ``<eot>``, then ``<eos>`` padding. The slot is what
the loss supervises and what the sampler fills, so a training row and a sampling canvas look the same, and an answer
is read off by cutting at the first ``<eot>``. The image placeholder is one vocabulary id written once per image
feature position (``IMAGE_TOKENS`` = 16 copies in a row) at tokenisation: the canvas then knows where every feature
goes before the model runs, and the sampler treats those positions as prompt. All randomness comes from
``random.Random(seed)``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from minimdm.data.tasks import TaskTokenizer

IMAGE_TOKEN = "<image>"
IMAGE_TOKENS = 16  # a 4x4 grid of encoder features per image
SLOT = 8  # tokens per answer: text, <eot>, <eos> padding
MAX_K = 3  # "plus k" adds 1..MAX_K: a few dozen addition facts, learnable in minutes
SINGLE_KINDS = ("digit", "parity", "plus", "describe")
FOLLOW_UP_KINDS = ("then_plus", "then_even")


class DialogueTokenizer(TaskTokenizer):
    """The course's character tokenizer plus one ``<image>`` placeholder id (the last id)."""

    def __init__(self):
        super().__init__()
        self.image_id = len(self.vocab)
        self.vocab.append(IMAGE_TOKEN)
        self.token_to_id[IMAGE_TOKEN] = self.image_id
        self.special_ids = self.special_ids | {self.image_id}
        self.user_id, self.assistant_id = self.role_ids["user"], self.role_ids["assistant"]

    def answer_text(self, slot_ids) -> str:
        """The answer in a slot: characters up to the first <eot> (LLaDA-V cuts its output at the end-of-turn token)."""
        text = []
        for token_id in (int(i) for i in slot_ids):
            if token_id == self.eot_id:
                break
            text.append(self.vocab[token_id] if 0 <= token_id < self.vocab_size and token_id not in self.special_ids
                        else "_")
        return "".join(text)


# --- the digits and their exact attributes -------------------------------------------------------------------

@dataclass
class DigitImages:
    """scikit-learn's 1,797 digits as (N, 1, 8, 8) floats in [0, 1], with a stratified 80/20 split."""

    images: torch.Tensor
    digits: torch.Tensor  # (N,) 0..9
    thick: torch.Tensor  # (N,) bool: more ink than the training median of its digit
    train_index: torch.Tensor
    test_index: torch.Tensor

    def caption(self, index: int) -> str:
        return f"{'thick' if self.thick[index] else 'thin'} {int(self.digits[index])}"


def load_digit_images(test_fraction: float = 0.2, seed: int = 0) -> DigitImages:
    """Load the bundled digits (no network) and hold out ``test_fraction`` of every digit class."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    digits = torch.tensor(bunch.target, dtype=torch.long)
    rng = random.Random(seed)
    train, test = [], []
    for digit in range(10):  # stratified: the same fraction of every class
        members = [int(i) for i in torch.nonzero(digits == digit).flatten()]
        rng.shuffle(members)
        cut = round(test_fraction * len(members))
        test += members[:cut]
        train += members[cut:]
    train_index, test_index = torch.tensor(sorted(train)), torch.tensor(sorted(test))
    ink = (images >= 0.5).flatten(1).sum(1).float()  # pixels at least half dark
    medians = torch.stack([ink[train_index][digits[train_index] == d].median() for d in range(10)])
    thick = ink > medians[digits]
    return DigitImages(images, digits, thick, train_index, test_index)


# --- dialogues ------------------------------------------------------------------------------------------------

@dataclass
class Turn:
    kind: str
    question: str
    answer: str


@dataclass
class Dialogue:
    image: int  # row of DigitImages.images
    turns: list[Turn] = field(default_factory=list)
    context: str | None = None  # text shown instead of the image (the text-only pretraining dialogues)


def _first_turn(kind: str, digit: int, caption: str, rng: random.Random) -> tuple[Turn, int | None]:
    """A question about the image; returns the turn and the number it leaves for a follow-up (None: none)."""
    if kind == "digit":
        return Turn(kind, "digit?", str(digit)), digit
    if kind == "parity":
        return Turn(kind, "parity?", "even" if digit % 2 == 0 else "odd"), None
    if kind == "plus":
        k = rng.randint(1, MAX_K)
        return Turn(kind, f"plus {k}?", str(digit + k)), digit + k
    if kind == "describe":
        return Turn(kind, "describe", caption), None
    raise ValueError(f"kind={kind!r}: allowed first-turn kinds are {SINGLE_KINDS}")


def _follow_up(kind: str, value: int, rng: random.Random) -> tuple[Turn, int | None]:
    """A question about the previous answer ``value``."""
    if kind == "then_plus":
        k = rng.randint(1, MAX_K)
        return Turn(kind, f"that +{k}?", str(value + k)), value + k
    return Turn(kind, "that even?", "yes" if value % 2 == 0 else "no"), None


def make_dialogue(image: int, digit: int, caption: str, rng: random.Random, num_turns: int,
                  first_kind: str | None = None) -> Dialogue:
    """One dialogue of ``num_turns`` (1-3) turns; later turns ask about the previous answer."""
    if num_turns not in (1, 2, 3):
        raise ValueError(f"num_turns={num_turns}: allowed values are 1, 2, 3")
    if first_kind is None:
        first_kind = rng.choice(SINGLE_KINDS if num_turns == 1 else ("digit", "plus"))
    turn, value = _first_turn(first_kind, digit, caption, rng)
    if num_turns > 1 and value is None:
        raise ValueError(f"first_kind={first_kind!r} leaves no number to ask about: use 'digit' or 'plus'")
    turns = [turn]
    for position in range(1, num_turns):
        last = position == num_turns - 1
        follow = rng.choice(FOLLOW_UP_KINDS) if last else "then_plus"  # only a number can be asked about again
        turn, value = _follow_up(follow, value, rng)
        turns.append(turn)
    return Dialogue(image, turns)


def make_dialogues(data: DigitImages, index: torch.Tensor, n: int, seed: int = 0,
                   multi_turn_fraction: float = 0.4) -> list[Dialogue]:
    """``n`` dialogues about images drawn from ``index``: single questions of the four kinds, and 2-3-turn ones."""
    if not 0 <= multi_turn_fraction <= 1:
        raise ValueError(f"multi_turn_fraction={multi_turn_fraction} must lie in [0, 1]")
    rng, rows = random.Random(seed), [int(i) for i in index]
    dialogues = []
    for _ in range(n):
        image = rng.choice(rows)
        num_turns = rng.choice((2, 3)) if rng.random() < multi_turn_fraction else 1
        dialogues.append(make_dialogue(image, int(data.digits[image]), data.caption(image), rng, num_turns))
    return dialogues


def text_dialogues(n: int, seed: int = 0, multi_turn_fraction: float = 0.4) -> list[Dialogue]:
    """Dialogues with no image: the user writes a caption ("thin 7") where the image would be.

    They stand in for the text data the language model saw before it met images: it learns the templates,
    parity and addition, so the visual stages only have to teach it to read the digit from image features.
    """
    rng, dialogues = random.Random(seed), []
    for _ in range(n):
        digit, caption = rng.randrange(10), f"{rng.choice(('thick', 'thin'))} "
        num_turns = rng.choice((2, 3)) if rng.random() < multi_turn_fraction else 1
        dialogue = make_dialogue(-1, digit, caption + str(digit), rng, num_turns)
        dialogue.context = caption + str(digit)
        dialogues.append(dialogue)
    return dialogues


def evaluation_dialogues(data: DigitImages, index: torch.Tensor, seed: int = 0) -> list[Dialogue]:
    """For every image of ``index``: one question of each single kind and one 2-turn dialogue."""
    rng, dialogues = random.Random(seed), []
    for image in (int(i) for i in index):
        digit, caption = int(data.digits[image]), data.caption(image)
        for kind in SINGLE_KINDS:
            dialogues.append(make_dialogue(image, digit, caption, rng, 1, first_kind=kind))
        dialogues.append(make_dialogue(image, digit, caption, rng, 2, first_kind=rng.choice(("digit", "plus"))))
    return dialogues


# --- tokenisation --------------------------------------------------------------------------------------------

def encode_question(tokenizer: DialogueTokenizer, dialogue: Dialogue, turn_index: int) -> list[int]:
    """``<user> [image or context] question <eot> <assistant>``: the first turn carries the image."""
    ids = [tokenizer.user_id]
    if turn_index == 0:
        if dialogue.context is None:
            ids += [tokenizer.image_id] * IMAGE_TOKENS
        else:
            ids += tokenizer.encode(dialogue.context + ": ")
    return ids + tokenizer.encode(dialogue.turns[turn_index].question) + [tokenizer.eot_id, tokenizer.assistant_id]


def encode_answer(tokenizer: DialogueTokenizer, answer: str) -> list[int]:
    """One slot: the answer, <eot>, then <eos> up to SLOT tokens."""
    if not answer:
        raise ValueError("answer is empty: every assistant turn needs at least one character")
    if len(answer) > SLOT - 1:
        raise ValueError(f"answer {answer!r} has {len(answer)} characters: at most {SLOT - 1} fit a slot of {SLOT}")
    ids = tokenizer.encode(answer) + [tokenizer.eot_id]
    return ids + [tokenizer.eos_id] * (SLOT - len(ids))


def encode_dialogue(tokenizer: DialogueTokenizer, dialogue: Dialogue) -> tuple[list[int], list[bool]]:
    """Token ids of the whole dialogue and which of them are answer tokens (the only ones masked and scored)."""
    ids, is_answer = [tokenizer.bos_id], [False]
    for k, turn in enumerate(dialogue.turns):
        question = encode_question(tokenizer, dialogue, k)
        answer = encode_answer(tokenizer, turn.answer)
        ids += question + answer
        is_answer += [False] * len(question) + [True] * len(answer)
    return ids, is_answer


@dataclass
class EncodedDialogues:
    """A pool of dialogues as right-padded tensors, ready for mini-batches."""

    ids: torch.Tensor  # (N, T) long, <pad> after the end
    answer_mask: torch.Tensor  # (N, T) bool
    image: torch.Tensor  # (N,) row of DigitImages.images (-1: text only)
    lengths: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return self.ids.shape[0]


def encode_dialogues(tokenizer: DialogueTokenizer, dialogues: list[Dialogue]) -> EncodedDialogues:
    if not dialogues:
        raise ValueError("dialogues is empty: pass at least one dialogue")
    rows = [encode_dialogue(tokenizer, d) for d in dialogues]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    answer_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for row, (row_ids, row_answer) in enumerate(rows):
        ids[row, : len(row_ids)] = torch.tensor(row_ids)
        answer_mask[row, : len(row_ids)] = torch.tensor(row_answer)
    return EncodedDialogues(ids, answer_mask, torch.tensor([d.image for d in dialogues]),
                            torch.tensor([len(r) for r, _ in rows]))


def batch_sampler(pool: EncodedDialogues, data: DigitImages | None, batch_size: int, fraction: float = 1.0):
    """A ``batch_fn(step)`` for ``minimdm.train.train``: random rows of the first ``fraction`` of the pool.

    Returns (ids, answer_mask, images) with images (B, 1, 8, 8), or (ids, answer_mask) for a text-only pool;
    columns that are padding in every row of the batch are cut off.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must lie in (0, 1]")
    size = max(1, round(fraction * len(pool)))

    def batch_fn(step: int):
        rows = torch.randint(size, (batch_size,))  # the trainer reseeds the RNG per step: reproducible
        width = int(pool.lengths[rows].max())
        ids, answer_mask = pool.ids[rows, :width], pool.answer_mask[rows, :width]
        if data is None:
            return ids, answer_mask
        return ids, answer_mask, data.images[pool.image[rows]]

    return batch_fn
