"""LLaDA's sampler: exact in the limit, with the invariants the paper's algorithm promises."""
import math

import pytest
import torch

from conftest import tiny_transformer
from minimdm.energy import BetaCDFSchedule
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


@pytest.mark.parametrize("schedule, num_masked, steps, expected", [
    # cosine alpha_t = cos(pi t / 2) at t = 1, 3/4, 1/2, 1/4, 0: 0, .383, .707, .924, 1
    #   m = 10: 10 alpha = 0, 3.83, 7.07, 9.24, 10 -> 0, 4, 7, 9, 10;  m = 3: 0, 1.15, 2.12, 2.77, 3 -> 0, 1, 2, 3, 3
    (CosineSchedule(), [10, 3], 4, [[4, 3, 2, 1], [1, 1, 1, 0]]),
    # cosine at t = 1, .8, .6, .4, .2, 0: 0, .309, .588, .809, .951, 1
    #   m = 3: 0, .93, 1.76, 2.43, 2.85, 3 -> 0, 1, 2, 2, 3, 3
    (CosineSchedule(), [3], 5, [[1, 1, 0, 1, 0]]),
    # Beta(1, 1) = cos^2(pi t / 2) at t = 1, 3/4, 1/2, 1/4, 0: 0, .146, .5, .854, 1; m = 10 -> 0, 1, 5, 9, 10
    (BetaCDFSchedule(1, 1), [10], 4, [[1, 4, 4, 1]]),
    # cos^2 at t = 1, 2/3, 1/3, 0: 0, 1/4, 3/4, 1; m = 7: 0, 1.75, 5.25, 7 -> 0, 2, 5, 7
    (BetaCDFSchedule(1, 1), [7], 3, [[2, 3, 2]]),
], ids=["cosine-4", "cosine-5", "sin2-4", "sin2-3"])
def test_transfer_counts_follow_a_schedule_worked_out_by_hand(schedule, num_masked, steps, expected):
    """Revealed by step j = round(m alpha(1 - j/n)), differenced; the alpha values are worked out by hand above."""
    assert transfer_counts(torch.tensor(num_masked), steps, schedule).tolist() == expected


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
    """At temperature 0 the generator's seed does not matter; at temperature 1 it does (so the seed reaches the
    sampler, and the first check is not vacuous)."""
    model = MarkovChain(vocab_size=5, seed=0).oracle_denoiser()  # a real spread of probabilities

    def runs(temperature):
        return [generate(model, None, gen_length=12, steps=4, mask_id=5, batch_size=2, temperature=temperature,
                         record_history=False, generator=torch.Generator().manual_seed(seed)).tokens for seed in (0, 1)]

    assert torch.equal(*runs(0.0))
    assert not torch.equal(*runs(1.0))


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


def _table_denoiser(probs: torch.Tensor):
    """A denoiser with fixed per-position probabilities (L, K): its proposals never depend on the canvas."""
    logits = probs.double().log()
    return lambda x: logits.expand(x.shape[0], -1, -1).clone()


def _commit_order(result) -> list[int]:
    return [int((a != b).nonzero()[0, 1]) for a, b in zip(result.frames, result.frames[1:])]


def _end_token_table() -> torch.Tensor:
    """6 positions over 6 tokens, EOS = 0, EoT = 1. Position 0 proposes token 2 with p = 0.5 but puts 0.45 on EOS;
    position 1 proposes token 3 with p = 0.6; position 4 proposes EOS (0.9), position 5 EoT (0.8)."""
    probs = torch.full((6, 6), 0.02)
    probs[0] = torch.tensor([0.45, 0.01, 0.5, 0.02, 0.01, 0.01])
    probs[1] = torch.tensor([0.01, 0.01, 0.1, 0.6, 0.14, 0.14])
    probs[2] = torch.tensor([0.05, 0.05, 0.1, 0.1, 0.55, 0.15])
    probs[3] = torch.tensor([0.02, 0.02, 0.3, 0.3, 0.06, 0.3])
    probs[4] = torch.tensor([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])
    probs[5] = torch.tensor([0.04, 0.8, 0.04, 0.04, 0.04, 0.04])
    return probs / probs.sum(-1, keepdim=True)


def test_eos_eot_last_only_moves_end_proposals_to_the_back():
    denoiser = _table_denoiser(_end_token_table())
    common = dict(gen_length=6, steps=6, mask_id=6, eos_id=0, eot_id=1)
    plain = _commit_order(generate(denoiser, None, **common))
    last = generate(denoiser, None, eos_eot_last=True, **common)
    assert plain[:2] == [4, 5]  # plain low-confidence commits the sure EOS, then EoT, first
    assert _commit_order(last)[4:] == [4, 5]  # now they come last ...
    assert _commit_order(last)[:4] == [p for p in plain if p not in (4, 5)]  # ... and the rest keep their order
    # the option acts under random remasking too
    random_last = generate(denoiser, None, remasking="random", eos_eot_last=True, generator=torch.Generator().manual_seed(3), **common)
    assert sorted(_commit_order(random_last)[4:]) == [4, 5]


def test_confidence_eos_eot_inf_renormalises_like_llada():
    """Temperature 0: EOS and EoT score 0, and the other scores are renormalised over the non-end tokens, so
    position 0 (0.5 / 0.54) now goes before position 1 (0.6 / 0.98): an order eos_eot_last keeps as it was."""
    denoiser = _table_denoiser(_end_token_table())
    common = dict(gen_length=6, steps=6, mask_id=6, eos_id=0, eot_id=1)
    order = _commit_order(generate(denoiser, None, confidence_eos_eot_inf=True, **common))
    gentle = _commit_order(generate(denoiser, None, eos_eot_last=True, **common))
    assert sorted(order[4:]) == [4, 5] and order.index(0) < order.index(1)
    assert gentle.index(1) < gentle.index(0)


def test_confidence_eos_eot_inf_at_positive_temperature_demotes_only_eot():
    """LLaDA's code at temperature > 0 sets only the EoT logit to -inf before the softmax: a sure EOS is still
    committed first, a sure EoT last. Near-one-hot rows make the sampled proposals certain."""
    probs = torch.full((4, 5), 1e-9)
    for position, token in enumerate([0, 1, 2, 3]):  # EOS, EoT, then two ordinary tokens
        probs[position, token] = 1.0 - 0.1 * position
    denoiser = _table_denoiser(probs / probs.sum(-1, keepdim=True))
    common = dict(gen_length=4, steps=4, mask_id=5, eos_id=0, eot_id=1, temperature=1.0)
    result = generate(denoiser, None, confidence_eos_eot_inf=True, generator=torch.Generator().manual_seed(0), **common)
    assert result.tokens.tolist() == [[0, 1, 2, 3]]
    assert _commit_order(result) == [0, 2, 3, 1]
    gentle = generate(denoiser, None, eos_eot_last=True, generator=torch.Generator().manual_seed(0), **common)
    assert _commit_order(gentle) == [2, 3, 0, 1]


def test_confidence_eos_eot_inf_with_random_remasking_changes_nothing():
    model = tiny_transformer(vocab_size=5, length=12)
    common = dict(gen_length=12, steps=6, block_length=6, mask_id=5, remasking="random", temperature=1.0)
    plain = generate(model, None, batch_size=3, generator=torch.Generator().manual_seed(0), **common)
    llada = generate(model, None, batch_size=3, eos_id=0, eot_id=1, confidence_eos_eot_inf=True,
                     generator=torch.Generator().manual_seed(0), **common)
    assert all(torch.equal(a, b) for a, b in zip(plain.frames, llada.frames))


def _llada_reference(model, prompt: torch.Tensor, gen_length: int, steps: int, block_length: int, mask_id: int,
                     eos_id: int, eot_id: int) -> list[torch.Tensor]:
    """A transcription of LLaDA's reference sampler at temperature 0 with confidence_eos_eot_inf, written the way
    its code is: the 'noisy' logits are the logits themselves, then one chained assignment. Ranks ties the same
    way as minimdm (its top-k leaves ties unspecified). Returns the frames."""
    P = prompt.shape[1]
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), mask_id, dtype=torch.long)], 1)
    frames = [x]
    num_blocks = gen_length // block_length
    for block in range(num_blocks):
        block_masked = x[:, P + block * block_length:P + (block + 1) * block_length] == mask_id
        counts = transfer_counts(block_masked.sum(1), steps // num_blocks)
        for i in range(steps // num_blocks):
            mask_index = x == mask_id
            logits = model(x).double()
            logits_with_noise = logits  # temperature 0: no noise, the same tensor
            x0 = logits_with_noise.argmax(-1)
            logits_with_noise[:, :, eos_id] = logits[:, :, eot_id] = -torch.inf
            x0_p = torch.softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, P + (block + 1) * block_length:] = -torch.inf
            confidence = torch.where(mask_index, x0_p, -torch.inf)
            rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
            x = torch.where(rank < counts[:, i, None], x0, x)
            frames.append(x)
    return frames


def test_confidence_eos_eot_inf_matches_a_transcription_of_llada():
    model = tiny_transformer(vocab_size=6, length=16)
    prompt = torch.randint(0, 6, (4, 4), generator=torch.Generator().manual_seed(0))
    common = dict(gen_length=12, steps=6, block_length=6, mask_id=6)
    expected = _llada_reference(model, prompt, eos_id=0, eot_id=1, **common)
    result = generate(model, prompt, eos_id=0, eot_id=1, confidence_eos_eot_inf=True, **common)
    assert all(torch.equal(a, b) for a, b in zip(result.frames, expected, strict=True))
    plain = generate(model, prompt, **common)
    assert not all(torch.equal(a, b) for a, b in zip(plain.frames, expected))  # the option matters on this model
