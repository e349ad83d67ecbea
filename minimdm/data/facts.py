"""Synthetic facts for two SMDM experiments (arXiv 2410.18514: the reverse
curse and temporal shift), written in ``TaskTokenizer``'s alphabet.

**Reverse curse.** Invented people and descriptions, "A is B." (e.g. ``"bado kegi is rusa tope."``). Names use one
set of consonants and descriptions another, so a reader (and a model) can tell which side is which. Of the facts,
a subset S is trained in both directions ("A is B." and "B is A."), so the model can learn that facts may be
read backwards; the test set T is trained forward only, and **no T fact ever appears reversed in training**.
Then: forward "A is" -> B on T; reverse infill "[M...] is B." -> A; reverse query "B is" -> A.

**Guidance.** A noisy lookup "key=answer.": the answer follows a rule of the key, except that often it is noise
drawn from a Zipf law over a small pool, so some answers are a priori frequent. Multiple-choice items offer the
rule answer with distractors drawn by that same frequency: a model that leans on the prior picks the frequent
distractor, which is what classifier-free guidance corrects (it scores with p(a|c)^(1+w) / p(a)^w, a
pointwise-mutual-information calibration).

All randomness is ``random.Random(seed)``; every line of one kind has the same length, so a batch needs no padding.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

NAME_CONSONANTS = "bdgkmv"
DESCRIPTION_CONSONANTS = "prstnl"
VOWELS = "aeiou"


def pseudo_word(rng: random.Random, consonants: str, syllables: int = 2) -> str:
    """A pronounceable consonant-vowel word, e.g. 'bado'."""
    return "".join(rng.choice(consonants) + rng.choice(VOWELS) for _ in range(syllables))


@dataclass(frozen=True)
class Fact:
    name: str  # A
    description: str  # B

    @property
    def forward(self) -> str:
        return f"{self.name} is {self.description}."

    @property
    def reverse(self) -> str:
        return f"{self.description} is {self.name}."


@dataclass
class FactSplit:
    both_ways: list[Fact]  # S: trained as "A is B." and "B is A."
    forward_only: list[Fact]  # T: trained as "A is B." only; evaluated in both directions

    def training_lines(self) -> list[str]:
        """Every fact forward, plus the reverse of the S facts only."""
        return [f.forward for f in self.both_ways + self.forward_only] + [f.reverse for f in self.both_ways]


def _unique_words(rng: random.Random, consonants: str, count: int, words: int) -> list[str]:
    """``count`` distinct names in the order ``rng`` drew them. (Not a set: its order follows the process's string
    hashing, which Python randomises per process, so the same seed would give other facts in another run.)"""
    unique: dict[str, None] = {}  # a dict keeps insertion order
    while len(unique) < count:
        unique[" ".join(pseudo_word(rng, consonants) for _ in range(words))] = None
    return list(unique)


def make_facts(num_facts: int, num_both_ways: int, words: int = 2, seed: int = 0) -> FactSplit:
    """``num_facts`` facts with distinct names and distinct descriptions; the first ``num_both_ways`` form S."""
    if num_facts < 1:
        raise ValueError(f"num_facts={num_facts} must be a positive integer")
    if not 0 <= num_both_ways < num_facts:
        raise ValueError(f"num_both_ways={num_both_ways} must lie in [0, num_facts) = [0, {num_facts}): "
                         "the forward-only test set must not be empty")
    if words < 1:
        raise ValueError(f"words={words} must be a positive integer")
    capacity = (len(NAME_CONSONANTS) * len(VOWELS)) ** (2 * words)
    if num_facts > capacity // 4:
        raise ValueError(f"num_facts={num_facts} is too many for words={words} (allowed: at most {capacity // 4})")
    rng = random.Random(seed)
    names = _unique_words(rng, NAME_CONSONANTS, num_facts, words)
    descriptions = _unique_words(rng, DESCRIPTION_CONSONANTS, num_facts, words)
    facts = [Fact(a, b) for a, b in zip(names, descriptions)]
    return FactSplit(both_ways=facts[:num_both_ways], forward_only=facts[num_both_ways:])


# --- a noisy lookup with a priori frequent answers (for guidance) ---------------------------------------------

LOOKUP_LINE_END = "."  # closes every line "key=answer."


@dataclass
class LookupItem:
    key: str
    choices: list[str]
    answer_index: int

    @property
    def prompt(self) -> str:
        return f"{self.key}="


@dataclass
class SkewedLookup:
    """Lines "key=answer.": with probability 1 - noise the answer is the key's rule answer (set by the key's last
    letter), otherwise it is drawn from a Zipf prior over the answer pool. So

        p(a | key) = (1 - noise) 1[a = rule(key)] + noise * prior(a),

    and with enough noise a frequent answer can beat a rare rule answer *conditionally*: the likelihood picks it,
    while guidance, p(a|c)^(1+w) / p(a)^w, divides the prior back out.
    """

    rule: dict[str, str]  # last letter of the key (next to "=") -> its answer
    answers: list[str]  # the answer pool, most frequent (under the prior) first
    weights: list[float]  # Zipf prior of the pool (sums to 1)
    noise: float
    seed: int

    def answer_for(self, key: str) -> str:
        return self.rule[key[-1]]

    def training_lines(self, num_lines: int) -> list[str]:
        rng = random.Random(self.seed + 1)
        lines = []
        for _ in range(num_lines):
            key = "".join(rng.choice(KEY_LETTERS) for _ in range(3))
            noisy = rng.random() < self.noise
            answer = rng.choices(self.answers, self.weights)[0] if noisy else self.answer_for(key)
            lines.append(f"{key}={answer}{LOOKUP_LINE_END}")
        return lines

    def answer_probabilities(self, key: str | None = None) -> dict[str, float]:
        """The exact law of the answer: p(a | key) for a key, or (``key=None``) the marginal p(a) of a line whose
        three-letter key is drawn uniformly, as in ``training_lines``. A Bayes oracle for the multiple choice."""
        if key is None:
            rule_share = {a: sum(r == a for r in self.rule.values()) / len(self.rule) for a in self.answers}
        else:
            rule_share = {a: float(a == self.answer_for(key)) for a in self.answers}
        return {a: (1 - self.noise) * rule_share[a] + self.noise * w for a, w in zip(self.answers, self.weights)}

    def items(self, num_items: int, num_choices: int = 4, seed: int = 0) -> list[LookupItem]:
        """Multiple-choice items: the rule answer and ``num_choices - 1`` distinct distractors drawn with the
        prior, so the frequent answers are the usual distractors."""
        if not 2 <= num_choices <= len(self.answers):
            raise ValueError(f"num_choices={num_choices} must lie in [2, {len(self.answers)}] (the answer pool)")
        rng = random.Random(seed)
        items = []
        for _ in range(num_items):
            key = "".join(rng.choice(KEY_LETTERS) for _ in range(3))
            answer = self.answer_for(key)
            distractors: list[str] = []
            while len(distractors) < num_choices - 1:
                candidate = rng.choices(self.answers, self.weights)[0]
                if candidate != answer and candidate not in distractors:
                    distractors.append(candidate)
            choices = [answer] + distractors
            rng.shuffle(choices)
            items.append(LookupItem(key, choices, choices.index(answer)))
        return items


KEY_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def make_skewed_lookup(num_answers: int = 10, zipf_exponent: float = 1.5, noise: float = 0.7,
                       seed: int = 0) -> SkewedLookup:
    """A noisy lookup: the 26 last letters of the keys share ``num_answers`` rule answers evenly; noise answers follow
    Zipf(s): prior of rank r ∝ r^(-s)."""
    if num_answers < 2 or num_answers > len(KEY_LETTERS):
        raise ValueError(f"num_answers={num_answers} must lie in [2, {len(KEY_LETTERS)}]")
    if zipf_exponent < 0:
        raise ValueError(f"zipf_exponent={zipf_exponent} must be >= 0 (0 = uniform prior)")
    if not 0 <= noise < 1:
        raise ValueError(f"noise={noise} must lie in [0, 1)")
    rng = random.Random(seed)
    answers = _unique_words(rng, DESCRIPTION_CONSONANTS + NAME_CONSONANTS, num_answers, 1)
    raw = [rank ** (-zipf_exponent) for rank in range(1, num_answers + 1)]
    weights = [w / sum(raw) for w in raw]
    letters = sorted(KEY_LETTERS, key=lambda _: rng.random())
    rule = {letter: answers[i % num_answers] for i, letter in enumerate(letters)}
    return SkewedLookup(rule, answers, weights, noise, seed)
