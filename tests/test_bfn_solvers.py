"""BFN samplers as SDE/ODE solvers (Xue et al. 2024, arXiv 2404.15766), checked on exact denoisers (no training).

* the original BFN sampler step *is* an SDE-BFN-Solver++1 step (continuous) / SDE-BFN-Solver1 step with e_hat in
  place of the drawn class (discrete);
* observed orders of convergence against an RK4 integration of the PF-ODE (an independent reference);
* at 10 NFE a second-order solver beats the original sampler on the enumerable discrete toy and the 2-D mixture.
"""
import math

import pytest
import torch

from conftest import gmm_denoiser
from minimdm.bfn import continuous, continuous_solvers, discrete, discrete_solvers, sde
from minimdm.bfn.continuous import ContinuousSchedule
from minimdm.bfn.discrete import DiscreteSchedule
from minimdm.bfn.grids import time_grid, uniform_time_grid
from minimdm.bfn.metrics import histogram_tv_2d, total_variation
from minimdm.bfn.probes import mixture_moments
from minimdm.toys.enumerable import EnumerableJoint
from minimdm.toys.enumerable_discrete import factorised_law, posterior_marginals
from minimdm.toys.gmm import eight_gaussians, two_component_1d

NS = (20, 40, 80, 160)


def observed_order(ns, errors) -> float:
    """Least-squares slope of -log(error) against log(N)."""
    log_n, log_e = torch.log(torch.tensor(ns, dtype=torch.float64)), torch.log(torch.tensor(errors, dtype=torch.float64))
    centred = log_n - log_n.mean()
    return float(-(centred * (log_e - log_e.mean())).sum() / centred.pow(2).sum())


# ------------------------------------------------------------------ the original sampler is a first-order solver


@pytest.mark.parametrize("i", [2, 5, 10])
def test_original_step_equals_sde_solver_pp1_step(i):
    """Prop 4.2: mu' of one BFN update from t = (i-1)/n to i/n equals SDE-BFN-Solver++1's, with the same z."""
    schedule, n_steps = ContinuousSchedule(1e-3), 10
    t, t_next = (i - 1) / n_steps, i / n_steps
    mu = continuous.sample_flow(torch.rand(32, 2, dtype=torch.float64) * 2 - 1, torch.full((32,), t, dtype=torch.float64), schedule)
    x_hat, noise = torch.rand(32, 2, dtype=torch.float64) * 2 - 1, torch.randn(32, 2, dtype=torch.float64)
    bfn_mu, bfn_rho = continuous.original_sampler_step(mu, float(schedule.precision(t)), x_hat, schedule.step_accuracy(i, n_steps), noise)
    solver_mu = continuous_solvers.sde_pp1_step(mu, t, t_next, x_hat, noise, schedule)
    assert (bfn_mu - solver_mu).abs().max() <= 1e-10
    assert bfn_rho == pytest.approx(float(schedule.precision(t_next)), rel=1e-12)


@pytest.mark.parametrize("i", [1, 4, 10])
def test_discrete_original_step_with_predicted_probs_equals_sde_solver1_step(i):
    """Prop 5.3: the BFN step theta <- norm(theta e^y) with e_hat in place of the drawn one-hot equals
    SDE-BFN-Solver1 on the logits (same noise)."""
    schedule, n_steps = DiscreteSchedule(3.0, 5), 10
    t, t_next = (i - 1) / n_steps, i / n_steps
    y = discrete.sample_flow_logits(torch.randint(0, 5, (16, 3)), torch.full((16,), t, dtype=torch.float64), schedule)
    e_hat = torch.softmax(torch.randn(16, 3, 5, dtype=torch.float64), -1)
    noise = torch.randn(16, 3, 5, dtype=torch.float64)
    theta_next = discrete.original_sampler_step(torch.softmax(y, -1), e_hat, schedule.step_accuracy(i, n_steps), noise)
    y_next = discrete_solvers.sde_solver1_step(y, t, t_next, e_hat, noise, schedule)
    assert (theta_next - torch.softmax(y_next, -1)).abs().max() <= 1e-10


# ------------------------------------------------------------------ orders of convergence (ODE solvers)


def test_continuous_solver_orders_on_exact_gmm_denoiser():
    """BFN-Solver++1 is first order, ++2 (multistep) second order, against RK4 on the PF-ODE, t in [0.05, 0.95]."""
    schedule, gmm = ContinuousSchedule(math.sqrt(1e-3)), two_component_1d()
    predict_x = gmm_denoiser(gmm, schedule)
    mu_start = continuous.sample_flow(gmm.sample(200).clamp(-1, 1), torch.full((200,), 0.05, dtype=torch.float64), schedule)
    reference = sde.continuous_pf_ode_reference(predict_x, mu_start, 0.05, 0.95, schedule, n_steps=400)
    orders = {}
    for method, spacing in (("bfn_solver++1", "uniform_t"), ("bfn_solver++2", "uniform_lambda")):
        errors = []
        for n in NS:
            grid = time_grid(n, 0.05, 0.95, spacing, schedule)
            out = continuous_solvers.solve(predict_x, mu_start, grid, method, schedule, last_drop=False)
            errors.append((out.state - reference).abs().mean().item())
        orders[method] = observed_order(NS, errors)
    assert orders["bfn_solver++1"] >= 0.9, orders
    assert orders["bfn_solver++2"] >= 1.8, orders


def test_discrete_solver_orders_on_exact_enumeration_denoiser():
    """BFN-Solver1 first order, BFN-Solver2 second order on an L=3, K=4 joint, t in [0.1, 0.9]."""
    joint = EnumerableJoint(vocab_size=4, length=3, concentration=0.3, seed=0)
    schedule = DiscreteSchedule(3.0, 4)
    predict_probs = lambda theta, t: posterior_marginals(joint, theta)  # noqa: E731
    y_start = discrete.sample_flow_logits(joint.sample(200), torch.full((200,), 0.1, dtype=torch.float64), schedule)
    reference = sde.discrete_pf_ode_reference(predict_probs, y_start, 0.1, 0.9, schedule, n_steps=400)
    orders = {}
    for method in ("bfn_solver1", "bfn_solver2"):
        errors = []
        for n in NS:
            out = discrete_solvers.solve(predict_probs, y_start, uniform_time_grid(n, 0.1, 0.9), method, schedule, last_drop=False)
            errors.append((out.state - reference).abs().mean().item())
        orders[method] = observed_order(NS, errors)
    assert orders["bfn_solver1"] >= 0.9, orders
    assert orders["bfn_solver2"] >= 1.8, orders


# ------------------------------------------------------------------ the SDE solver's marginal


def test_sde_solver_pp2_transports_the_exact_flow_marginal_to_t_equal_one():
    """Started from exact flow draws at eta = 0.01 (x ~ mixture, mu ~ p_F(. | x; eta)), an exact SDE solver ends at the
    flow marginal at t = 1: mean gamma_1 m and variance gamma_1^2 v + gamma_1 (1 - gamma_1), with (m, v) the mixture's
    exact moments. 40 uniform steps of SDE-BFN-Solver++2 hit both within 4 standard errors; SDE-BFN-Solver++1 (same
    noise) misses the variance by more, so the step count leaves the check able to fail."""
    gmm, schedule, n, eta = two_component_1d(), ContinuousSchedule(0.02), 20000, 0.01
    mean, cov = (float(m) for m in mixture_moments(gmm))
    gamma_1 = float(schedule.gamma(1.0))
    exact_mean, exact_var = gamma_1 * mean, gamma_1**2 * cov + gamma_1 * (1 - gamma_1)
    grid = time_grid(40, eta, 1.0, "uniform_t", schedule)
    mu_start = continuous.sample_flow(gmm.sample(n), torch.full((n,), eta, dtype=torch.float64), schedule)
    z_scores, rng_state = {}, torch.get_rng_state()
    for method in ("sde_bfn_solver++2", "sde_bfn_solver++1"):
        torch.set_rng_state(rng_state)  # the same solver noise for both methods
        mu = continuous_solvers.solve(gmm_denoiser(gmm, schedule), mu_start, grid, method, schedule, last_drop=False).x[:, 0]
        stderr_mean, stderr_var = mu.std().item() / math.sqrt(n), (mu - mu.mean()).pow(2).std().item() / math.sqrt(n)
        z_scores[method] = ((mu.mean().item() - exact_mean) / stderr_mean, (mu.var().item() - exact_var) / stderr_var)
    assert all(abs(z) < 4 for z in z_scores["sde_bfn_solver++2"]), z_scores
    assert abs(z_scores["sde_bfn_solver++1"][1]) > 4, z_scores


# ------------------------------------------------------------------ quality at equal NFE


def test_second_order_beats_original_sampler_at_10_nfe_discrete_toy():
    """L=4, K=3 Dirichlet(0.2) joint, beta_1 = 4: the exact law of each sampler's factorised final draw (averaged
    over 20k paths) is closer to the data in TV for BFN-Solver2 / SDE-BFN-Solver2 than for the BFN sampler."""
    joint = EnumerableJoint(vocab_size=3, length=4, concentration=0.2, seed=0)
    schedule, nfe, n_paths = DiscreteSchedule(4.0, 3), 10, 20000
    predict_probs = lambda theta, t: posterior_marginals(joint, theta)  # noqa: E731
    original = discrete.original_sampler(predict_probs, (n_paths, 4), nfe - 1, schedule, dtype=torch.float64)
    tv = {"bfn": total_variation(factorised_law(joint, original.final_probs), joint.probs)}
    for method in ("bfn_solver2", "sde_bfn_solver2"):
        out = discrete_solvers.sample(predict_probs, (n_paths, 4), nfe, method, schedule, dtype=torch.float64)
        tv[method] = total_variation(factorised_law(joint, out.final_probs), joint.probs)
    assert tv["bfn_solver2"] < tv["bfn"], tv
    assert tv["sde_bfn_solver2"] < tv["bfn"], tv


def test_second_order_beats_original_sampler_at_10_nfe_2d_mixture():
    """Eight Gaussians (std 0.02), sigma_1 = 1e-3: 40x40 histogram TV at 10 NFE, BFN-Solver++2 < BFN sampler."""
    gmm, schedule, n = eight_gaussians(std=0.02), ContinuousSchedule(1e-3), 20000
    predict_x = gmm_denoiser(gmm, schedule)
    truth = gmm.sample(n)
    original = continuous.original_sampler(predict_x, (n, 2), 9, schedule, dtype=torch.float64)
    solver = continuous_solvers.sample(predict_x, (n, 2), 10, "bfn_solver++2", schedule, dtype=torch.float64)
    assert histogram_tv_2d(solver.x, truth) < histogram_tv_2d(original.x, truth)


# ------------------------------------------------------------------ single-step second-order solvers, final output


def test_single_step_solver2_orders_on_exact_denoisers():
    """The single-step (midpoint) BFN-Solver++2 / BFN-Solver2 of the released code are second order against the RK4
    reference (N steps of two calls each), like the multistep versions."""
    schedule, gmm = ContinuousSchedule(math.sqrt(1e-3)), two_component_1d()
    predict_x = gmm_denoiser(gmm, schedule)
    mu_start = continuous.sample_flow(gmm.sample(200).clamp(-1, 1), torch.full((200,), 0.05, dtype=torch.float64), schedule)
    reference = sde.continuous_pf_ode_reference(predict_x, mu_start, 0.05, 0.95, schedule, n_steps=400)
    errors = []
    for n in NS:
        out = continuous_solvers.solve(predict_x, mu_start, time_grid(n, 0.05, 0.95, "uniform_lambda", schedule),
                                       "bfn_solver++2_single", schedule, last_drop=False)
        errors.append((out.state - reference).abs().mean().item())
    assert observed_order(NS, errors) >= 1.8, errors

    joint = EnumerableJoint(vocab_size=4, length=3, concentration=0.3, seed=0)
    dschedule = DiscreteSchedule(3.0, 4)
    predict_probs = lambda theta, t: posterior_marginals(joint, theta)  # noqa: E731
    y_start = discrete.sample_flow_logits(joint.sample(200), torch.full((200,), 0.1, dtype=torch.float64), dschedule)
    reference_d = sde.discrete_pf_ode_reference(predict_probs, y_start, 0.1, 0.9, dschedule, n_steps=400)
    errors_d = []
    for n in NS:
        out = discrete_solvers.solve(predict_probs, y_start, uniform_time_grid(n, 0.1, 0.9), "bfn_solver2_single", dschedule, last_drop=False)
        errors_d.append((out.state - reference_d).abs().mean().item())
    assert observed_order(NS, errors_d) >= 1.8, errors_d


def test_single_step_solvers_call_the_network_at_each_step_start_and_its_midpoint():
    """On a grid that is uniform in neither t nor lambda, the calls come in pairs: the step's start time, then the
    midpoint (in lambda for the continuous ++2, in t for the discrete solver); a one-call-per-step method, or a midpoint
    in the wrong variable, gives other times. ``sample`` spends a budget of NFE calls on NFE / 2 steps."""
    calls = []
    schedule, dschedule = ContinuousSchedule(1e-3), DiscreteSchedule(3.0, 3)

    def predict_x(mu, t):
        calls.append(float(t[0]))
        return torch.zeros_like(mu)

    def predict_probs(theta, t):
        calls.append(float(t[0]))
        return torch.full_like(theta, 1 / 3)

    grid = [0.05, 0.3, 0.6, 0.95]
    continuous_solvers.solve(predict_x, torch.zeros(4, 2, dtype=torch.float64), grid, "bfn_solver++2_single", schedule,
                             last_drop=False)
    lam = lambda t: float(schedule.half_log_snr(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    assert calls[0::2] == grid[:-1]
    for t, mid, t_next in zip(grid, calls[1::2], grid[1:]):
        assert t < mid < t_next and math.isclose(lam(mid), (lam(t) + lam(t_next)) / 2, rel_tol=1e-9)
    calls.clear()
    discrete_solvers.solve(predict_probs, torch.zeros(4, 2, 3, dtype=torch.float64), grid, "bfn_solver2_single", dschedule,
                           last_drop=False)
    assert calls == pytest.approx([0.05, 0.175, 0.3, 0.45, 0.6, 0.775])
    calls.clear()
    continuous_solvers.sample(predict_x, (4, 2), 10, "bfn_solver++2_single", schedule)
    assert len(calls) == 10
    calls.clear()
    discrete_solvers.sample(predict_probs, (4, 2), 10, "bfn_solver2_single", dschedule)
    assert len(calls) == 10


def test_mode_as_final_output():
    """final="mode" returns the most probable class / bin of the last prediction (the released code's output);
    "sample" draws from it. Same RNG seed -> same trajectory, only the final read-out differs."""
    joint = EnumerableJoint(vocab_size=3, length=4, concentration=0.2, seed=0)
    schedule = DiscreteSchedule(4.0, 3)
    predict_probs = lambda theta, t: posterior_marginals(joint, theta)  # noqa: E731
    for run in (lambda final: discrete.original_sampler(predict_probs, (64, 4), 9, schedule, dtype=torch.float64, final=final),
                lambda final: discrete_solvers.sample(predict_probs, (64, 4), 10, "bfn_solver2", schedule, dtype=torch.float64, final=final)):
        torch.manual_seed(0)
        mode = run("mode")
        torch.manual_seed(0)
        drawn = run("sample")
        assert torch.equal(mode.x, mode.final_probs.argmax(-1))
        assert torch.allclose(mode.final_probs, drawn.final_probs)
    from minimdm.bfn import discretised

    bins = discretised.Bins(5)
    probs = torch.softmax(torch.randn(1, 3, 5, dtype=torch.float64) * 3, -1)
    predict_bins = lambda mu, t: probs.expand(mu.shape[0], -1, -1)  # noqa: E731
    out = discretised.original_sampler(predict_bins, (8, 3), 4, ContinuousSchedule(0.05), bins, final="mode", dtype=torch.float64)
    assert torch.equal(out.x, bins.centres(torch.float64)[probs.argmax(-1)].expand(8, 3))
    with pytest.raises(ValueError, match="final"):
        discrete_solvers.sample(predict_probs, (4, 4), 10, "bfn_solver2", schedule, final="argmax")
