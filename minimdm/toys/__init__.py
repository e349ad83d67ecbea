"""Exact oracles: distributions whose conditionals we know, so algorithms can be checked with no training."""
from minimdm.toys.enumerable import EnumerableJoint
from minimdm.toys.markov import MarkovChain

__all__ = ["EnumerableJoint", "MarkovChain"]
