"""The exact oracles are what they claim: checked against brute-force enumeration."""
import itertools

import torch

from minimdm.toys import EnumerableJoint, MarkovChain


def test_markov_oracle_matches_enumeration():
    chain = MarkovChain(vocab_size=4, concentration=0.4, seed=7)
    length = 6
    sequences = torch.tensor(list(itertools.product(range(4), repeat=length)))
    probs = chain.log_prob(sequences).exp()
    assert abs(probs.sum().item() - 1) < 1e-12
    oracle = chain.oracle_denoiser()
    g = torch.Generator().manual_seed(0)
    x = chain.sample(20, length, g)
    xt = x.masked_fill(torch.rand(x.shape, generator=g) < 0.6, 4)
    out = oracle(xt).exp()
    for b in range(20):
        visible = xt[b] != 4
        weight = probs * ((sequences == xt[b]) | ~visible).all(1)
        for i in (~visible).nonzero().flatten().tolist():
            marginal = torch.zeros(4, dtype=torch.float64).index_add_(0, sequences[:, i], weight)
            assert torch.allclose(out[b, i], marginal / marginal.sum(), atol=1e-12)


def test_markov_entropy_is_exact():
    chain = MarkovChain(vocab_size=3, concentration=0.5, seed=1)
    sequences = torch.tensor(list(itertools.product(range(3), repeat=5)))
    log_p = chain.log_prob(sequences)
    assert abs(-(log_p.exp() * log_p).sum().item() - chain.entropy(5)) < 1e-10


def test_enumerable_joint_oracle_is_its_conditional():
    joint = EnumerableJoint(vocab_size=3, length=3, seed=4)
    oracle = joint.oracle_denoiser()
    xt = torch.tensor([[3, 1, 3]])
    out = oracle(xt).exp()[0, 0]
    rows = joint.sequences[:, 1] == 1
    expected = torch.zeros(3, dtype=torch.float64).index_add_(0, joint.sequences[rows, 0], joint.probs[rows])
    assert torch.allclose(out, expected / expected.sum(), atol=1e-12)
