"""A first-order Markov source with an exact oracle denoiser .

x^0 ~ pi_0, x^{i+1} ~ T[x^i, :]. Because the chain is first order, a masked position i depends only on its
nearest visible neighbours a < i < b:

    p(x^i = v | visible) ∝ (T^{i-a})[x^a, v] * (T^{b-i})[v, x^b]

with pi_0 T^i in place of the left factor when nothing is visible to the left, and 1 in place of the right
factor when nothing is visible to the right. This is an exact, consistent MDM that needs no training: the
perfect network a trained MDM tries to become.
"""
from __future__ import annotations

import torch

from minimdm.mdm.denoiser import check_mask_id
from minimdm.toys.dirichlet import seeded_dirichlet


class MarkovChain:
    def __init__(self, vocab_size: int = 16, concentration: float = 0.3, seed: int = 0):
        if vocab_size < 2:
            raise ValueError(f"vocab_size={vocab_size} must be >= 2")
        self.vocab_size = vocab_size
        self.transition = seeded_dirichlet((vocab_size, vocab_size), concentration, seed)  # T (V, V), rows sum to 1
        self.initial = self.stationary()  # pi_0 = the stationary law, so every position has the same marginal

    def stationary(self) -> torch.Tensor:
        """pi with pi T = pi (the left eigenvector of T for eigenvalue 1)."""
        eigvals, eigvecs = torch.linalg.eig(self.transition.T)
        pi = eigvecs[:, eigvals.real.argmax()].real
        return pi / pi.sum()

    def entropy_rate(self) -> float:
        """H = -sum_a pi_a sum_b T_ab log T_ab, nats per token in the stationary regime."""
        T = self.transition
        return float(-(self.initial[:, None] * T * T.clamp_min(1e-300).log()).sum())

    def entropy(self, length: int) -> float:
        """Exact entropy of a length-L sequence: H(x^0) + (L-1) H (the chain starts stationary)."""
        p0 = self.initial
        return float(-(p0 * p0.clamp_min(1e-300).log()).sum()) + (length - 1) * self.entropy_rate()

    def sample(self, n: int, length: int, generator=None) -> torch.Tensor:
        x = torch.empty(n, length, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.initial, n, replacement=True, generator=generator)
        for i in range(1, length):
            x[:, i] = torch.multinomial(self.transition[x[:, i - 1]], 1, generator=generator).squeeze(1)
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) for x (B, L): log pi_0(x^0) + sum_i log T[x^{i-1}, x^i]."""
        x = x.cpu()
        return self.initial[x[:, 0]].log() + self.transition[x[:, :-1], x[:, 1:]].log().sum(1)

    def _matrix_powers(self, up_to: int) -> torch.Tensor:
        if getattr(self, "_powers", None) is None or len(self._powers) <= up_to:
            powers = [torch.eye(self.vocab_size, dtype=torch.float64)]
            for _ in range(up_to):
                powers.append(powers[-1] @ self.transition)
            self._powers = torch.stack(powers)
        return self._powers[: up_to + 1]

    def oracle_denoiser(self, mask_id: int | None = None):
        """A denoiser (B, L) -> log-probabilities (B, L, V), exact for every masked position."""
        mask_id = self.vocab_size if mask_id is None else mask_id
        check_mask_id(mask_id, self.vocab_size)
        V = self.vocab_size

        def denoiser(xt: torch.Tensor) -> torch.Tensor:
            B, L = xt.shape
            device = xt.device
            xt = xt.cpu()
            powers = self._matrix_powers(L)  # (L+1, V, V): T^0 .. T^L
            marginals = self.initial @ powers[:L]  # pi_0 T^i, (L, V)
            visible = xt != mask_id
            pos = torch.arange(L)
            # nearest visible index to the left (-1 if none) and to the right (L if none) of each position
            left = torch.where(visible, pos, torch.full_like(pos, -1)).cummax(dim=1).values
            left = torch.cat([torch.full((B, 1), -1), left[:, :-1]], dim=1)
            right = torch.where(visible, pos, torch.full_like(pos, L)).flip(1).cummin(dim=1).values.flip(1)
            right = torch.cat([right[:, 1:], torch.full((B, 1), L)], dim=1)
            token = xt.clamp(max=V - 1)
            has_left, has_right = left >= 0, right < L
            # left factor: (T^{i-a})[x^a, :] or pi_0 T^i
            left_tok = token.gather(1, left.clamp(min=0))
            left_factor = torch.where(
                has_left[..., None], powers[(pos - left).clamp(max=L), left_tok], marginals[pos].expand(B, L, V)
            )
            # right factor: (T^{b-i})[:, x^b] or 1
            right_tok = token.gather(1, right.clamp(max=L - 1))
            gap_right = (right - pos).clamp(max=L)
            right_vals = powers[gap_right].gather(-1, right_tok[..., None, None].expand(B, L, V, 1)).squeeze(-1)
            right_factor = torch.where(has_right[..., None], right_vals, torch.ones_like(right_vals))
            probs = left_factor * right_factor
            probs = probs / probs.sum(-1, keepdim=True)
            # visible positions: a point mass on the token itself (never scored, but keeps the output a law)
            probs = torch.where(visible[..., None], torch.nn.functional.one_hot(token, V).double(), probs)
            return probs.clamp_min(1e-300).log().to(device)

        return denoiser
