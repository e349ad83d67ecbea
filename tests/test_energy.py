"""Energy-optimal schedules (minimdm.energy): Beta-CDF special cases, schedule invariants, the energies and their
constants, the n = 1 minimiser, the exact 5-token toy against a plain-Python dynamic programme and the real samplers,
and bad input."""
import collections
import functools
import itertools
import math

import pytest
import torch
from scipy.special import betainc

from minimdm.energy import (SAMPLERS, BetaCDFSchedule, BetaWeight, MaskedStates, alpha_in_paper_time, beta_grid_search,
                            best_on_grid, bernoulli_generate, complete_prompts, completion_excess_nll, diverges,
                            endpoint_exponents, energies, exact_output_law, minimise_one_token_energy, one_token_energy,
                            one_token_energy_density, optimal_alpha, paper_toy_target, time_quadrature, total_variation,
                            unmask_probabilities)
from minimdm.mdm.sampler import generate
from minimdm.mdm.schedules import LinearSchedule
from minimdm.toys import EnumerableJoint, MarkovChain

T = torch.linspace(0, 1, 1001, dtype=torch.float64)  # course time, both ends included
SHAPES = [(0.5, 0.5), (1.0, 1.0), (0.9, 0.3), (0.3, 0.9), (1.0, 0.2), (2.0, 3.0)]


def test_beta_half_half_is_linear_and_one_one_is_sin_squared():
    # Prop. 3.7, course time t = 1 - tau: linear alpha_t = 1 - t; sin^2(pi tau / 2) = cos^2(pi t / 2)
    assert (BetaCDFSchedule(0.5, 0.5).alpha(T) - (1 - T)).abs().max() < 1e-10
    assert (BetaCDFSchedule(1.0, 1.0).alpha(T) - torch.cos(0.5 * math.pi * T) ** 2).abs().max() < 1e-10


@pytest.mark.parametrize("a, b", SHAPES)
def test_schedule_invariants(a, b):
    schedule = BetaCDFSchedule(a, b)
    alpha = schedule.alpha(T)
    assert alpha[0] == 1.0 and alpha[-1] == 0.0  # alpha(0) = 1 (clean), alpha(1) = 0 (all masked)
    assert bool((alpha.diff() <= 0).all())  # monotone: masking only grows with t
    assert (schedule.mask_prob(T) - (1 - alpha)).abs().max() < 1e-12
    inner = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    finite_difference = (schedule.alpha(inner + h) - schedule.alpha(inner - h)) / (2 * h)
    assert torch.allclose(schedule.alpha_prime(inner), finite_difference, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "one", None])
def test_bad_beta_parameters_raise(bad):
    with pytest.raises(ValueError, match="a=.*must be finite numbers > 0"):
        BetaCDFSchedule(bad, 0.5)
    with pytest.raises(ValueError, match="b=.*must be finite numbers > 0"):
        BetaWeight(0.5, bad)


@pytest.mark.parametrize("a, b", [(1.0, 1.0), (0.9, 0.3), (2.0, 3.0)])
def test_optimal_schedule_has_energy_pi_squared(a, b):
    schedule = BetaCDFSchedule(a, b)
    assert one_token_energy(schedule, schedule.weight) == pytest.approx(math.pi**2, rel=1e-3)
    # any other schedule costs more under this weight, a nearby one too (by 0.4-2 % for a 10 % change of a)
    assert one_token_energy(LinearSchedule(), schedule.weight) > 1.05 * math.pi**2
    for nearby in (BetaCDFSchedule(1.1 * a, b), BetaCDFSchedule(0.9 * a, b)):
        assert one_token_energy(nearby, schedule.weight) > 1.003 * math.pi**2


@pytest.mark.parametrize("a, b", [(0.9, 0.3), (2.0, 3.0)])
def test_minimising_the_one_token_energy_recovers_sin_squared(a, b):
    weight = BetaWeight(a, b)
    tau, alpha, energy = minimise_one_token_energy(weight)
    assert math.pi**2 <= energy + 1e-9 and energy < 1.012 * math.pi**2  # Cauchy-Schwarz: E >= pi^2
    assert (alpha - optimal_alpha(weight.gamma(tau))).abs().max() < 0.01
    # and it is *not* the minimiser of another weight: the gap to sin^2(pi tau / 2) is large
    assert (alpha - optimal_alpha(tau)).abs().max() > 0.1


def _beta_function(a, b):
    return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


JOINTS = pytest.mark.parametrize("joint", [EnumerableJoint(2, 3, seed=1), paper_toy_target("A")], ids=["dense", "target A"])


@JOINTS
@pytest.mark.parametrize("schedule, weight, one_token", [
    (BetaCDFSchedule(0.9, 0.3), BetaWeight(0.9, 0.3), math.pi**2),  # Thm 3.6: a weight's own optimal schedule
    # alpha = tau: ∫ tau^-0.9 (1 - tau)^-0.3 dtau B(0.9, 0.3), as in test_a_convergent_energy_matches_its_closed_form
    (LinearSchedule(), BetaWeight(0.9, 0.3), _beta_function(0.9, 0.3) * _beta_function(0.1, 0.7)),
], ids=["optimal", "linear"])
def test_three_energies_are_finite_and_agree_up_to_the_theorem_constants(joint, schedule, weight, one_token):
    """Where the one-token energy is finite (closed form) so are the three others, and E_k = C_k E_1,
    E_c = n 2^(n-1) E_1, E_c = 2^(n-1) E_g (Thm 3.1, 3.2)."""
    n = joint.length
    result = energies(schedule, weight, joint)
    assert all(math.isfinite(result[k]) for k in ("kinetic", "conditional_kinetic", "geodesic", "one_token"))
    assert result["one_token"] == pytest.approx(one_token, rel=2e-3)
    assert result["kinetic"] == pytest.approx(result["C_k"] * result["one_token"], rel=1e-10)  # Thm 3.1
    assert result["conditional_kinetic"] == pytest.approx(n * 2 ** (n - 1) * result["one_token"], rel=1e-10)
    assert result["conditional_kinetic"] == pytest.approx(2 ** (n - 1) * result["geodesic"], rel=1e-10)  # Thm 3.2
    assert result["geodesic"] == pytest.approx(n * result["one_token"], rel=1e-10)
    assert result["kinetic"] == pytest.approx(result["C_1"] * result["conditional_kinetic"], rel=1e-10)
    # C_k = sum of m(z) over reachable states: n (d+1)^(n-1) when every sequence has mass, fewer for target A
    assert (result["C_k"] == n * 3 ** (n - 1)) == bool((joint.probs > 0).all())


@JOINTS
def test_linear_schedule_under_the_uniform_weight_diverges_in_every_energy(joint):
    """alpha = tau, gamma = tau: E_1 = ∫ dtau / (tau (1 - tau)) diverges (log, power -1 at both ends), and by
    Thm 3.1/3.2 the three other energies are constant multiples of it: all four are inf."""
    result = energies(LinearSchedule(), BetaWeight(1, 1), joint)
    assert result["endpoint_exponents"] == pytest.approx((-1.0, -1.0), abs=1e-3)
    assert all(result[k] == math.inf for k in ("kinetic", "conditional_kinetic", "geodesic", "one_token"))


def _plain_output_law(joint: EnumerableJoint, a: float, b: float, steps: int, sampler: str) -> list[float]:
    """The sampler's output law over joint.sequences from its definition, in plain Python: a dict {state: probability}
    carried through the steps. From z, each masked position is left masked or filled with v ~ q(v | visible tokens of
    z), the fills independent; the set F of filled positions has P(F) = r^|F| (1 - r)^(m - |F|) ('bernoulli',
    r = (alpha_{k+1} - alpha_k) / (1 - alpha_k) on the paper grid tau_k = k/N) or 1(|F| = c) / binom(m, c)
    ('fixed_counts', c = the difference of round(n alpha_k)). A state no sequence agrees with gets uniform outputs
    (the oracle's convention). alpha_k = sin^2(pi/2 I_{tau_k}(a, b)) straight from scipy's Beta CDF."""
    d, n, mask = joint.vocab_size, joint.length, joint.vocab_size
    mass = {tuple(x): p for x, p in zip(joint.sequences.tolist(), joint.probs.tolist())}

    @functools.cache
    def conditionals(z):
        agree = [x for x in mass if all(zi in (mask, xi) for zi, xi in zip(z, x))]
        total = sum(mass[x] for x in agree)
        if total == 0:
            return [[1 / d] * d] * n
        return [[sum(mass[x] for x in agree if x[i] == v) / total for v in range(d)] for i in range(n)]

    alpha = [math.sin(math.pi / 2 * betainc(a, b, k / steps)) ** 2 for k in range(steps + 1)]
    if sampler == "bernoulli":
        rates = [(alpha[k + 1] - alpha[k]) / (1 - alpha[k]) for k in range(steps)]
        set_probs = [lambda m, f, r=r: r**f * (1 - r) ** (m - f) for r in rates]
    else:
        assert all(abs(n * x % 1 - 0.5) > 1e-6 for x in alpha)  # no count sits on a rounding knife-edge
        done = [round(n * x) for x in alpha]
        counts = [done[k + 1] - done[k] for k in range(steps)]
        set_probs = [lambda m, f, c=c: 1 / math.comb(m, c) if f == c else 0.0 for c in counts]
    law = {(mask,) * n: 1.0}
    for set_prob in set_probs:
        after = collections.defaultdict(float)
        for z, pz in law.items():
            masked = [i for i in range(n) if z[i] == mask]
            for fill in itertools.product([mask, *range(d)], repeat=len(masked)):
                weight, new = pz * set_prob(len(masked), sum(v != mask for v in fill)), list(z)
                for i, v in zip(masked, fill):
                    if v != mask:
                        weight, new[i] = weight * conditionals(z)[i][v], v
                after[tuple(new)] += weight
        law = after
    return [law[x] for x in mass]


@pytest.mark.parametrize("target, steps, a, b, sampler", [
    ("A", 3, 0.5, 0.5, "bernoulli"), ("B", 4, 0.9, 0.3, "bernoulli"), ("A", 3, 0.5, 0.5, "fixed_counts"),
    ("B", 2, 0.4, 0.6, "fixed_counts"), ("A", 2, 0.3, 0.9, "fixed_counts"),  # counts 2,1,2; 3,2; 4,1
])
def test_exact_output_law_equals_a_plain_python_dynamic_programme(target, steps, a, b, sampler):
    """The package's tensorised law equals the plain dict-of-states programme above to rounding (1e-12), and the
    law is far from the data (several tokens per step), so a wrong law could not agree by accident."""
    joint = paper_toy_target(target)
    exact = exact_output_law(joint, BetaCDFSchedule(a, b), steps, sampler=sampler)
    plain = torch.tensor(_plain_output_law(joint, a, b, steps, sampler), dtype=torch.float64)
    assert (exact - plain).abs().max() < 1e-12 and abs(float(plain.sum()) - 1) < 1e-12
    assert total_variation(plain, joint.probs) > 0.02


# TV(sampler's law, data) from a dynamic programme written before this package, to 3 decimals (not paper numbers).
@pytest.mark.parametrize("target, steps, linear, sin_squared, best_beta, best", [
    ("A", 3, 0.405, 0.388, (0.5, 0.3), 0.284),
    ("A", 4, 0.308, 0.310, (0.5, 0.3), 0.212),
    ("A", 8, 0.156, 0.165, (0.6, 0.3), 0.105),
    ("B", 3, 0.117, 0.128, (0.4, 0.6), 0.103),
    ("B", 8, 0.041, 0.048, (0.4, 0.6), 0.034),
])
def test_exact_toy_reproduces_the_older_reference_values(target, steps, linear, sin_squared, best_beta, best):
    """The Bernoulli sampler's TV to the data under the linear (0.5, 0.5), sin^2 (1, 1) and grid-best Beta schedules:
    the plain programme above gives the older 3-decimal values, and the package's law equals the plain one to 1e-12."""
    joint = paper_toy_target(target)
    states = MaskedStates(joint)
    for (a, b), reference in zip([(0.5, 0.5), (1.0, 1.0), best_beta], [linear, sin_squared, best]):
        plain = torch.tensor(_plain_output_law(joint, a, b, steps, "bernoulli"), dtype=torch.float64)
        exact = exact_output_law(joint, BetaCDFSchedule(a, b), steps, states=states)
        assert total_variation(plain, joint.probs) == pytest.approx(reference, abs=6e-4)
        assert (exact - plain).abs().max() < 1e-12


def _empirical_law(samples: torch.Tensor, joint: EnumerableJoint) -> torch.Tensor:
    return torch.bincount(joint.index(samples), minlength=len(joint.sequences)).double() / len(samples)


@pytest.mark.parametrize("target, a, b, steps, sampler", [
    ("A", 0.5, 0.5, 3, "bernoulli"), ("B", 0.4, 0.6, 3, "bernoulli"), ("A", 0.5, 0.5, 3, "fixed_counts"),
    ("B", 1.0, 1.0, 4, "fixed_counts"),
])
def test_exact_law_matches_a_brute_force_sampler(target, a, b, steps, sampler):
    """20000 runs of the real sampler on the exact oracle: every sequence's frequency lies within 4 standard errors
    sqrt(q (1 - q) / 20000) of the exact law q (a sequence of law 0 never appears)."""
    joint, schedule, num_samples = paper_toy_target(target), BetaCDFSchedule(a, b), 20000
    exact = exact_output_law(joint, schedule, steps, sampler=sampler)
    assert exact.sum() == pytest.approx(1.0, abs=1e-12)
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(gen_length=5, steps=steps, mask_id=2, schedule=schedule, temperature=1.0, batch_size=num_samples,
                  generator=generator, record_history=False)
    if sampler == "bernoulli":
        samples = bernoulli_generate(joint.oracle_denoiser(), **kwargs).tokens
    else:  # the course's LLaDA sampler with random remasking = fixed counts per step
        samples = generate(joint.oracle_denoiser(), remasking="random", **kwargs).tokens
    empirical = _empirical_law(samples, joint)
    tolerance = 4 * (exact * (1 - exact) / num_samples).sqrt()
    assert bool(((empirical - exact).abs() <= tolerance).all())
    assert total_variation(empirical, joint.probs) == pytest.approx(total_variation(exact, joint.probs), abs=0.02)


def test_unmask_probabilities():
    r = unmask_probabilities(LinearSchedule(), 4)
    assert torch.allclose(r, torch.tensor([1 / 4, 1 / 3, 1 / 2, 1.0], dtype=torch.float64))  # (t - s)/t
    for a, b in SHAPES:
        r = unmask_probabilities(BetaCDFSchedule(a, b), 8)
        assert r[-1] == 1.0 and bool(((r >= 0) & (r <= 1)).all())
    with pytest.raises(ValueError, match="steps"):
        unmask_probabilities(LinearSchedule(), 0)


def test_bernoulli_sampler_reveals_the_schedule_fraction_on_average():
    schedule, steps = BetaCDFSchedule(0.9, 0.3), 4
    denoiser = paper_toy_target("B").oracle_denoiser()
    result = bernoulli_generate(denoiser, gen_length=5, steps=steps, mask_id=2, schedule=schedule, batch_size=4000,
                                generator=torch.Generator().manual_seed(1))
    revealed = torch.stack([(frame != 2).double().mean() for frame in result.frames])  # (N+1,)
    expected = schedule.alpha(1 - torch.arange(steps + 1, dtype=torch.float64) / steps)
    assert torch.allclose(revealed, expected, atol=0.02)
    assert not bool((result.tokens == 2).any()) and result.nfe <= steps


def test_grid_search_finds_the_minimum():
    table = beta_grid_search(lambda s: (s.a - 0.7) ** 2 + (s.b - 0.2) ** 2)
    assert table.shape == (10, 10)
    a, b, value = best_on_grid(table)
    assert (a, b) == (0.7, 0.2) and value == pytest.approx(0.0, abs=1e-12)


# --- divergence: a known-divergent energy reads inf at every node count, a known-convergent one its closed form ---

@pytest.mark.parametrize("schedule, weight, exponents", [
    # alpha = tau under gamma = tau: density 1/(tau (1 - tau)), a log divergence at both ends (power exactly -1)
    (LinearSchedule(), BetaWeight(1, 1), (-1.0, -1.0)),
    # alpha = tau under Beta(2, 3): density ~ tau^-2 at 0, ~ (1 - tau)^-3 at 1 (power divergences)
    (LinearSchedule(), BetaWeight(2, 3), (-2.0, -3.0)),
    # Beta(1, 0.2) schedule: 1 - alpha ~ (1 - tau)^0.4 against gamma' ~ (1 - tau)^-0.5, power 0.4 - 1 - 0.5 = -1.1 at 1
    (BetaCDFSchedule(1, 0.2), BetaWeight(0.5, 0.5), (0.5, -1.1)),
])
def test_a_divergent_energy_is_infinite_at_every_node_count(schedule, weight, exponents):
    for num_nodes in (101, 401, 801):
        assert one_token_energy(schedule, weight, num_nodes) == math.inf
    found = endpoint_exponents(lambda at: one_token_energy_density(
        *alpha_in_paper_time(schedule, at), weight.gamma_rate(at.tau, one_minus_tau=at.t)))
    assert found == pytest.approx(exponents, abs=1e-3)
    e = energies(schedule, weight, EnumerableJoint(2, 3, seed=1), num_nodes=101)
    assert all(e[k] == math.inf for k in ("kinetic", "conditional_kinetic", "geodesic", "one_token"))


def test_a_convergent_energy_matches_its_closed_form():
    # alpha = tau under gamma = Beta(0.9, 0.3): E = B(0.9, 0.3) ∫ tau^-0.9 (1 - tau)^-0.3 dtau = B(0.9, 0.3) B(0.1, 0.7),
    # a slowly convergent integrand (power -0.9 at 0) whose tail beyond the last node is not negligible
    exact = _beta_function(0.9, 0.3) * _beta_function(0.1, 0.7)
    for num_nodes in (101, 401, 801):
        assert one_token_energy(LinearSchedule(), BetaWeight(0.9, 0.3), num_nodes) == pytest.approx(exact, rel=5e-3)
    assert not diverges((-0.9, -0.3)) and diverges((-1.0, 2.0)) and diverges((0.5, -1.5))
    # the same integrand with the tail left out (the truncated quadrature alone) falls short by several per cent
    nodes = time_quadrature(401)
    truncated = float((nodes.weights * one_token_energy_density(
        *alpha_in_paper_time(LinearSchedule(), nodes), BetaWeight(0.9, 0.3).gamma_rate(nodes.tau, one_minus_tau=nodes.t))).sum())
    assert truncated < 0.97 * exact


def test_every_sampler_completes_prompts_and_an_unknown_one_is_refused():
    chain_vocab, prompts = 8, torch.tensor([[0, 3], [5, 1], [2, 2], [7, 4]])
    source = MarkovChain(chain_vocab, concentration=0.3, seed=0)
    for sampler in SAMPLERS:
        out = complete_prompts(source.oracle_denoiser(chain_vocab), prompts, BetaCDFSchedule(0.9, 0.3), gen_length=6,
                               steps=3, mask_id=chain_vocab, sampler=sampler, seed=0)
        assert out.shape == (4, 8) and bool((out < chain_vocab).all())
        assert torch.equal(out[:, :2], prompts), sampler  # the prompt survives
    with pytest.raises(ValueError, match="allowed values"):
        complete_prompts(source.oracle_denoiser(chain_vocab), prompts, LinearSchedule(), gen_length=6, steps=3,
                         mask_id=chain_vocab, sampler="paper")


# --- the score of notebook 11's completions -----------------------------------------------------------------------

def test_completion_excess_nll_is_zero_for_the_chains_own_completions_and_exact_for_independent_ones():
    """Completions from the chain itself, prompts stationary: E[-log q(completion | prompt)] = G H, excess 0.
    Completion tokens drawn independently from their marginals given the prompt (what one parallel step of the exact
    oracle does): the excess is [sum_k sum_{u,v} (T^k)_{a u} (T^(k+1))_{a v} (-log T_{u v})] / G - H, a the last
    prompt token, averaged over the prompts; positive."""
    chain, num, prompt, gen = MarkovChain(6, concentration=0.5, seed=0), 4000, 3, 5
    generator = torch.Generator().manual_seed(0)
    sequences = chain.sample(num, prompt + gen, generator)
    mean, stderr = completion_excess_nll(chain, sequences, prompt)
    assert abs(mean) < 4 * stderr and stderr < 0.01
    powers = [torch.linalg.matrix_power(chain.transition, k) for k in range(gen + 1)]
    last = sequences[:, prompt - 1]
    independent = sequences.clone()
    for k in range(gen):
        independent[:, prompt + k] = torch.multinomial(powers[k + 1][last], 1, generator=generator).squeeze(1)
    expected_nll = sum(((powers[k][last] @ -chain.transition.log()) * powers[k + 1][last]).sum(1) for k in range(gen))
    exact = expected_nll.mean().item() / gen - chain.entropy_rate()
    mean, stderr = completion_excess_nll(chain, independent, prompt)
    assert abs(mean - exact) < 4 * stderr and exact > 20 * stderr
