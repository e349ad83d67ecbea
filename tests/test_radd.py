"""RADD (Ou et al. 2024, arXiv 2406.03736): exact checks against enumeration and the Markov oracle, no training."""
import itertools
import math

import pytest
import torch
from scipy.special import beta, betainc

from minimdm.mdm.elbo import elbo_over_orders, exact_elbo
from minimdm.nn import Transformer, TransformerConfig
from minimdm.radd import (LOSSES, GeometricSchedule, LogLinearSchedule, concrete_score_error, draw_reveal_steps,
                          exact_loss_expectation, expected_nfe, get_loss, noisy_marginal, ordered_nll, ordered_sample,
                          reveal_probabilities, tau_leaping_sample, zero_shot_perplexity)
from minimdm.toys import EnumerableJoint, MarkovChain

K, L = 3, 4  # the enumerable case: 81 sequences, 16 masks, 24 orders


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The oracle and the samplers are many small ops: extra threads only contend on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_table_denoiser(seed=0):
    """An *inconsistent* MDM in float64: logits linear in the one-hot input (no joint has these conditionals)."""
    weights = torch.randn(L * (K + 1), L * K, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    def denoiser(x):
        one_hot = torch.nn.functional.one_hot(x, K + 1).double().reshape(x.shape[0], -1)
        return (one_hot @ weights).reshape(x.shape[0], L, K)

    return denoiser


def uniform_denoiser(vocab_size):
    return lambda x: torch.zeros(*x.shape, vocab_size)


# --- the concrete score ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [LogLinearSchedule(), GeometricSchedule(), "linear"])
def test_concrete_score_is_scaled_clean_conditional(schedule):
    joint = EnumerableJoint(vocab_size=3, length=3, seed=1)
    for t in (0.05, 0.5, 0.95):
        assert concrete_score_error(joint, t, schedule) <= 1e-10


def test_noisy_marginal_is_a_distribution():
    """Guards the exact side of the identity: p_t summed over all (K+1)^L noisy sequences is 1."""
    joint = EnumerableJoint(vocab_size=3, length=3, seed=1)
    every_noisy = torch.cartesian_prod(*[torch.arange(4)] * 3)
    assert noisy_marginal(joint, every_noisy, 0.3, LogLinearSchedule(), mask_id=3).sum().item() == pytest.approx(1, abs=1e-12)


# --- four losses, one bound ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_lambda_dce_equals_k_dce_equals_ao_arm_average(seed):
    denoiser, x0 = random_table_denoiser(seed), torch.tensor([0, 2, 1, 1])
    ao_arm = elbo_over_orders(denoiser, x0, mask_id=K)  # the core's average over all 4! orders
    lambda_dce = exact_loss_expectation(get_loss("lambda_dce", K, eps=0.0), denoiser, x0)
    k_dce = exact_loss_expectation(get_loss("k_dce", K), denoiser, x0)
    assert lambda_dce == pytest.approx(ao_arm, abs=1e-6)
    assert k_dce == pytest.approx(ao_arm, abs=1e-6)
    assert exact_elbo(denoiser, x0, mask_id=K) == pytest.approx(ao_arm, abs=1e-9)


def test_time_losses_equal_the_bound_under_the_linear_schedule():
    """t-DCE and t-DSE with alpha_t = 1 - t and no clipping are the same integral as lambda-DCE."""
    denoiser, x0 = random_table_denoiser(), torch.tensor([1, 0, 2, 2])
    ao_arm = elbo_over_orders(denoiser, x0, mask_id=K)
    for name in ("t_dce", "t_dse"):
        assert exact_loss_expectation(get_loss(name, K, schedule="linear", eps=0.0), denoiser, x0) == pytest.approx(ao_arm, abs=1e-6)


def conditional_nll(joint, x0, masked):
    """sum_{i in masked} -log p(x0^i | x0 outside masked), summing the table of an EnumerableJoint by hand."""
    visible = [i for i in range(len(x0)) if i not in masked]
    agrees = (joint.sequences[:, visible] == x0[visible]).all(1)
    return sum(-math.log(joint.probs[agrees & (joint.sequences[:, i] == x0[i])].sum() / joint.probs[agrees].sum())
               for i in masked)


def bound_between(joint, x0, low, high):
    """∫_low^high (1/lambda) E_{S ~ Bernoulli(lambda)^L} [conditional NLL of S] d lambda, by enumerating the masks S:
    a mask of size k weighs ∫ lambda^(k-1) (1 - lambda)^(L-k) = B(k, L-k+1) [I_high(k, L-k+1) - I_low(k, L-k+1)].
    Over (0, 1) that is -log p(x0) (the AO-ARM identity); a narrower range gives a smaller number."""
    length, total = len(x0), 0.0
    for k in range(1, length + 1):
        weight = beta(k, length - k + 1) * (betainc(k, length - k + 1, high) - betainc(k, length - k + 1, low))
        total += weight * sum(conditional_nll(joint, x0, masked) for masked in itertools.combinations(range(length), k))
    return total


@pytest.mark.parametrize("schedule, low, high", [
    (LogLinearSchedule(), 0.0, 0.999),  # lambda = (1 - eps) t with eps = 1e-3: lambda stops at 0.999
    # lambda = 1 - exp(-sigma_bar), sigma_bar from 1e-4 to 20
    (GeometricSchedule(), -math.expm1(-1e-4), -math.expm1(-20.0)),
], ids=["loglinear", "geometric"])
def test_time_losses_under_radds_schedules_equal_the_enumerated_bound_over_their_noise_range(schedule, low, high):
    """sigma(t) a(t) dt = d lambda / lambda, so t-DCE and t-DSE (eps = 0) with the exact oracle are the NELBO
    integral over the mask ratios the schedule reaches: the enumerated ``bound_between``, just below -log p(x0)."""
    joint, x0 = EnumerableJoint(K, L, seed=1), torch.tensor([1, 0, 2, 2])
    exact = bound_between(joint, x0, low, high)
    nll = -joint.log_prob(x0[None]).item()
    assert bound_between(joint, x0, 0.0, 1.0) == pytest.approx(nll, abs=1e-12)
    assert nll - exact > 4e-4  # the truncation is visible at the tolerance below
    for name in ("t_dce", "t_dse"):
        loss = get_loss(name, K, schedule=schedule, eps=0.0)
        assert exact_loss_expectation(loss, joint.oracle_denoiser(), x0) == pytest.approx(exact, abs=1e-9), name
    # and the Monte Carlo draws themselves (not only the loss's own noise law) average to it
    draws = get_loss("t_dce", K, schedule=schedule, eps=0.0)(joint.oracle_denoiser(), x0.expand(8000, -1),
                                                              generator=torch.Generator().manual_seed(0)).double()
    assert abs(draws.mean().item() - exact) < 4 * draws.std().item() / math.sqrt(len(draws))


def test_losses_agree_on_a_transformer():
    model = Transformer(TransformerConfig(vocab_size=K, n_layers=1, d_model=16, n_heads=2, max_len=L)).eval()
    x0 = torch.tensor([2, 2, 0, 1])
    ao_arm = elbo_over_orders(model, x0, mask_id=model.mask_id)
    assert exact_loss_expectation(get_loss("lambda_dce", K, eps=0.0), model, x0) == pytest.approx(ao_arm, abs=1e-5)
    assert exact_loss_expectation(get_loss("k_dce", K), model, x0) == pytest.approx(ao_arm, abs=1e-5)


def test_dse_equals_dce_draw_by_draw():
    """With a normalised c_theta the score-entropy bracket collapses to -a log c_theta."""
    denoiser, x0 = random_table_denoiser(), torch.randint(0, K, (64, L), generator=torch.Generator().manual_seed(0))
    dse, dce = get_loss("t_dse", K), get_loss("t_dce", K)
    noise = dce.draw(x0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(dse.per_sequence(denoiser, x0, noise).double(), dce.per_sequence(denoiser, x0, noise).double(), atol=1e-4)


def test_monte_carlo_losses_are_unbiased_on_the_markov_oracle():
    """For exact conditionals every loss averages to -log p(x): within 4 standard errors, lower variance for k-DCE."""
    chain = MarkovChain(vocab_size=8, seed=0)
    x0 = chain.sample(1, 12, generator=torch.Generator().manual_seed(0)).expand(512, -1)
    target = -chain.log_prob(x0[:1]).item()
    spread = {}
    for name in LOSSES:
        draws = get_loss(name, 8, eps=0.0, schedule="linear")(chain.oracle_denoiser(), x0, generator=torch.Generator().manual_seed(2)).double()
        assert abs(draws.mean().item() - target) < 4 * draws.std().item() / math.sqrt(len(draws)), name
        spread[name] = draws.std().item()
    assert spread["k_dce"] < spread["lambda_dce"]


def test_training_loss_backpropagates_for_time_free_and_time_conditioned_nets():
    x0 = torch.randint(0, 5, (4, 8))
    for time_cond in (False, True):
        model = Transformer(TransformerConfig(vocab_size=5, n_layers=1, d_model=16, n_heads=2, max_len=8, time_cond=time_cond))
        for name in LOSSES:
            loss = get_loss(name, model.mask_id).training_loss(model, x0)
            loss.backward()
            assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# --- samplers: cache, NFE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 8, 64, 200])
def test_cached_and_uncached_samples_are_bit_identical(steps):
    chain = MarkovChain(vocab_size=16, seed=0)
    results = [
        tau_leaping_sample(chain.oracle_denoiser(), steps=steps, mask_id=16, length=64, batch_size=8, cache=cache,
                           generator=torch.Generator().manual_seed(steps), record_history=False)
        for cache in (True, False)
    ]
    cached, uncached = results
    assert torch.equal(cached.tokens, uncached.tokens)
    assert not bool((cached.tokens == 16).any())
    assert bool((uncached.nfe_per_row == steps).all())
    assert cached.mean_nfe <= uncached.mean_nfe and (steps < 64 or cached.mean_nfe < 0.9 * steps)


class TimeShiftedOracle:
    """A time-conditioned denoiser: the Markov oracle's logits tilted by the noise level it is told, row by row."""

    config = type("Config", (), {"time_cond": True})()

    def __init__(self, chain, tilt):
        self.oracle, self.tilt = chain.oracle_denoiser(), tilt

    def __call__(self, x, time):
        logits = self.oracle(x)
        return logits + self.tilt * time[:, None, None] * torch.arange(logits.shape[-1], dtype=logits.dtype)


def test_the_cache_is_exact_for_a_time_conditioned_network_too():
    """The cached sampler calls a row at each step where it reveals, at that step's t, and skips only calls whose
    output is never read: a network with a time input gives the uncached samples too."""
    chain = MarkovChain(vocab_size=16, seed=0)
    sample = lambda denoiser, cache: tau_leaping_sample(denoiser, steps=16, mask_id=16, length=64, batch_size=8,
                                                        cache=cache, generator=torch.Generator().manual_seed(3),
                                                        record_history=False)
    timed = TimeShiftedOracle(chain, tilt=2.0)
    cached, uncached = sample(timed, True), sample(timed, False)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert cached.mean_nfe < uncached.mean_nfe
    # not vacuous: the time input changes the samples (the same stream through the time-free oracle differs)
    assert not torch.equal(cached.tokens, sample(chain.oracle_denoiser(), True).tokens)


def test_samples_differ_with_the_random_stream():
    """So the identity above is not vacuous: another seed gives other samples."""
    chain = MarkovChain(vocab_size=16, seed=0)
    a, b = (tau_leaping_sample(chain.oracle_denoiser(), steps=16, mask_id=16, length=64, batch_size=4,
                               generator=torch.Generator().manual_seed(seed), record_history=False) for seed in (0, 1))
    assert not torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("steps", [8, 64, 1024])
def test_mean_nfe_matches_the_formula(steps):
    result = tau_leaping_sample(uniform_denoiser(4), steps=steps, mask_id=4, length=64, batch_size=400,
                                generator=torch.Generator().manual_seed(0), record_history=False)
    assert result.mean_nfe == pytest.approx(expected_nfe(steps, 64), rel=0.02)


@pytest.mark.parametrize("schedule", [LogLinearSchedule(), GeometricSchedule()])
def test_reveal_steps_follow_the_first_success_law(schedule):
    """P(reveal at k) = p_k prod_{j<k} (1 - p_j); under the log-linear schedule that is uniform, 1/N."""
    steps, draws = 8, 200_000
    p = reveal_probabilities(steps, schedule)
    exact = p * torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - p, 0)[:-1]])
    masked = torch.ones(1, draws, dtype=torch.bool)
    masked[0, :10] = False  # visible tokens are never revealed: step N
    step = draw_reveal_steps(masked, p, torch.Generator().manual_seed(0))[0]
    assert bool((step[:10] == steps).all())
    frequency = torch.bincount(step[10:], minlength=steps).double() / (draws - 10)
    assert torch.allclose(frequency, exact, atol=4 * (0.25 / draws) ** 0.5)  # 4 standard errors at most
    if isinstance(schedule, LogLinearSchedule):
        assert torch.allclose(exact, torch.full((steps,), 1 / steps, dtype=torch.float64), atol=1e-3)


def tau_leaping_law(joint, reveal_p):
    """The law of the tau-leaping sampler's output, by dynamic programming over partially masked sequences: at a
    step with reveal probability p each masked token is revealed with probability p, independently, and takes a
    value from its exact conditional given the visible tokens, independently of the other revealed tokens."""
    mask, length = joint.vocab_size, joint.length

    def conditional(state, i):  # p(x^i = v | visible tokens of state), v = 0..K-1
        agrees = torch.ones(len(joint.sequences), dtype=torch.bool)
        for j, token in enumerate(state):
            if token != mask:
                agrees &= joint.sequences[:, j] == token
        mass = torch.stack([joint.probs[agrees & (joint.sequences[:, i] == v)].sum() for v in range(mask)])
        return (mass / mass.sum()).tolist()

    law = {(mask,) * length: 1.0}
    for p in reveal_p:
        after = {}
        for state, weight in law.items():
            masked = [i for i in range(length) if state[i] == mask]
            c = {i: conditional(state, i) for i in masked}
            subsets = itertools.chain.from_iterable(itertools.combinations(masked, k) for k in range(len(masked) + 1))
            for revealed in subsets:
                coin = p ** len(revealed) * (1 - p) ** (len(masked) - len(revealed))
                for values in itertools.product(range(mask), repeat=len(revealed)):
                    new = list(state)
                    for i, v in zip(revealed, values):
                        new[i] = v
                    probability = weight * coin * math.prod(c[i][v] for i, v in zip(revealed, values))
                    after[tuple(new)] = after.get(tuple(new), 0.0) + probability
        law = after
    return torch.tensor([law.get(tuple(x), 0.0) for x in joint.sequences.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("schedule", [LogLinearSchedule(), GeometricSchedule()], ids=["loglinear", "geometric"])
def test_tau_leaping_samples_follow_the_law_of_its_transition_dynamic_programme(schedule):
    """Output law = ``tau_leaping_law`` with reveal probability P(visible at s | masked at t) =
    (alpha_s - alpha_t) / (1 - alpha_t) on the grid linspace(1, 1e-5, N + 1), the last step forced to 1;
    each frequency within 4 standard errors of it."""
    joint, steps, n = EnumerableJoint(vocab_size=2, length=3, concentration=0.5, seed=3), 3, 40000
    alpha = schedule.alpha(torch.linspace(1.0, 1e-5, steps + 1, dtype=torch.float64)).tolist()
    reveal_p = [(alpha[k + 1] - alpha[k]) / (1 - alpha[k]) for k in range(steps - 1)] + [1.0]
    exact = tau_leaping_law(joint, reveal_p)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    generator = torch.Generator().manual_seed(0)
    tokens = tau_leaping_sample(joint.oracle_denoiser(), steps=steps, mask_id=2, length=3, batch_size=n,
                                schedule=schedule, generator=generator, record_history=False).tokens
    frequency = torch.bincount(joint.index(tokens), minlength=8).double() / n
    stderr = (exact * (1 - exact) / n).sqrt()
    assert bool(((frequency - exact).abs() < 4 * stderr).all()), (frequency, exact)
    # three steps reveal tokens together: the law is measurably not the data law, so the check above has teeth
    assert (exact - joint.probs).abs().max() > 10 * stderr.max()


def test_first_and_forced_final_steps_are_counted():
    # one step: it is both the first and the forced final step, one call per row
    one_step = tau_leaping_sample(uniform_denoiser(4), steps=1, mask_id=4, length=16, batch_size=32, record_history=False)
    assert bool((one_step.nfe_per_row == 1).all()) and one_step.nfe == 1
    # two steps, 64 tokens: step 0 reveals about half (a call), the forced step 1 the rest (a second call)
    two_steps = tau_leaping_sample(uniform_denoiser(4), steps=2, mask_id=4, length=64, batch_size=32, record_history=False)
    assert bool((two_steps.nfe_per_row == 2).all())
    # final_time near 1: no coin comes up before the end, so everything is revealed by the forced last step, once
    forced = tau_leaping_sample(uniform_denoiser(4), steps=6, mask_id=4, length=8, batch_size=32, final_time=1 - 1e-9,
                                record_history=False)
    assert not bool((forced.tokens == 4).any()) and bool((forced.nfe_per_row == 1).all())
    # a single token is revealed once, whatever N
    single = tau_leaping_sample(uniform_denoiser(4), steps=50, mask_id=4, length=1, batch_size=64, record_history=False)
    assert bool((single.nfe_per_row == 1).all()) and expected_nfe(50, 1) == pytest.approx(1.0)


def test_tweedie_equals_euler_for_log_linear_but_not_geometric():
    assert torch.allclose(reveal_probabilities(32, LogLinearSchedule(), "tweedie"), reveal_probabilities(32, LogLinearSchedule(), "euler"))
    assert not torch.allclose(reveal_probabilities(32, GeometricSchedule(), "tweedie"), reveal_probabilities(32, GeometricSchedule(), "euler"))


def test_history_and_fixed_canvas():
    chain = MarkovChain(vocab_size=16, seed=0)
    canvas = torch.full((3, 20), 16)
    canvas[:, :5] = 7  # a prefix that must stay
    result = tau_leaping_sample(chain.oracle_denoiser(), steps=10, mask_id=16, canvas=canvas)
    assert len(result.frames) == 11 and bool((result.tokens[:, :5] == 7).all()) and not bool((result.tokens == 16).any())
    assert torch.isnan(result.confidences[-1][:, :5]).all() and not torch.isnan(result.confidences[-1][:, 5:]).any()


# --- the ordered (AO-ARM) sampler ---------------------------------------------------------------------------


def test_ordered_sampler_follows_the_order_one_call_per_position():
    chain = MarkovChain(vocab_size=16, seed=0)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    result = ordered_sample(chain.oracle_denoiser(), mask_id=16, length=6, batch_size=2, order=order)
    for j, frame in enumerate(result.frames[1:]):
        revealed = (frame[0] != 16).nonzero().flatten().tolist()
        assert sorted(revealed) == sorted(order[: j + 1].tolist())
    assert bool((result.nfe_per_row == 6).all()) and result.nfe == 6


def test_ordered_sampler_skips_visible_positions_row_by_row():
    chain = MarkovChain(vocab_size=16, seed=0)
    canvas = torch.full((3, 8), 16)
    canvas[0, :5] = 7  # 3 masks left
    canvas[1] = 2  # nothing to fill: never a call
    canvas[2, ::2] = 1  # 4 masks left
    result = ordered_sample(chain.oracle_denoiser(), mask_id=16, canvas=canvas, order="random",
                            generator=torch.Generator().manual_seed(0), record_history=False)
    assert result.nfe_per_row.tolist() == [3, 0, 4] and not bool((result.tokens == 16).any())
    visible = canvas != 16
    assert torch.equal(result.tokens[visible], canvas[visible])


def test_ordered_sampler_draws_from_the_data_law():
    """With exact conditionals every order samples p_data: the mean -log p(x) matches the entropy H(x_1..x_16)."""
    chain = MarkovChain(vocab_size=8, seed=0)
    for order in ("left_to_right", "random"):
        samples = ordered_sample(chain.oracle_denoiser(), mask_id=8, length=16, batch_size=2000, order=order,
                                 generator=torch.Generator().manual_seed(0), record_history=False).tokens
        nll = -chain.log_prob(samples)
        assert abs(nll.mean().item() - chain.entropy(16)) < 4 * nll.std().item() / math.sqrt(len(nll)), order


def test_zero_shot_perplexity_of_the_oracle_is_the_true_nll():
    chain = MarkovChain(vocab_size=8, seed=0)
    stream = chain.sample(1, 64 * 40, generator=torch.Generator().manual_seed(0)).flatten()
    result = zero_shot_perplexity(chain.oracle_denoiser(), stream, mask_id=8, seq_len=64, loss="k_dce", draws=8,
                                  generator=torch.Generator().manual_seed(1))
    windows = stream.view(-1, 64)
    true_nll = (-chain.log_prob(windows)).mean().item() / 64
    assert result.num_sequences == 40 and result.seq_len == 64
    assert abs(result.nelbo_per_token.mean - true_nll) < 4 * result.nelbo_per_token.stderr
    assert result.perplexity == pytest.approx(math.exp(result.nelbo_per_token.mean))


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_with_a_prompt_estimates_the_conditional_nll(name):
    """SFT's form: ``maskable`` marks the answer, the prompt is never noised and the weight counts answer positions
    only. With true conditionals every loss is then unbiased for -log p(answer | prompt), not for -log p(x)."""
    chain = MarkovChain(vocab_size=4, concentration=0.5, seed=3)
    x0 = chain.sample(1, 6, torch.Generator().manual_seed(0))
    maskable = torch.tensor([[False, False, False, True, True, True]]).expand(4096, -1)
    draws = get_loss(name, 4, eps=0.0)(chain.oracle_denoiser(), x0.expand(4096, -1), maskable=maskable,
                                       generator=torch.Generator().manual_seed(0)).double()
    se = draws.std().item() / math.sqrt(len(draws))
    conditional_nll = -(chain.log_prob(x0) - chain.log_prob(x0[:, :3])).item()
    assert abs(draws.mean().item() - conditional_nll) < 4 * se
    assert abs(draws.mean().item() + chain.log_prob(x0).item()) > 10 * se


def test_zero_shot_perplexity_does_not_count_draws_of_one_sequence_as_independent():
    """However many draws, the standard error cannot fall below the spread of the sequences' own NLLs: the draws of
    one sequence share it. (Counting the 40 x 64 draws as independent gave 0.012 here, under that floor of 0.043.)"""
    chain = MarkovChain(vocab_size=8, seed=0)
    windows = chain.sample(40, 16, generator=torch.Generator().manual_seed(0))
    true_nll = (-chain.log_prob(windows)).double() / 16
    result = zero_shot_perplexity(chain.oracle_denoiser(), windows, mask_id=8, loss="k_dce", draws=64,
                                  generator=torch.Generator().manual_seed(1))
    floor = true_nll.std().item() / math.sqrt(len(windows))
    assert result.nelbo_per_token.stderr > 0.9 * floor
    assert result.per_sequence.shape == (40,)
    assert result.per_sequence.mean().item() == pytest.approx(result.nelbo_per_token.mean)
    # each sequence's mean of 64 draws sits near its own exact NLL: the per-sequence values are usable for pairing
    assert (result.per_sequence - true_nll).abs().mean() < 0.5 * true_nll.std()


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_non_positive_steps_are_refused(steps):
    with pytest.raises(ValueError, match="steps"):
        tau_leaping_sample(uniform_denoiser(4), steps=steps, mask_id=4, length=8)


def test_other_bad_arguments_are_named():
    cases = [
        (lambda: tau_leaping_sample(uniform_denoiser(4), steps=4, mask_id=4, length=8, method="ddpm"), "method"),
        (lambda: tau_leaping_sample(uniform_denoiser(4), steps=4, mask_id=4), "length"),
        (lambda: ordered_sample(uniform_denoiser(4), mask_id=4, length=4, order="spiral"), "order"),
        (lambda: ordered_sample(uniform_denoiser(4), mask_id=4, length=4, order=torch.tensor([0, 0, 1, 2])), "permutation"),
        (lambda: get_loss("elbo", 4), "loss"),
        (lambda: get_loss("t_dce", 4, eps=1.5), "eps"),
        (lambda: zero_shot_perplexity(uniform_denoiser(4), torch.zeros(3, 8).long(), 4, draws=0), "draws"),
        (lambda: zero_shot_perplexity(uniform_denoiser(4), torch.zeros(30).long(), 4), "seq_len"),
        (lambda: reveal_probabilities(4, LogLinearSchedule(), method="Tweedie"), "method"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


# --- the likelihood of one fixed order -----------------------------------------------------------------------


def test_every_fixed_order_of_true_conditionals_gives_the_exact_log_likelihood():
    chain = MarkovChain(vocab_size=3, concentration=0.5, seed=4)
    x0 = chain.sample(5, 5, torch.Generator().manual_seed(0))
    oracle, expected = chain.oracle_denoiser(), -chain.log_prob(x0)
    for order in ("left_to_right", "right_to_left", torch.tensor([3, 0, 4, 2, 1])):
        assert torch.allclose(ordered_nll(oracle, x0, mask_id=3, order=order, batch_size=7), expected, atol=1e-10)


def test_fixed_orders_average_to_the_nelbo_and_differ_one_by_one():
    denoiser, x0 = random_table_denoiser(), torch.tensor([[0, 2, 1, 1]])
    per_order = torch.cat([ordered_nll(denoiser, x0, K, order=torch.tensor(order))
                           for order in itertools.permutations(range(L))])
    assert per_order.mean().item() == pytest.approx(elbo_over_orders(denoiser, x0[0], mask_id=K), abs=1e-9)
    assert per_order.std().item() > 0.05  # inconsistent conditionals: each order is its own model


def test_a_row_of_its_own_order_per_sequence_and_bad_orders_are_refused():
    denoiser = random_table_denoiser()
    x0 = torch.tensor([[0, 2, 1, 1], [1, 1, 0, 2]])
    orders = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    both = ordered_nll(denoiser, x0, K, order=orders)
    assert both[0] == ordered_nll(denoiser, x0[:1], K, order="left_to_right")[0]
    assert both[1] == ordered_nll(denoiser, x0[1:], K, order="right_to_left")[0]
    with pytest.raises(ValueError, match="order='random'"):
        ordered_nll(denoiser, x0, K, order="random")
    with pytest.raises(ValueError, match="permutation"):
        ordered_nll(denoiser, x0, K, order=torch.tensor([0, 0, 1, 2]))


def test_a_time_conditioned_network_is_told_the_masked_fraction_of_each_canvas():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=K, n_layers=1, d_model=16, n_heads=2, max_len=L, time_cond=True)).eval()
    x0, order = torch.tensor([[2, 0, 1, 1]]), torch.tensor([2, 0, 3, 1])
    expected = 0.0
    for j in range(L):  # the definition, one canvas at a time
        canvas = x0.clone()
        canvas[0, order[j:]] = model.mask_id
        with torch.no_grad():
            logits = model(canvas, time=torch.tensor([(L - j) / L]))
        expected -= torch.log_softmax(logits[0, order[j]].double(), -1)[x0[0, order[j]]].item()
    assert ordered_nll(model, x0, model.mask_id, order=order).item() == pytest.approx(expected, abs=1e-5)
