"""Synthetic instruction data with exact answers, and the small character vocabulary it is written in.

Every example is a (prompt, answer) pair whose answer a program can check, so a fine-tuned model is scored by
exact match rather than by taste. The tasks differ in how the answer's length follows from the prompt, which is
what makes LLaDA's EOS padding matter (its SFT, arXiv 2502.09992):

* ``add``      "37+58"              -> "95"          (1 to 3 digits)
* ``reverse``  "reverse: kbd"       -> "dbk"         (same length as the input)
* ``copy``     "copy: kbd"          -> "kbd"
* ``sort``     "sort: kbd"          -> "bdk"
* ``lookup``   "a=41 q=7 m=903 ?q"  -> "7"           (the value of one of 2-3 keys; 1 to 3 digits)
* ``choice``   "37+58 |a 95 |b 85"  -> "a"           (pick the letter of the correct one of 2-3 options)

``tasks`` picks a subset and ``max_word_length`` (default 8) bounds the words of reverse / copy / sort: the CPU
preset of notebook 05 trains on copy, reverse and sort of 1-5 letters, which a small model learns in minutes.

``multiple_choice_items`` turns the same tasks into questions with plausible wrong answers, for scoring candidates
by their likelihood instead of generating. All randomness comes from ``random.Random(seed)``: the data is the
same on every machine and every torch version.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass

TASKS = ("add", "reverse", "copy", "sort", "lookup", "choice")
LETTERS = "abcdefghij"  # strings are drawn from a small alphabet so a tiny model can learn them
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<eot>", "<system>", "<user>", "<assistant>")
CHARACTERS = " " + string.digits + string.ascii_lowercase + "+-*=?:,;.|>()\n"


class TaskTokenizer:
    """Character-level tokenizer: one id per special token, then one per character of ``CHARACTERS``.

    The mask token is not in this vocabulary: a model built on it uses mask_id = vocab_size (the extra row).
    """

    def __init__(self):
        self.vocab = list(SPECIAL_TOKENS) + list(CHARACTERS)
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.eot_id = (self.token_to_id[t] for t in SPECIAL_TOKENS[:4])
        self.role_ids = {role: self.token_to_id[f"<{role}>"] for role in ("system", "user", "assistant")}
        self.special_ids = frozenset(range(len(SPECIAL_TOKENS)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(CHARACTERS))
        if unknown:
            raise ValueError(f"text contains characters outside the vocabulary: {unknown}; allowed: {CHARACTERS!r}")
        return [self.token_to_id[ch] for ch in text]

    def decode(self, ids, stop_at_eos: bool = True, skip_special: bool = True) -> str:
        """Ids -> text. Stops at the first EOS (LLaDA strips the EOS padding at decode time).

        Ids outside the vocabulary (a mask left on the canvas) are shown as '_'.
        """
        pieces = []
        for token_id in (int(i) for i in ids):
            if stop_at_eos and token_id == self.eos_id:
                break
            if token_id >= self.vocab_size or token_id < 0:
                pieces.append("_")
            elif token_id in self.special_ids:
                if not skip_special:
                    pieces.append(self.vocab[token_id])
            else:
                pieces.append(self.vocab[token_id])
        return "".join(pieces)


@dataclass
class TaskExample:
    task: str
    prompt: str
    answer: str


@dataclass
class MultipleChoiceItem:
    task: str
    prompt: str
    choices: list[str]
    answer_index: int  # choices[answer_index] is the correct answer


# --- one generator per task: (prompt, answer, wrong answers) -------------------------------------------------

def _random_word(rng: random.Random, min_len: int = 1, max_len: int = 8) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len)))


def _distinct_wrong(rng: random.Random, correct: str, propose, count: int) -> list[str]:
    """``count`` distinct strings from ``propose()`` that differ from ``correct`` (falls back to random words)."""
    wrong: list[str] = []
    for attempt in range(50 * count):
        candidate = propose() if attempt < 20 * count else _random_word(rng, 1, max(1, len(correct)))
        if candidate != correct and candidate not in wrong:
            wrong.append(candidate)
            if len(wrong) == count:
                break
    return wrong


def _add(rng: random.Random, wrong: int):
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    answer = str(a + b)
    offsets = (1, -1, 10, -10, 2, -2, 11, -9)  # off-by-one and carry mistakes
    return f"{a}+{b}", answer, _distinct_wrong(rng, answer, lambda: str(max(0, a + b + rng.choice(offsets))), wrong)


def _string_task(kind: str, max_len: int = 8):
    transform = {"reverse": lambda w: w[::-1], "copy": lambda w: w, "sort": lambda w: "".join(sorted(w))}[kind]

    def make(rng: random.Random, wrong: int):
        word = _random_word(rng, 1, max_len)
        answer = transform(word)

        def near_miss():  # the other string tasks' answers, or one letter swapped or dropped
            options = [word, word[::-1], "".join(sorted(word))]
            if len(answer) > 1:
                i = rng.randrange(len(answer) - 1)
                options.append(answer[:i] + answer[i + 1] + answer[i] + answer[i + 2:])
                options.append(answer[:-1])
            return rng.choice(options)

        return f"{kind}: {word}", answer, _distinct_wrong(rng, answer, near_miss, wrong)

    return make


def _lookup(rng: random.Random, wrong: int):
    keys = rng.sample(string.ascii_lowercase, rng.randint(2, 3))
    values = [str(rng.choice((rng.randint(0, 9), rng.randint(10, 99), rng.randint(100, 999)))) for _ in keys]
    asked = rng.randrange(len(keys))
    table = " ".join(f"{k}={v}" for k, v in zip(keys, values))
    answer = values[asked]
    others = [v for v in values if v != answer]
    propose = lambda: rng.choice(others) if others and rng.random() < 0.7 else str(rng.randint(0, 999))  # noqa: E731
    return f"{table} ?{keys[asked]}", answer, _distinct_wrong(rng, answer, propose, wrong)


def _choice(rng: random.Random, wrong: int):
    """A question from another task shown with 2-3 lettered options; the answer is the correct letter."""
    base = rng.choice((_add, _string_task("reverse", max_len=5), _string_task("sort", max_len=5)))
    question, correct, distractors = base(rng, rng.randint(1, 2))
    options = [correct] + distractors
    rng.shuffle(options)
    letters = "abc"[: len(options)]
    answer = letters[options.index(correct)]
    prompt = question + "".join(f" |{letter} {option}" for letter, option in zip(letters, options))
    return prompt, answer, [letter for letter in letters if letter != answer][:wrong]


def _generator(task: str, max_word_length: int):
    """The generator of one task; ``max_word_length`` bounds the word of reverse / copy / sort."""
    if task in ("reverse", "copy", "sort"):
        return _string_task(task, max_len=max_word_length)
    return {"add": _add, "lookup": _lookup, "choice": _choice}[task]


def _check_tasks(tasks) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks={list(tasks)}: allowed values are {TASKS}")
    return tasks


def _check_word_length(max_word_length: int) -> None:
    if max_word_length < 1:
        raise ValueError(f"max_word_length={max_word_length} must be >= 1")


def make_examples(n: int, tasks=TASKS, seed: int = 0, max_word_length: int = 8) -> list[TaskExample]:
    """``n`` instruction examples, the task of each drawn uniformly from ``tasks``.

    The words of reverse / copy / sort have 1 to ``max_word_length`` letters (shorter words learn faster).
    """
    tasks, rng = _check_tasks(tasks), random.Random(seed)
    _check_word_length(max_word_length)
    examples = []
    for _ in range(n):
        task = rng.choice(tasks)
        prompt, answer, _ = _generator(task, max_word_length)(rng, 0)
        examples.append(TaskExample(task, prompt, answer))
    return examples


def multiple_choice_items(n: int, num_choices: int = 4, tasks=("add", "reverse", "sort", "lookup"),
                          seed: int = 0, max_word_length: int = 8) -> list[MultipleChoiceItem]:
    """Questions with one correct answer and ``num_choices - 1`` plausible wrong ones, in random order."""
    tasks, rng = _check_tasks(tasks), random.Random(seed)
    _check_word_length(max_word_length)
    if num_choices < 2:
        raise ValueError(f"num_choices={num_choices} must be >= 2")
    items = []
    while len(items) < n:
        task = rng.choice(tasks)
        prompt, answer, wrong = _generator(task, max_word_length)(rng, num_choices - 1)
        if len(wrong) < num_choices - 1:  # e.g. a one-letter word has too few near misses: draw another
            continue
        choices = [answer] + wrong
        rng.shuffle(choices)
        items.append(MultipleChoiceItem(task, prompt, choices, choices.index(answer)))
    return items


def pretraining_text(examples: list[TaskExample]) -> str:
    """Plain text for pretraining: one "prompt > answer" line per example, no chat template, no EOS."""
    return "".join(f"{ex.prompt} > {ex.answer}\n" for ex in examples)


def pretraining_batch(tokenizer: TaskTokenizer, batch_size: int, length: int, seed: int, tasks=TASKS,
                      max_word_length: int = 8):
    """A (batch_size, length) LongTensor of packed pretraining text: fresh examples, cut into equal rows."""
    import torch

    ids: list[int] = []
    chunk = 0
    while len(ids) < batch_size * length:  # about 12 characters per example
        examples = make_examples(batch_size * length // 12 + 1, tasks=tasks, seed=seed * 1009 + chunk,
                                 max_word_length=max_word_length)
        ids += tokenizer.encode(pretraining_text(examples))
        chunk += 1
    return torch.tensor(ids[: batch_size * length]).view(batch_size, length)
