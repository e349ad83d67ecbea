"""Data: tokenizers, real corpora (offline by default) and token streams.

The synthetic sources with exact likelihoods live in ``minimdm.toys`` (``EnumerableJoint``, ``MarkovChain``),
because they double as oracles.
"""
from minimdm.data.corpora import load_corpus
from minimdm.data.dataset import TokenStream
from minimdm.data.tokenizers import BPETokenizer, CharTokenizer, get_tokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "TokenStream", "get_tokenizer", "load_corpus"]
