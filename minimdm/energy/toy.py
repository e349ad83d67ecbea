"""The paper's 5-token toy, exactly: the sampler's output law by dynamic programming over partially masked states."""
from __future__ import annotations

import itertools
import math

import torch

from minimdm.energy.sampling import unmask_probabilities
from minimdm.mdm.sampler import transfer_counts
from minimdm.mdm.schedules import Schedule
from minimdm.toys import EnumerableJoint


class MaskedStates:
    """Every partially masked sequence z in {0..d-1, M}^n of a toy joint (M = d), and the one-token moves between them.

    A move (z -> x) unmasks one masked position i of z with a value v. ``conditional[s, i, v]`` = q(x^i = v | z^UM),
    the data's conditional given z's visible tokens (from the joint's exact oracle).
    """

    def __init__(self, joint: EnumerableJoint):
        d, n = joint.vocab_size, joint.length
        self.joint, self.mask_id, self.length = joint, d, n
        self.states = torch.tensor(list(itertools.product(range(d + 1), repeat=n)))  # (S, n)
        self.is_masked = self.states == d  # (S, n)
        self.num_masked = self.is_masked.sum(1)  # m(z), (S,)
        place = (d + 1) ** torch.arange(n - 1, -1, -1)  # state index = sum_i z_i (d+1)^(n-1-i)
        self.conditional = joint.oracle_denoiser()(self.states).softmax(-1)  # (S, n, d)
        # consistent[s, k]: clean sequence k agrees with state s wherever s is visible (the kernel's support)
        sequences = joint.sequences  # (N, n)
        self.consistent = ((self.states[:, None] == sequences[None]) | self.is_masked[:, None]).all(-1)  # (S, N)
        self.visible_mass = self.consistent.double() @ joint.probs  # P(z^UM) = sum of q over consistent x, (S,)
        source, position = self.is_masked.nonzero(as_tuple=True)
        value = torch.arange(d).repeat(len(source))
        self.move_source = source.repeat_interleave(d)  # (moves,)
        self.move_position = position.repeat_interleave(d)
        self.move_value = value
        self.move_target = self.move_source + (value - d) * place[self.move_position]
        self.is_clean = self.num_masked == 0  # the final states, in the order of joint.sequences
        self.fill_moves = _fill_moves(self)  # for the sampler's exact law

    def law_given_clean(self, alpha: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """p_{tau|1}(z | x_1) = prod_i [alpha 1(z^i = x_1^i) + (1 - alpha) 1(z^i = M)]: (T,) -> (T, S, N)."""
        visible = self.length - self.num_masked
        per_state = alpha[:, None] ** visible * mask_prob[:, None] ** self.num_masked  # (T, S)
        return per_state[:, :, None] * self.consistent  # (T, S, N)


def paper_toy_target(name: str) -> EnumerableJoint:
    """Fig. 4 / App. E.6: n = 5 tokens over {a, b} = {0, 1}. 'A': uniform on {aaaaa, bbbbb};
    'B': uniform on the sequences with two or three a's."""
    if name not in ("A", "B"):
        raise ValueError(f"name={name!r}: allowed values are 'A' and 'B'")
    num_a = (EnumerableJoint(vocab_size=2, length=5).sequences == 0).sum(1)  # a = 0, b = 1
    support = (num_a == 5) | (num_a == 0) if name == "A" else (num_a == 2) | (num_a == 3)
    return EnumerableJoint(vocab_size=2, length=5, probs=support.double() / support.sum())


def exact_output_law(joint: EnumerableJoint, schedule: Schedule, steps: int, sampler: str = "bernoulli",
                     states: MaskedStates | None = None) -> torch.Tensor:
    """The exact law (N,) of the samples, over joint.sequences, of an MDM sampler run with the *exact* conditionals.

    The sampler is a Markov chain on the (d+1)^n partially masked states; from z it fills a set F of masked positions,
    each with v ~ q(v | z^UM) independently (tokens revealed in one step ignore each other). Per step:
      'bernoulli':    P(F) = r^|F| (1 - r)^(m - |F|)           (paper; r from ``unmask_probabilities``)
      'fixed_counts': P(F) = 1(|F| = k_j) / binom(m, k_j)       (LLaDA with random remasking; k_j from ``transfer_counts``)
    """
    if sampler not in ("bernoulli", "fixed_counts"):
        raise ValueError(f"sampler={sampler!r}: allowed values are 'bernoulli' and 'fixed_counts'")
    states = states or MaskedStates(joint)
    moves = states.fill_moves
    law = torch.zeros(len(states.states), dtype=torch.float64)
    law[-1] = 1.0  # the all-mask state is the last in the enumeration
    if sampler == "bernoulli":
        per_step = unmask_probabilities(schedule, steps).tolist()
    else:
        per_step = transfer_counts(torch.tensor([joint.length]), steps, schedule=schedule)[0].tolist()
    for step_value in per_step:
        filled, left = moves["num_filled"], moves["num_left"]
        if sampler == "bernoulli":
            choose = step_value**filled * (1 - step_value) ** left
        else:
            ways = torch.tensor([math.comb(m, step_value) or 1 for m in range(joint.length + 1)], dtype=torch.float64)
            choose = (filled == step_value).double() / ways[(filled + left).long()]  # 1(|F| = k) / binom(m, k)
        weight = law[moves["source"]] * choose * moves["value_prob"]
        law = torch.zeros_like(law).index_add_(0, moves["target"], weight)
    return law[states.is_clean]


def _fill_moves(states: MaskedStates) -> dict:
    """All pairs (z -> z') where z' fills some masked positions of z: sizes |F|, m - |F| and prod_{i in F} q(z'^i | z^UM)."""
    s = states.states
    extends = ((s[None] == s[:, None]) | states.is_masked[:, None]).all(-1)  # extends[z, z'], (S, S)
    source, target = extends.nonzero(as_tuple=True)
    filled = states.is_masked[source] & ~states.is_masked[target]  # (pairs, n)
    value = s[target].clamp(max=states.mask_id - 1)
    prob = states.conditional[source[:, None], torch.arange(states.length), value]  # (pairs, n)
    value_prob = torch.where(filled, prob, 1.0).prod(1)
    return {"source": source, "target": target, "num_filled": filled.sum(1).double(),
            "num_left": (states.is_masked[target]).sum(1).double(), "value_prob": value_prob}


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """TV(p, q) = 1/2 sum |p - q|."""
    return 0.5 * float((p.double() - q.double()).abs().sum())
