"""Synthetic passkey documents, distractor packs, and the three ways of packing documents into one sequence.

A passkey document hides a key of ``key_length`` digits in structured filler text and asks for it back::

    <filler> the key is 4 0 7 1 . <filler> what is the key ? 4 0 7 1        (needle first, the evaluation form)
    what is the key ? 4 0 7 1 <filler> the key is 4 0 7 1 . <filler>        (question first)

The filler is drawn from a fixed random bigram chain over a few dozen words, so it has structure a model can learn
(and a loss floor below log of the word count) but never contains a digit or a marker word. ``depth`` places the
needle in the filler: 0 at its start (farthest from a final question), 1 just before the question.

Long-context post-training packs several documents into one sequence of ``length`` tokens (UltraLLaDA, arXiv
2510.10481, compares three ways in its study of masking strategies for post-training):

* ``"direct"``   -- documents back to back, full attention: nothing marks where one ends;
* ``"eod"``      -- an ``<eod>`` token closes every document, full attention: the model can learn the boundary;
* ``"doc_mask"`` -- documents back to back, attention restricted to the own document (a block-diagonal boolean
  mask, ``document_attention_mask``). RoPE positions still run 0..length-1 across the pack: the backbone has no
  position ids, and with relative positions only the offsets inside a document matter.

In a pack the documents come in both orders, so no rule such as "take the nearest earlier key" finds a document's
own key: only a boundary (or the mask) does. Every other document in the pack carries another key, so a pack is a
distractor test too: ``PasskeyBatch.other_keys`` lets the evaluator count answers that are another document's key.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

PACKING = ("direct", "eod", "doc_mask")
DIGITS = tuple("0123456789")
NEEDLE_WORDS = ("the", "key", "is")  # needle: the key is d1..dn .
QUESTION_WORDS = ("what", "is", "the", "key", "?")  # question: what is the key ? d1..dn
FILLER_WORDS = ("sky", "tree", "river", "stone", "cloud", "grass", "bird", "sun", "moon", "rain", "hill", "road",
                "wind", "leaf", "fish", "snow", "lake", "wolf", "fire", "sand", "star", "rock", "boat", "town")


@dataclass
class PasskeyBatch:
    tokens: torch.Tensor  # (B, T) token ids
    answer_mask: torch.Tensor  # (B, T) bool: the digits of the asked document's answer (mask these, predict them)
    key: torch.Tensor  # (B, key_length) digit ids of the asked document's key
    doc_ids: torch.Tensor  # (B, T) which document each position belongs to (0 for a single document)
    other_keys: torch.Tensor  # (B, D, key_length) keys of the other documents of the pack, rows of -1 if fewer

    def to(self, device) -> "PasskeyBatch":
        return PasskeyBatch(*(getattr(self, f).to(device) for f in ("tokens", "answer_mask", "key", "doc_ids",
                                                                      "other_keys")))


def document_attention_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """A[b, i, j] = 1[doc(i) = doc(j)]: bidirectional attention inside each document only, (B, T) -> (B, T, T)."""
    if doc_ids.dim() != 2:
        raise ValueError(f"doc_ids must have shape (batch, length), got {tuple(doc_ids.shape)}")
    return doc_ids[:, :, None] == doc_ids[:, None, :]


class PasskeyTask:
    """The vocabulary, the filler language and the document builders of the passkey task.

    ``seed`` fixes the filler language (its bigram table and a long sample of it); batches draw their own randomness
    from ``generator`` (or torch's global generator, which the trainer reseeds every step).
    """

    def __init__(self, key_length: int = 4, key_symbols: int = 10, seed: int = 0, stream_tokens: int = 1 << 18,
                 successors: int = 3):
        if key_length < 1:
            raise ValueError(f"key_length={key_length} must be a positive integer")
        if key_symbols not in (10, 100):
            raise ValueError(f"key_symbols={key_symbols}: allowed values are 10 (digits 0-9) and 100 (numbers 00-99)")
        if not 1 <= successors <= len(FILLER_WORDS):
            raise ValueError(f"successors={successors} must lie in 1..{len(FILLER_WORDS)}")
        self.key_length, self.key_symbols = key_length, key_symbols
        symbols = list(DIGITS) if key_symbols == 10 else [f"{i:02d}" for i in range(100)]
        self.words = symbols + ["the", "key", "is", ".", "what", "?", "<eod>"] + list(FILLER_WORDS)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.eod_id = self.index["<eod>"]
        self.filler_ids = torch.tensor([self.index[w] for w in FILLER_WORDS])
        self.needle_length = len(NEEDLE_WORDS) + key_length + 1
        self.question_length = len(QUESTION_WORDS) + key_length
        self.min_length = self.needle_length + self.question_length  # a document with no filler at all
        self.stream = self._filler_stream(stream_tokens, seed, successors).numpy()
        self._needle = np.array([self.index[w] for w in NEEDLE_WORDS])
        self._full_stop = np.array([self.index["."]])
        self._question = np.array([self.index[w] for w in QUESTION_WORDS])

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[w] for w in text.split()]
        except KeyError as error:
            raise ValueError(f"word {error.args[0]!r} is not in the passkey vocabulary") from None

    def decode(self, ids, mask_id: int | None = None) -> str:
        return " ".join("_" if i == mask_id else self.words[i] for i in (int(i) for i in ids))

    # --- filler -------------------------------------------------------------------------------------------------

    def _filler_stream(self, num_tokens: int, seed: int, successors: int) -> torch.Tensor:
        """A long sample of the filler language: each word is followed by one of ``successors`` words."""
        generator = torch.Generator().manual_seed(seed)
        words = len(FILLER_WORDS)
        table = torch.zeros(words, words)
        for word in range(words):  # a sparse random bigram table: each row has `successors` non-zero entries
            nxt = torch.randperm(words, generator=generator)[:successors]
            table[word, nxt] = torch.rand(successors, generator=generator) + 0.5
        chains = 1024  # run many chains side by side: a loop over length / chains steps, not over every token
        cdf = (table / table.sum(1, keepdim=True)).cumsum(1)
        cdf[:, -1] = 1.0
        state = torch.randint(words, (chains,), generator=generator)
        columns = []
        for _ in range(-(-num_tokens // chains)):
            columns.append(state)
            u = torch.rand(chains, 1, generator=generator)
            state = torch.searchsorted(cdf[state], u).squeeze(1)  # the next word, by inverting its row's CDF
        return self.filler_ids[torch.stack(columns, 1).flatten()[:num_tokens]]

    # --- documents ----------------------------------------------------------------------------------------------

    def _check_document(self, length: int, depth) -> None:
        if length < self.min_length:
            raise ValueError(f"length={length} must be >= {self.min_length} (the needle and the question)")
        if depth is not None and not 0 <= depth <= 1:
            raise ValueError(f"depth={depth} must lie in [0, 1]: the needle cannot be deeper than the context "
                             "(0 = its start, 1 = just before the question)")

    def _document(self, rng: random.Random, key: np.ndarray, length: int, depth: float, question_first: bool):
        """One document of ``length`` tokens (an array), and the index of its answer's first digit."""
        filler_length = length - self.min_length
        start = rng.randrange(len(self.stream) - filler_length)
        filler = self.stream[start:start + filler_length]
        at = round(depth * filler_length)
        body = np.concatenate([filler[:at], self._needle, key, self._full_stop, filler[at:]])
        question = np.concatenate([self._question, key])
        if question_first:
            return np.concatenate([question, body]), len(self._question)
        return np.concatenate([body, question]), length - self.key_length

    def _seeded_rng(self, generator) -> random.Random:
        """Documents are built with Python's generator (fast for a few draws), seeded from torch's."""
        return random.Random(int(torch.randint(2**62, (1,), generator=generator)))

    def _random_key(self, rng: random.Random) -> np.ndarray:
        return np.array([rng.randrange(self.key_symbols) for _ in range(self.key_length)])  # symbol k has id k

    def documents(self, batch: int, length: int, depth: float | None = None, generator=None,
                  device=None) -> PasskeyBatch:
        """``batch`` single needle-first documents of ``length`` tokens, the question at the end.

        depth in [0, 1]: where the needle sits in the filler (0 = the start); None draws it uniformly per document.
        """
        self._check_document(length, depth)
        rng = self._seeded_rng(generator)
        keys, rows = [], []
        for _ in range(batch):
            keys.append(self._random_key(rng))
            rows.append(self._document(rng, keys[-1], length, rng.random() if depth is None else depth, False)[0])
        tokens = torch.from_numpy(np.stack(rows))
        answer_mask = torch.zeros_like(tokens, dtype=torch.bool)
        answer_mask[:, length - self.key_length:] = True
        return PasskeyBatch(tokens, answer_mask, torch.from_numpy(np.stack(keys)), torch.zeros_like(tokens),
                            torch.full((batch, 0, self.key_length), -1)).to(device or "cpu")

    def packs(self, batch: int, length: int, strategy: str, min_doc_length: int | None = None,
              max_doc_length: int | None = None, generator=None, device=None) -> PasskeyBatch:
        """``batch`` sequences of ``length`` tokens, each several documents packed by ``strategy``.

        Document lengths are uniform on [min_doc_length, max_doc_length] (default: ``length``); the last document
        takes what is left. Orders, depths and keys are random; one document per row is the asked one. The
        documents do not depend on the strategy: "eod" spends the last token of each document on the separator,
        so every strategy sees the same keys, depths and number of tokens.
        """
        if strategy not in PACKING:
            raise ValueError(f"strategy={strategy!r}: allowed values are {PACKING}")
        min_doc_length = self.min_length + 8 if min_doc_length is None else min_doc_length
        if min_doc_length < self.min_length + 1:
            raise ValueError(f"min_doc_length={min_doc_length} must be >= {self.min_length + 1} "
                             "(a document, plus one token for the separator)")
        max_doc_length = length if max_doc_length is None else max_doc_length
        if not min_doc_length <= max_doc_length <= length:
            raise ValueError(f"need min_doc_length={min_doc_length} <= max_doc_length={max_doc_length} <= length={length}")
        rng = self._seeded_rng(generator)
        rows = [self._pack(rng, length, strategy, min_doc_length, max_doc_length) for _ in range(batch)]
        tokens, answer_starts, doc_ids, keys, others = (list(column) for column in zip(*rows))
        tokens, doc_ids = torch.from_numpy(np.stack(tokens)), torch.from_numpy(np.stack(doc_ids))
        answer_mask = torch.zeros_like(tokens, dtype=torch.bool)
        for row, start in enumerate(answer_starts):
            answer_mask[row, start:start + self.key_length] = True
        most_others = max(len(o) for o in others)
        other_keys = torch.full((batch, most_others, self.key_length), -1)
        for row, row_others in enumerate(others):
            if row_others:
                other_keys[row, :len(row_others)] = torch.from_numpy(np.stack(row_others))
        return PasskeyBatch(tokens, answer_mask, torch.from_numpy(np.stack(keys)), doc_ids, other_keys).to(device or "cpu")

    def _pack(self, rng: random.Random, length, strategy, min_doc_length, max_doc_length):
        sizes, left = [], length
        while left > 0:
            size = min(rng.randint(min_doc_length, max_doc_length), left)
            if left - size < min_doc_length:  # the remainder could not hold a document: this one takes it
                size = left
            sizes.append(size)
            left -= size
        asked = rng.randrange(len(sizes))
        tokens, doc_ids, keys, answer_start, placed = [], [], [], 0, 0
        for index, size in enumerate(sizes):
            keys.append(self._random_key(rng))
            question_first, depth = rng.random() < 0.5, rng.random()
            content = size - 1 if strategy == "eod" else size
            document, answer = self._document(rng, keys[-1], content, depth, question_first)
            if index == asked:
                answer_start = placed + answer
            tokens.append(document)
            if strategy == "eod":
                tokens.append(np.array([self.eod_id]))
            doc_ids.append(np.full(size, index))
            placed += size
        return (np.concatenate(tokens), answer_start, np.concatenate(doc_ids), keys[asked],
                keys[:asked] + keys[asked + 1:])
