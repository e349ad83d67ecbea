"""An enumerable joint distribution over V^L : every quantity is exact.

With V = 3 and L = 3 there are 27 sequences; the true conditional p(x^i | visible tokens) is a sum over the
sequences consistent with what is visible, so the oracle denoiser is an exact, consistent MDM.
"""
from __future__ import annotations

import itertools

import torch

from minimdm.mdm.denoiser import check_mask_id
from minimdm.toys.dirichlet import seeded_dirichlet


class EnumerableJoint:
    def __init__(self, vocab_size: int = 3, length: int = 3, concentration: float = 1.0, seed: int = 0,
                 probs: torch.Tensor | None = None):
        """p_data is a Dirichlet(concentration) draw from ``seed``, or the given ``probs`` over the V^L sequences
        in lexicographic order (the rows of ``self.sequences``)."""
        if vocab_size**length > 65536:
            raise ValueError(f"vocab_size**length = {vocab_size**length} is too many sequences to enumerate (max 65536)")
        self.vocab_size, self.length = vocab_size, length
        self.sequences = torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))  # (N, L)
        if probs is None:
            self.probs = seeded_dirichlet((len(self.sequences),), concentration, seed)  # (N,) p_data, float64
        else:
            probs = torch.as_tensor(probs, dtype=torch.float64)
            if probs.shape != (len(self.sequences),) or bool((probs < 0).any()) or abs(float(probs.sum()) - 1) > 1e-9:
                raise ValueError(f"probs must be {len(self.sequences)} non-negative numbers summing to 1")
            self.probs = probs

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """Row of each sequence in the table: x (B, L) -> (B,)."""
        place = self.vocab_size ** torch.arange(self.length - 1, -1, -1, device=x.device)
        return (x * place).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs.log()[self.index(x)]

    def sample(self, n: int, generator=None) -> torch.Tensor:
        return self.sequences[torch.multinomial(self.probs, n, replacement=True, generator=generator)]

    def oracle_denoiser(self, mask_id: int | None = None):
        mask_id = self.vocab_size if mask_id is None else mask_id
        check_mask_id(mask_id, self.vocab_size)

        def denoiser(xt: torch.Tensor) -> torch.Tensor:
            """Exact log p(x^i = v | visible tokens of x_t): (B, L) -> (B, L, V)."""
            return posterior_marginals(self.sequences, self.probs, xt, mask_id, self.vocab_size).log()

        return denoiser


def posterior_marginals(sequences: torch.Tensor, probs: torch.Tensor, xt: torch.Tensor, mask_id: int,
                        vocab_size: int) -> torch.Tensor:
    """p(x^i = v | visible tokens of x_t) under a law listed as ``sequences`` (N, L) with ``probs`` (N,): (B, L, V).

    Each conditional is the mass of the sequences that agree with every visible token, split by their token at i.
    A state no sequence of positive probability agrees with (a sampler that reveals several tokens at once can reach
    one) has no conditional; it gets uniform outputs, which keeps every output a distribution.
    """
    sequences = sequences.to(xt.device)
    consistent = ((sequences[None] == xt[:, None]) | (xt == mask_id)[:, None]).all(-1)  # (B, N)
    weight = probs.to(xt.device)[None] * consistent  # (B, N) joint mass of consistent sequences
    one_hot = torch.nn.functional.one_hot(sequences, vocab_size).double()  # (N, L, V)
    marginal = torch.einsum("bn,nlv->blv", weight, one_hot)
    marginal[weight.sum(1) == 0] = 1.0
    return marginal / marginal.sum(-1, keepdim=True)
