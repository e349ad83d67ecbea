"""Tokenizers: characters (the course default) and a byte-level BPE trained locally with ``tokenizers``.

Both share one small interface: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size``,
``save(path)`` / ``load(path)``. Ids run 0..vocab_size-1; a model's mask token is the extra id vocab_size.

``hf_tokenizer(tokenizer)`` gives the same ids as a ``transformers``
``PreTrainedTokenizerFast``, with the mask as ``mask_token`` at id vocab_size: it saves beside a model and loads
with ``AutoTokenizer`` and no custom code.
"""
from __future__ import annotations

import json
from pathlib import Path


def _check_ids(ids: list[int], vocab_size: int) -> None:
    """Unknown ids (a mask id left on a canvas, a wrong tokenizer) are an error, not silently dropped text."""
    unknown = sorted({i for i in ids if not 0 <= i < vocab_size})
    if unknown:
        raise ValueError(f"ids {unknown[:5]} are not in this tokenizer's vocabulary (0..{vocab_size - 1}); "
                         "decode only real tokens (a model's mask id is vocab_size), with the tokenizer it was trained with")


class CharTokenizer:
    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in this tokenizer's vocabulary") from None

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        _check_ids(ids, self.vocab_size)
        return "".join(self.chars[i] for i in ids)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "chars": self.chars}))

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        return cls(json.loads(Path(path).read_text())["chars"])


class BPETokenizer:
    """Byte-level BPE (GPT-2 style), trained on the corpus in about a second for a 4k vocabulary."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = 4096) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"vocab_size={vocab_size} must be >= 257 (256 bytes plus merges)")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        _check_ids(ids, self.vocab_size)
        return self.tokenizer.decode(ids)

    def save(self, path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def get_tokenizer(kind: str, text: str, vocab_size: int = 4096):
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    raise ValueError(f"tokenizer={kind!r}: allowed values are 'char' and 'bpe'")


MASK_TOKEN = "<|mdm_mask|>"
# Jinja form of minimdm.mdm.sft.ChatTemplate.prompt, for tokenizers with chat roles (the chat tasks' vocabulary)
CHAT_TEMPLATE = ("<bos>{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}<eot>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def _character_tokenizer(vocab: list[str]):
    """A ``tokenizers`` Tokenizer with one id per character (each character is its own pre-token), joined on decode."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({token: i for i, token in enumerate(vocab)}, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def hf_tokenizer(tokenizer, mask_token: str = MASK_TOKEN):
    """The ``transformers.PreTrainedTokenizerFast`` form of a CharTokenizer, BPETokenizer or the chat tasks' TaskTokenizer.

    Same ids as ``tokenizer.encode``; the mask is ``mask_token`` with id ``vocab_size`` (the model's extra embedding
    row). The chat tokenizer's special tokens (``<bos>``, ``<eos>``, roles, ...) keep their ids, and its chat template
    gives the prompts of ``minimdm.mdm.sft.ChatTemplate``.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    named, special = {}, []
    if isinstance(tokenizer, BPETokenizer):
        backend = Tokenizer.from_str(tokenizer.tokenizer.to_str())  # a copy: the course's tokenizer stays as it is
    elif isinstance(tokenizer, CharTokenizer):
        backend = _character_tokenizer(tokenizer.chars)
    elif hasattr(tokenizer, "vocab") and hasattr(tokenizer, "special_ids"):  # TaskTokenizer
        backend = _character_tokenizer(tokenizer.vocab)
        special = [tokenizer.vocab[i] for i in sorted(tokenizer.special_ids)]
        named = {f"{name}_token": tokenizer.vocab[getattr(tokenizer, f"{name}_id")] for name in ("pad", "bos", "eos")}
    else:
        raise ValueError(f"tokenizer={type(tokenizer).__name__}: allowed are CharTokenizer, BPETokenizer and TaskTokenizer")
    vocab_size = tokenizer.vocab_size
    backend.add_special_tokens([AddedToken(token, special=True) for token in special + [mask_token]])
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, mask_token=mask_token, clean_up_tokenization_spaces=False,
                                 model_input_names=["input_ids", "attention_mask"], **named)
    if hf.mask_token_id != vocab_size:
        raise ValueError(f"mask_token={mask_token!r} is already in the vocabulary (id {hf.mask_token_id}); "
                         f"choose another string, it must get the new id {vocab_size}")
    others = [t for t in special if t not in named.values()]
    if others:
        hf.add_special_tokens({"additional_special_tokens": others})
    if hasattr(tokenizer, "role_ids"):
        hf.chat_template = CHAT_TEMPLATE
    return hf
