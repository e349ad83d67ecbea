"""LLaDA's sampler: exact in the limit, with the invariants the paper's algorithm promises."""
import itertools
import math

import pytest
import torch

from conftest import tiny_transformer
from minimdm.mdm.sampler import generate, guided_logits, transfer_counts
from minimdm.mdm.schedules import CosineSchedule
from minimdm.toys import EnumerableJoint, MarkovChain


def test_random_remasking_one_token_per_step_samples_the_data_law():
    """With exact conditionals, random order and steps = gen_length, the sampler's law is p_data (exact TV)."""
    joint = EnumerableJoint(vocab_size=3, length=3, seed=0)
    n = 30000
    result = generate(joint.oracle_denoiser(), None, gen_length=3, steps=3, mask_id=3, remasking="random",
                      temperature=1.0, batch_size=n, generator=torch.Generator().manual_seed(0), record_history=False)
    counts = torch.bincount(joint.index(result.tokens), minlength=27).double() / n
    tv = 0.5 * (counts - joint.probs).abs().sum().item()
    # sampling noise alone: E[TV] ~ sum sqrt(p(1-p)/n) / 2 * sqrt(2/pi) ~ 0.01 here
    assert tv < 0.02


def test_fewer_steps_raise_the_sample_nll_monotonically():
    chain = MarkovChain(vocab_size=8, concentration=0.3, seed=0)
    length, n = 16, 3000
    oracle = chain.oracle_denoiser()
    means = {}
    for steps in (16, 8, 4, 2, 1):
        result = generate(oracle, None, gen_length=length, steps=steps, mask_id=8, remasking="random", temperature=1.0,
                          batch_size=n, generator=torch.Generator().manual_seed(steps), record_history=False)
        nll = -chain.log_prob(result.tokens)
        means[steps] = (nll.mean().item(), nll.std().item() / math.sqrt(n))
    entropy = chain.entropy(length)
    assert abs(means[16][0] - entropy) < 2.5 * means[16][1]  # exact sampler: mean NLL = entropy
    ordered = [means[s][0] for s in (16, 8, 4, 2, 1)]
    assert all(a < b for a, b in zip(ordered, ordered[1:]))


@pytest.mark.parametrize("num_masked,steps", [(10, 3), (7, 7), (3, 5), (128, 128)])
def test_transfer_counts_sum_to_the_masked_count(num_masked, steps):
    counts = transfer_counts(torch.tensor([num_masked]), steps)
    assert counts.sum().item() == num_masked
    assert counts.max() - counts.min() <= 1 and bool((counts[0, :-1] >= counts[0, 1:]).all())  # remainder first
    cosine = transfer_counts(torch.tensor([num_masked, num_masked // 2]), steps, CosineSchedule())
    assert cosine.sum(1).tolist() == [num_masked, num_masked // 2]


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("block_length", [12, 4])
def test_sampler_invariants(remasking, block_length):
    model = tiny_transformer(vocab_size=5, length=16)
    prompt = torch.randint(0, 5, (3, 4))
    result = generate(model, prompt, gen_length=12, steps=6, block_length=block_length, mask_id=5,
                      remasking=remasking, temperature=1.0, generator=torch.Generator().manual_seed(0))
    frames = torch.stack(result.frames)  # (steps+1, B, L)
    assert len(result.frames) == 7 and result.nfe == 6
    assert bool((frames[:, :, :4] == prompt).all())  # the prompt never changes
    assert not bool((result.tokens == 5).any())  # nothing left masked
    for before, after in zip(frames[:-1], frames[1:]):
        committed = before != 5
        assert bool((after[committed] == before[committed]).all())  # committed tokens never change
    steps_per_block = 6 // (12 // block_length)
    for step in range(1, 7):  # nothing beyond the current block is revealed
        block_end = 4 + block_length * math.ceil(step / steps_per_block)
        assert bool((frames[step][:, block_end:] == 5).all())
    revealed = (frames[1:] != 5).sum(-1) - (frames[:-1] != 5).sum(-1)  # per step, per row
    assert bool((revealed == 2).all())  # 12 tokens / 6 steps: two per step


def test_temperature_zero_is_deterministic():
    model = tiny_transformer(vocab_size=5, length=12)
    runs = [generate(model, None, gen_length=12, steps=4, mask_id=5, batch_size=2, record_history=False,
                     generator=torch.Generator().manual_seed(seed)).tokens for seed in (0, 1)]
    assert torch.equal(runs[0], runs[1])


def test_guidance_scale_zero_is_the_plain_model():
    model = tiny_transformer(vocab_size=5, length=8)
    x = torch.tensor([[1, 2, 5, 5, 3, 5, 5, 5]])
    prompt_mask = torch.zeros_like(x, dtype=torch.bool)
    prompt_mask[:, :2] = True
    logits, nfe = guided_logits(model, x, prompt_mask, 5, 0.0)
    assert nfe == 1 and torch.equal(logits, model(x))
    guided, nfe = guided_logits(model, x, prompt_mask, 5, 1.5)
    unconditional = model(x.masked_fill(prompt_mask, 5))
    assert nfe == 2 and torch.allclose(guided, unconditional + 2.5 * (model(x) - unconditional), atol=1e-10)


def test_eos_options():
    model = tiny_transformer(vocab_size=5, length=8)
    result = generate(model, None, gen_length=8, steps=8, mask_id=5, batch_size=4, eos_id=0, logits_eos_inf=True,
                      temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert not bool((result.tokens == 0).any())
    # confidence_eos_eot_inf: EOS/EoT proposals are committed after every other candidate. A fixed denoiser
    # whose tail positions propose EOS with high confidence shows it (LLaDA's "EOS flood" in miniature).
    table = torch.randn(8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table[4:, 0] += 12.0  # positions 4..7: EOS, near certain
    fixed = lambda x: table.expand(x.shape[0], -1, -1)
    eos_first = generate(fixed, None, gen_length=8, steps=8, mask_id=5, eos_id=0, eot_id=1)
    eos_last = generate(fixed, None, gen_length=8, steps=8, mask_id=5, eos_id=0, eot_id=1, confidence_eos_eot_inf=True)
    order = lambda result: [int((a != b).nonzero()[0, 1]) for a, b in zip(result.frames, result.frames[1:])]
    assert set(order(eos_first)[:4]) == {4, 5, 6, 7}  # plain low-confidence commits the EOS tail first
    is_end = [int(eos_last.tokens[0, p]) in (0, 1) for p in order(eos_last)]
    assert is_end == sorted(is_end) and sum(is_end) >= 4  # with the option: every EOS/EoT after all others
    assert torch.equal(eos_first.tokens, eos_last.tokens)  # same proposals, only the order changed
