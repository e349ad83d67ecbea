"""VRPO / DPO-E: antithetic sampling at init, unbiased ELBO estimates, a frozen reference, budget checks, data, training."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from minimdm.data.tasks import TaskTokenizer, make_examples
from minimdm.mdm.elbo import exact_elbo
from minimdm.nn import Transformer, TransformerConfig
from minimdm.toys import MarkovChain
from minimdm.train import TrainConfig
from minimdm.vrpo import (T_FLOOR, ELBOSampling, LogitOffsetPolicy, build_preference_data, dpo_e_loss, draw_masks,
                          elbo_from_draws, estimator_family, estimator_statistics, exact_answer_elbo, exact_dpo_e,
                          flat_gradient, frozen_copy, pair_elbos, preference_diagnostics, single_draw_variance,
                          split_held_out, train_dpo_e)
from minimdm.vrpo import estimators as estimators_module

V, PROMPT, ANSWER = 6, 3, 5  # vocabulary, prompt and answer lengths of the toy pairs
DESIGNS = [ELBOSampling(1, 1, False, "t"), ELBOSampling(1, 4, False, "t"), ELBOSampling(4, 1, False, "t"),
           ELBOSampling(1, 1, False), ELBOSampling(4, 1, False), ELBOSampling(2, 2, False, "l"), ELBOSampling(4, 1, False, "t", stratified=True),
           ELBOSampling(4, 1, False, "l", stratified=True)]


def tiny_policy(seed: int = 0, vocab_size: int = V) -> Transformer:
    """An untrained network with large weights, so its conditionals are far from uniform and inconsistent."""
    torch.manual_seed(seed)
    model = Transformer(TransformerConfig(vocab_size=vocab_size, n_layers=2, d_model=32, n_heads=2, max_len=32))
    for p in model.parameters():
        p.data.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def pairs():
    """Two pairs (y_w, y_l) sharing a prompt per pair; the answer is the last ANSWER positions."""
    g = torch.Generator().manual_seed(3)
    chosen = torch.randint(0, V, (2, PROMPT + ANSWER), generator=g)
    rejected = torch.randint(0, V, (2, PROMPT + ANSWER), generator=g)
    rejected[:, :PROMPT] = chosen[:, :PROMPT]
    answer_mask = torch.arange(PROMPT + ANSWER) >= PROMPT
    return chosen, rejected, answer_mask


# --- antithetic sampling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["t", "l"])
def test_at_init_antithetic_score_is_zero_and_loss_is_log_2(pairs, estimator):
    policy = tiny_policy()
    reference = frozen_copy(policy)
    policy.train()  # the trainer's mode; with dropout 0 it computes what eval mode does
    vrpo = estimator_family(8, estimator)["vrpo"]
    for seed in range(3):
        out = dpo_e_loss(policy, reference, *pairs, policy.mask_id, vrpo, beta=0.5,
                         generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out.score, torch.zeros_like(out.score))  # exactly, not approximately
        assert out.loss.item() == math.log(2)
    # the same draws without antithetic sampling: the policy and reference noises no longer cancel
    independent = estimator_family(8, estimator)["allocated"]
    out = dpo_e_loss(policy, reference, *pairs, policy.mask_id, independent, beta=0.5,
                     generator=torch.Generator().manual_seed(0))
    assert out.score.abs().min() > 1e-3
    assert out.loss.item() != math.log(2)


class InputSpy(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.model(x)


def test_policy_and_reference_share_draws_chosen_and_rejected_do_not(pairs):
    chosen, rejected, answer_mask = pairs
    same_answer = chosen.clone()  # y_l = y_w: only the draws can tell the two rows apart
    policy, reference = InputSpy(tiny_policy()), InputSpy(tiny_policy())
    for antithetic in (True, False):
        policy.seen.clear(), reference.seen.clear()
        sampling = ELBOSampling(8, 1, antithetic)
        dpo_e_loss(policy, reference, chosen, same_answer, answer_mask, V, sampling)
        seen_by_policy, seen_by_reference = policy.seen[0], reference.seen[0]  # (2 B n, L): y_w copies, then y_l
        assert torch.equal(seen_by_policy, seen_by_reference) == antithetic
        chosen_copies, rejected_copies = seen_by_policy.chunk(2)
        assert not torch.equal(chosen_copies, rejected_copies)
        assert (seen_by_policy[:, :PROMPT] != V).all()  # the prompt is never masked


def test_allocation_shares_a_timestep_among_the_masks_drawn_at_it(pairs):
    chosen, _, answer_mask = pairs
    mask = answer_mask.expand_as(chosen)
    one_timestep = draw_masks(chosen, mask, V, ELBOSampling(1, 8, False, "t"), torch.Generator().manual_seed(0))
    many_timesteps = draw_masks(chosen, mask, V, ELBOSampling(8, 1, False, "t"), torch.Generator().manual_seed(0))
    # coefficient of a copy = 1/(t n): equal within a row when its 8 masks share one t, distinct with 8 timesteps
    assert (one_timestep.coefficients == one_timestep.coefficients[:, :1]).all()
    assert many_timesteps.coefficients[0].unique().numel() == 8
    assert one_timestep.inputs.shape == many_timesteps.inputs.shape == (2, 8, PROMPT + ANSWER)


# --- unbiasedness against the exact ELBO -------------------------------------------------------------------

def test_exact_answer_elbo_is_the_cores_exact_elbo(pairs):
    policy = tiny_policy().double()
    chosen, _, answer_mask = pairs
    ours = exact_answer_elbo(policy, chosen, answer_mask.expand_as(chosen), policy.mask_id)
    core = torch.tensor([-exact_elbo(policy, row, policy.mask_id, answer_mask) for row in chosen])
    assert ours.abs().min() > 1.0  # a non-trivial bound
    torch.testing.assert_close(ours, core.to(ours.dtype), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("sampling", DESIGNS, ids=lambda s: f"{s.estimator}{s.describe()}{'strat' if s.stratified else ''}")
def test_elbo_estimates_are_unbiased(pairs, sampling):
    policy = tiny_policy().eval()
    chosen, _, answer_mask = pairs
    exact = exact_answer_elbo(policy, chosen, answer_mask.expand_as(chosen), policy.mask_id).detach()
    repeats = 3000 // sampling.budget
    rows = chosen.repeat(repeats, 1)  # rows draw independently, so one call gives `repeats` estimates per pair
    with torch.no_grad():
        estimates = elbo_from_draws(policy, rows, draw_masks(rows, answer_mask.expand_as(rows), policy.mask_id,
                                                             sampling, torch.Generator().manual_seed(1)))
    estimates = estimates.view(repeats, -1)  # (R, 2)
    stderr = estimates.std(0) / math.sqrt(repeats)
    assert ((estimates.mean(0) - exact).abs() < 4 * stderr).all(), (estimates.mean(0), exact, stderr)


def chain_pair(vocab, prompt, answer, scale, **chain_options):
    """One pair drawn from a Markov chain (the rejected answer keeps the chosen prompt), its exact oracle as the
    reference, and a policy that offsets the oracle's logits: (oracle, policy, chosen, rejected, answer_mask)."""
    chain = MarkovChain(vocab_size=vocab, seed=0, **chain_options)
    oracle, sequences = chain.oracle_denoiser(), chain.sample(2, prompt + answer, torch.Generator().manual_seed(0))
    chosen, rejected = sequences[:1], sequences[1:].clone()
    rejected[:, :prompt] = chosen[:, :prompt]
    policy = LogitOffsetPolicy(oracle, prompt + answer, vocab, scale=scale)
    return oracle, policy, chosen, rejected, torch.arange(prompt + answer) >= prompt


def test_the_score_is_unbiased_and_the_loss_is_biased_upwards():
    """E s_hat = s exactly; E -log sigma(s_hat) >= -log sigma(s) (Jensen), on the Markov oracle."""
    oracle, policy, chosen, rejected, answer_mask = chain_pair(V, PROMPT, ANSWER, scale=0.5)
    exact = exact_dpo_e(policy, oracle, chosen, rejected, answer_mask, V, beta=1.0)
    repeats = 1500
    generator = torch.Generator().manual_seed(2)
    for name, sampling in estimator_family(4, "l").items():
        rows_w, rows_l = chosen.repeat(repeats, 1), rejected.repeat(repeats, 1)
        with torch.no_grad():
            out = dpo_e_loss(policy, oracle, rows_w, rows_l, answer_mask, V, sampling, 1.0, generator)
        per_pair_loss = torch.nn.functional.softplus(-out.score)
        stderr = out.score.std() / math.sqrt(repeats)
        assert abs(out.score.mean() - exact.score) < 4 * stderr, name
        assert per_pair_loss.mean() > exact.loss, name


def _cumulants(values, probs):
    """(second, fourth) cumulant of a discrete law."""
    centred = values - (probs * values).sum()
    second = (probs * centred**2).sum().item()
    return second, (probs * centred**4).sum().item() - 3 * second**2


def _mean_of_iid(values, probs, n):
    """The exact law of the mean of n independent draws from a discrete law: every n-tuple of outcomes."""
    tuples = torch.cartesian_prod(*[torch.arange(len(values))] * n).reshape(-1, n)
    return values[tuples].mean(1), probs[tuples].prod(1)


def _one_draw_law(model, y, answer, mask_id):
    """The l-form's single draw as a table over every non-empty answer mask S: |S|, its probability
    1 / (n_y C(n_y, |S|)) (l ~ U{1..n_y}, then S uniform of size l) and its value
    (n_y / |S|) sum_{i in S} log model(y^i | y with S masked)."""
    n_y, sizes, probs, values = len(answer), [], [], []
    for k in range(1, n_y + 1):
        for masked in itertools.combinations(answer, k):
            x = y.clone()
            x[list(masked)] = mask_id
            log_p = torch.log_softmax(model(x[None]).double(), -1)[0]
            sizes.append(k)
            probs.append(1 / (n_y * math.comb(n_y, k)))
            values.append(n_y / k * sum(log_p[i, y[i]].item() for i in masked))
    return torch.tensor(sizes), torch.tensor(probs, dtype=torch.float64), torch.tensor(values, dtype=torch.float64)


def _exact_score_cumulants(design, policy, reference, answers, answer, mask_id, budget, beta):
    """(Var s_hat, kappa_4 of s_hat) by enumeration. s_hat = beta [(B_pi - B_ref)(y_w) - (B_pi - B_ref)(y_l)] is a
    sum of independent blocks, so both cumulants add over the blocks (the signs drop out of even cumulants):
    vrpo: per answer one mean of n shared-draw differences; allocated: per answer and model a mean of n draws;
    naive: the same, but the n masks of a block share one l."""
    variance = fourth = 0.0
    for y in answers:
        sizes, probs, pi = _one_draw_law(policy, y, answer, mask_id)
        ref = _one_draw_law(reference, y, answer, mask_id)[2]
        if design == "vrpo":
            blocks = [_mean_of_iid(pi - ref, probs, budget)]
        elif design == "allocated":
            blocks = [_mean_of_iid(values, probs, budget) for values in (pi, ref)]
        else:  # naive: a mixture over l of means of n draws among the masks of size l
            blocks = []
            for values in (pi, ref):
                laws = [_mean_of_iid(values[sizes == l], probs[sizes == l] * len(answer), budget)
                        for l in range(1, len(answer) + 1)]
                blocks.append((torch.cat([v for v, _ in laws]), torch.cat([p for _, p in laws]) / len(answer)))
        for block in blocks:
            second, fourth_block = _cumulants(*block)
            variance, fourth = variance + beta**2 * second, fourth + beta**4 * fourth_block
    return variance, fourth


@pytest.fixture
def one_thread():
    """Hundreds of tiny steps: a second thread only contends on a shared 2-core machine (12 ms per log_softmax)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_estimator_statistics_reports_the_exact_score_variance_of_each_design(one_thread):
    """Var s_hat of naive (n_t = 1), allocated (n_t = n) and vrpo (n_t = n, antithetic) from enumerating every mask of
    two 3-token answers; the reported sample variance over R repeats lies within 4 of its standard errors,
    sqrt((mu_4 - (R-3)/(R-1) sigma^4) / R), mu_4 = kappa_4 + 3 sigma^4 also exact."""
    vocab, prompt, answer_length, budget, beta, repeats = 4, 2, 3, 4, 1.0, 200
    oracle, policy, chosen, rejected, answer_mask = chain_pair(vocab, prompt, answer_length, scale=1.0,
                                                               concentration=0.5)
    rows = estimator_statistics(policy, oracle, chosen, rejected, answer_mask, vocab, estimator_family(budget),
                                beta=beta, repeats=repeats)
    reported = {row["estimator"]: row["score_var"] for row in rows}
    exact = {}
    with torch.no_grad():
        for design in reported:
            variance, fourth = _exact_score_cumulants(design, policy, oracle, (chosen[0], rejected[0]),
                                                      list(range(prompt, prompt + answer_length)), vocab, budget, beta)
            stderr = math.sqrt((fourth + 3 * variance**2 - (repeats - 3) / (repeats - 1) * variance**2) / repeats)
            assert abs(reported[design] - variance) < 4 * stderr, (design, reported[design], variance, stderr)
            exact[design] = variance
    # secondary: the paper's ordering, which the exact values show by a wide margin here
    assert exact["naive"] > 2 * exact["allocated"] and exact["allocated"] > 3 * exact["vrpo"]
    assert reported["naive"] > reported["allocated"] > reported["vrpo"]


# --- the reference is frozen -------------------------------------------------------------------------------

def test_reference_receives_no_gradient(pairs):
    policy, reference = tiny_policy(0), tiny_policy(1)  # the reference is NOT frozen here: only the loss may protect it
    assert all(p.requires_grad for p in reference.parameters())
    for sampling in estimator_family(4).values():
        dpo_e_loss(policy, reference, *pairs, policy.mask_id, sampling).loss.backward()
        assert all(p.grad is None for p in reference.parameters()), sampling.describe()
        assert sum(p.grad.abs().sum() for p in policy.parameters()) > 0
        policy.zero_grad()
    exact_dpo_e(policy, reference, *pairs, policy.mask_id).loss.backward()
    assert all(p.grad is None for p in reference.parameters())


def test_exact_gradient_matches_finite_differences(pairs):
    chain = MarkovChain(vocab_size=V, seed=1)
    oracle = chain.oracle_denoiser()
    policy = LogitOffsetPolicy(oracle, PROMPT + ANSWER, V, scale=0.3)
    loss = lambda: exact_dpo_e(policy, oracle, *pairs, V, beta=1.0).loss  # noqa: E731
    gradient = flat_gradient(loss(), [policy.offset])
    direction = torch.randn(policy.offset.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = 1e-3
    with torch.no_grad():
        policy.offset += step * direction
        up = loss().item()
        policy.offset -= 2 * step * direction
        down = loss().item()
        policy.offset += step * direction
    assert abs(gradient @ direction.flatten()) > 1e-3
    assert abs((up - down) / (2 * step) - (gradient @ direction.flatten()).item()) < 1e-4


# --- bad input ---------------------------------------------------------------------------------------------

def test_a_budget_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match=r"num_timesteps=3 .*budget=8.*\(1, 2, 4, 8\)"):
        ELBOSampling.with_budget(8, 3)
    with pytest.raises(ValueError, match="num_timesteps=0"):
        ELBOSampling.with_budget(8, 0)
    with pytest.raises(ValueError, match="budget=0"):
        ELBOSampling.with_budget(0, 1)
    with pytest.raises(ValueError, match=r"estimator='x'.*\('t', 'l'\)"):
        ELBOSampling(estimator="x")
    with pytest.raises(ValueError, match="masks_per_timestep=0"):
        ELBOSampling(4, 0)
    sampling = ELBOSampling.with_budget(8, 2)
    assert (sampling.num_timesteps, sampling.masks_per_timestep, sampling.budget) == (2, 4, 8)


def test_mismatched_pairs_are_refused(pairs):
    chosen, rejected, answer_mask = pairs
    with pytest.raises(ValueError, match="chosen and rejected"):
        dpo_e_loss(tiny_policy(), tiny_policy(), chosen, rejected[:, 1:], answer_mask, V, ELBOSampling())


# --- data and training -------------------------------------------------------------------------------------

def test_preference_data_from_model_samples():
    tokenizer = TaskTokenizer()
    model = tiny_policy(vocab_size=tokenizer.vocab_size).eval()
    examples = make_examples(40, tasks=("add",), seed=0)
    training, held_out = split_held_out(examples, 8)
    assert not {e.prompt for e in training} & {e.prompt for e in held_out}
    longer_is_better = lambda example, text: float(len(text))  # noqa: E731  (a graded programmatic reward)
    data = build_preference_data(model, tokenizer, training, samples_per_prompt=4, gen_length=4,
                                 reward_fn=longer_is_better, seed=0)
    assert 0 < len(data) <= len(training)
    assert all(len(w) > len(l) for w, l in zip(data.chosen_texts, data.rejected_texts))
    prompt = ~data.answer_mask
    assert torch.equal(data.chosen[prompt], data.rejected[prompt])  # a pair shares its prompt
    assert (data.answer_mask.sum(1) == 4).all()
    with pytest.raises(ValueError, match="num_held_out=40"):
        split_held_out(examples, 40)


def test_training_moves_the_policy_and_leaves_the_reference(pairs):
    chosen, rejected, answer_mask = pairs
    from minimdm.vrpo import PreferenceData

    data = PreferenceData(chosen, rejected, answer_mask.expand_as(chosen))
    policy = tiny_policy()
    reference = frozen_copy(policy)
    before = [p.clone() for p in reference.parameters()]
    result = train_dpo_e(policy, reference, data, TrainConfig(steps=3, lr=1e-3, warmup_steps=1, log_every=1,
                                                              progress=False, device="cpu"),
                         sampling=estimator_family(4)["vrpo"], beta=0.5, batch_size=2)
    assert result.history[0]["loss"] == pytest.approx(math.log(2), abs=1e-12)  # step 0: policy = reference
    assert result.history[-1]["loss"] < math.log(2)
    assert all(torch.equal(a, b) for a, b in zip(before, reference.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))



# --- the default estimator and the exact variance of one draw ------------------------------------------------

def test_the_default_estimator_is_the_l_form():
    assert ELBOSampling().estimator == "l"
    assert all(s.estimator == "l" for s in estimator_family(8).values())


@pytest.mark.parametrize("estimator, floor", [("l", T_FLOOR), ("t", 0.05)])
def test_single_draw_variance_matches_monte_carlo(pairs, estimator, floor, monkeypatch):
    chosen, _, answer_mask = pairs
    denoiser = tiny_policy().eval()
    monkeypatch.setattr(estimators_module, "T_FLOOR", floor)  # the floor the sampler clamps t at
    exact = single_draw_variance(denoiser, chosen[0], answer_mask, V, estimator, floor)
    rows = chosen[:1].expand(20000, -1)
    with torch.no_grad():
        draws = draw_masks(rows, answer_mask.expand_as(rows), V, ELBOSampling(1, 1, False, estimator),
                           torch.Generator().manual_seed(0))
        estimates = elbo_from_draws(denoiser, rows, draws)
    assert estimates.var().item() == pytest.approx(exact, rel=0.1)


def test_the_t_forms_variance_grows_like_log_one_over_the_floor(pairs):
    chosen, _, answer_mask = pairs
    denoiser = tiny_policy().eval()
    variances = [single_draw_variance(denoiser, chosen[0], answer_mask, V, "t", c) for c in (1e-4, 1e-8, 1e-16)]
    # each factor 1e-4 in the floor adds the same amount (the k = 1 term ~ sum_i v_i^2 ln(1/c)): linear in ln(1/c)
    assert variances[2] - variances[1] == pytest.approx(2 * (variances[1] - variances[0]), rel=1e-6)
    assert variances[0] > single_draw_variance(denoiser, chosen[0], answer_mask, V, "l")


# --- diagnostics: implicit-reward accuracy and ELBO drift on a hand-made case ---------------------------------

class _Unigram(torch.nn.Module):
    """Logits that ignore the context: the same log-probabilities at every position (the ELBO is then exact)."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, x):
        return self.log_probs.expand(*x.shape, -1)


def test_preference_diagnostics_on_a_hand_made_case():
    # vocabulary of 3; reference uniform; policy prefers token 0 (p = 1/2) over 1 and 2 (p = 1/4 each)
    reference = _Unigram(torch.full((3,), 1 / 3).log())
    policy = _Unigram(torch.tensor([0.5, 0.25, 0.25]).log())
    prompt = [[1], [1], [1]]
    chosen = torch.tensor([p + [0, 0] for p in prompt[:1]] + [[1, 1, 2], [1, 0, 1]])
    rejected = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    answer_mask = torch.tensor([False, True, True])
    out = preference_diagnostics(policy, reference, chosen, rejected, answer_mask, mask_id=3, beta=1.0)
    # B_pi(y) - B_ref(y) = sum_i log(3 p(y_i)): token 0 gains log 1.5, tokens 1 and 2 lose log 0.75 ... per position
    gain, loss = math.log(1.5), math.log(0.75)
    drift_chosen = [2 * gain, 2 * loss, gain + loss]
    drift_rejected = [2 * loss, 2 * gain, gain + loss]
    assert out["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)  # won, lost, tied
    assert out["chosen_drift"] == pytest.approx(sum(drift_chosen) / 3)
    assert out["rejected_drift"] == pytest.approx(sum(drift_rejected) / 3)
    assert out["margin"] == pytest.approx(sum(c - r for c, r in zip(drift_chosen, drift_rejected)) / 3)
    # at pi = pi_ref every score is 0: accuracy 1/2, no drift
    same = preference_diagnostics(reference, reference, chosen, rejected, answer_mask, mask_id=3)
    assert (same["accuracy"], same["chosen_drift"], same["rejected_drift"]) == (0.5, 0.0, 0.0)
    # the reference's ELBOs computed once and passed in give the same diagnostics
    reused = pair_elbos(reference, chosen, rejected, answer_mask, mask_id=3)
    assert reused.tolist() == pytest.approx([2 * math.log(1 / 3)] * 6)  # two answer tokens, each uniform over 3
    assert preference_diagnostics(policy, reference, chosen, rejected, answer_mask, mask_id=3, beta=1.0,
                                  reference_elbos=reused) == out
    with pytest.raises(ValueError, match="reference_elbos"):
        preference_diagnostics(policy, reference, chosen, rejected, answer_mask, mask_id=3, reference_elbos=reused[:3])


def test_exact_elbos_batched_match_the_row_by_row_ones(pairs):
    chosen, rejected, answer_mask = pairs
    policy, reference = tiny_policy(1).eval(), tiny_policy(2).eval()
    out = preference_diagnostics(policy, reference, chosen, rejected, answer_mask, V, beta=0.5, batch_size=1)
    exact = exact_dpo_e(policy, reference, chosen, rejected, answer_mask.expand_as(chosen), V, beta=0.5)
    drift = (exact.policy_elbo - exact.reference_elbo).chunk(2)
    assert out["chosen_drift"] == pytest.approx(drift[0].mean().item(), abs=1e-9)
    assert out["rejected_drift"] == pytest.approx(drift[1].mean().item(), abs=1e-9)
    assert out["margin"] == pytest.approx(exact.score.mean().item(), abs=1e-9)
    rows = torch.cat([chosen, rejected])
    mask = answer_mask.expand_as(rows)
    batched = exact_answer_elbo(policy, rows, mask, V, rows_per_call=3)
    one_by_one = torch.cat([exact_answer_elbo(policy, row[None], m[None], V) for row, m in zip(rows, mask)])
    assert torch.allclose(batched, one_by_one, atol=1e-9)
