"""BFN building blocks (Graves et al. 2023, arXiv 2308.07037; Xue et al. 2024, arXiv 2404.15766): flow distributions, losses, SDE coefficients, bad input.

All checks compare two independently computed things (a simulation against a closed form, or two formulas);
none compares against a stored number.
"""
import math

import pytest
import torch

from conftest import gmm_denoiser
from minimdm.bfn import continuous, discrete, discretised, sde
from minimdm.bfn import continuous_solvers, discrete_solvers
from minimdm.bfn.continuous import ContinuousSchedule
from minimdm.bfn.discrete import DiscreteSchedule
from minimdm.toys.gmm import two_component_1d


# ------------------------------------------------------------------ flow distributions


def test_continuous_flow_matches_sequential_bayesian_updates():
    """n updates with sender samples y ~ N(x, 1/alpha_i) give mu ~ N(gamma x, gamma(1-gamma)), rho = sigma_1^-2t."""
    schedule, n_steps, n_paths = ContinuousSchedule(0.02), 12, 40000
    x = torch.tensor([-0.9, 0.1, 0.6], dtype=torch.float64).repeat(n_paths, 1)  # (P, 3)
    mu, rho = torch.zeros_like(x), 1.0
    for i in range(1, n_steps + 1):
        alpha = schedule.step_accuracy(i, n_steps)
        mu, rho = continuous.bayesian_update(mu, rho, x + torch.randn_like(x) / math.sqrt(alpha), alpha)
        if i in (3, n_steps):
            t = i / n_steps
            gamma = float(schedule.gamma(t))
            assert rho == pytest.approx(float(schedule.precision(t)), rel=1e-12)
            flow_std = math.sqrt(gamma * (1 - gamma))
            assert torch.allclose(mu.mean(0), gamma * x[0], atol=5 * flow_std / math.sqrt(n_paths))
            assert torch.allclose(mu.var(0), torch.full((3,), flow_std**2, dtype=torch.float64), rtol=0.03)
            flow = continuous.sample_flow(x, torch.full((n_paths,), t, dtype=torch.float64), schedule)
            assert torch.allclose(flow.mean(0), mu.mean(0), atol=8 * flow_std / math.sqrt(n_paths))


def test_discrete_flow_matches_sequential_bayesian_updates():
    """theta after n updates theta <- norm(theta e^y) equals softmax of the summed y, whose law is the flow's."""
    num_classes, n_steps, n_paths = 4, 10, 40000
    schedule = DiscreteSchedule(2.0, num_classes)
    x = torch.tensor([[2, 0]]).repeat(n_paths, 1)  # (P, L=2)
    one_hot = torch.nn.functional.one_hot(x, num_classes).double()
    theta = torch.full((n_paths, 2, num_classes), 1 / num_classes, dtype=torch.float64)
    summed = torch.zeros_like(theta)
    for i in range(1, n_steps + 1):
        y = discrete.sender_sample(one_hot, schedule.step_accuracy(i, n_steps), torch.randn_like(theta))
        theta, summed = discrete.bayesian_update(theta, y), summed + y
    assert torch.allclose(theta, torch.softmax(summed, -1), atol=1e-12)
    # Centred logits: mean beta K (e_x - 1/K), variance beta K (1 - 1/K) per class.
    beta = schedule.beta(1.0)
    centred = torch.log(theta) - torch.log(theta).mean(-1, keepdim=True)
    expected_mean = beta * num_classes * (one_hot[0] - 1 / num_classes)
    expected_var = beta * num_classes * (1 - 1 / num_classes)
    assert torch.allclose(centred.mean(0), expected_mean, atol=5 * math.sqrt(expected_var / n_paths))
    assert torch.allclose(centred.var(0), torch.full_like(expected_mean, expected_var), rtol=0.03)
    flow = discrete.sample_flow(x, torch.ones(n_paths, dtype=torch.float64), schedule)
    assert torch.allclose(flow.mean(0), theta.mean(0), atol=0.01)


# ------------------------------------------------------------------ losses


def test_continuous_discrete_time_loss_approaches_continuous_time_loss():
    """L^n decreases with n towards L^inf (exact GMM denoiser, so no training is involved)."""
    schedule, gmm = ContinuousSchedule(0.1), two_component_1d()
    predict_x = gmm_denoiser(gmm, schedule)
    x = gmm.sample(200000).clamp(-1, 1)
    l_inf = continuous.continuous_time_loss(predict_x, x, schedule).mean().item()
    l_n = {n: continuous.discrete_time_loss(predict_x, x, schedule, n).mean().item() for n in (2, 20, 400)}
    assert l_n[2] > l_n[20] > l_inf * 0.97
    assert l_n[400] == pytest.approx(l_inf, rel=0.05)


def test_bfn_losses_are_denoising_score_matching_with_likelihood_weighting():
    """Continuous: -ln(s1) s1^-2t ||x - x_hat||^2 = (G^2/2) ||s_theta - grad ln p(mu|x)||^2; discrete: the same
    with K beta_1 t ||e_x - e_hat||^2 (Theorem 5.2)."""
    schedule = ContinuousSchedule(1e-3)
    t = torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    x, x_hat = torch.rand(64, 3, dtype=torch.float64) * 2 - 1, torch.rand(64, 3, dtype=torch.float64) * 2 - 1
    mu = continuous.sample_flow(x, t, schedule)
    bfn_integrand = -schedule.log_sigma_1 * schedule.precision(t) * (x - x_hat).pow(2).sum(-1)
    score_gap = sde.continuous_score(mu, x_hat, t, schedule) - sde.continuous_score(mu, x, t, schedule)
    assert torch.allclose(bfn_integrand, sde.continuous_likelihood_weight(t, schedule) * score_gap.pow(2).sum(-1), rtol=1e-9)

    dschedule = DiscreteSchedule(3.0, 5)
    labels = torch.randint(0, 5, (64, 2))
    e_x = torch.nn.functional.one_hot(labels, 5).double()
    e_hat = torch.softmax(torch.randn(64, 2, 5, dtype=torch.float64), -1)
    y = discrete.sample_flow_logits(labels, t, dschedule)
    bfn_integrand = 5 * 3.0 * t * (e_x - e_hat).pow(2).sum((-1, -2))
    score_gap = sde.discrete_score(y, e_hat, t, dschedule) - sde.discrete_score(y, e_x, t, dschedule)
    assert torch.allclose(bfn_integrand, sde.discrete_likelihood_weight(t, dschedule) * score_gap.pow(2).sum((-1, -2)), rtol=1e-9)


def test_discretised_output_and_losses():
    """Bin masses are Normal CDF differences (outer bins take the tails), summed here with math.erf. An output
    Gaussian centred on x (mu_x = x exactly, sigma_x a function of t) has L^r = -ln(mass of x's bin) at sigma_x(1).
    One centred on x / 2 has k_hat depending on t alone, so E L^inf = int_0^1 -ln(sigma_1) sigma_1^(-2t) (x - k_hat(t))^2 dt
    (trapezoid over t); for one centred on 0, k_hat = 0 by symmetry and E L^inf = (sigma_1^-2 - 1)/2 * mean x^2. Sampled
    losses: 4 standard errors. (L^n against quadrature: tests/test_bfn_exact.py.)"""
    bins = discretised.Bins(17)
    schedule = ContinuousSchedule(0.1)  # sigma_1^-2t spans 1..100: the sampled L^inf has a light enough tail
    centres = bins.centres(torch.float64)
    assert torch.allclose(bins.quantise(centres + 0.9 / 17), centres)

    def normal_cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    def bin_mass(k, mean, std):  # mass of bin k (0..16) under N(mean, std^2), the outer bins extended to -+inf
        left = -math.inf if k == 0 else (-1 + k * bins.width - mean) / std
        right = math.inf if k == bins.num_bins - 1 else (-1 + (k + 1) * bins.width - mean) / std
        return normal_cdf(right) - normal_cdf(left)

    mu_x = torch.tensor([[-0.95, 0.3]], dtype=torch.float64)
    probs = discretised.bin_probabilities(mu_x, torch.tensor([[1e-3, 0.5]], dtype=torch.float64), bins)
    by_hand = torch.tensor([bin_mass(k, 0.3, 0.5) for k in range(17)], dtype=torch.float64)
    assert torch.allclose(probs[0, 1], by_hand, atol=1e-14)
    assert probs[0, 0, 0].item() == pytest.approx(1.0, abs=1e-14)  # 0.05 / 1e-3 = 50 std inside bin 0

    x = bins.quantise(torch.rand(4096, 8, dtype=torch.float64) * 2 - 1)

    def oracle(truth, log_sigma):
        def predict_bins(mu, t):
            gamma = continuous.per_sample(schedule.gamma(t.clamp_min(1e-6)), mu)
            eps = (mu - gamma * truth) / torch.sqrt(gamma * (1 - gamma))  # the noise that produced mu
            net_out = torch.stack([eps, torch.full_like(eps, log_sigma)], -1)
            return discretised.bin_probabilities(*discretised.output_gaussian(net_out, mu, t, schedule), bins)
        return predict_bins

    # L^r, sigma_x(1) = sqrt((1 - gamma_1) / gamma_1) e^(log_sigma) with 1 - gamma_1 = sigma_1^2.
    for log_sigma in (-3.0, math.log(0.5)):
        sigma_x = max(1e-3, schedule.sigma_1 / math.sqrt(1 - schedule.sigma_1**2) * math.exp(log_sigma))
        nll = torch.tensor([-math.log(bin_mass(k, c, sigma_x)) for k, c in enumerate(centres.tolist())], dtype=torch.float64)
        exact = nll[bins.index(x)].mean(1)
        loss = discretised.reconstruction_loss(oracle(x, log_sigma), x, schedule, bins)
        assert torch.allclose(loss, exact, rtol=1e-9, atol=1e-12)

    # A centred output would put most of L^inf at tiny t, where sigma_x ~ t^(-1/2) is large: too rare to sample.
    times = torch.linspace(0, 1, 20001, dtype=torch.float64)
    k_hat = oracle(centres / 2, -3.0)(torch.zeros(len(times), 17, dtype=torch.float64), times) @ centres  # output means
    weight = -schedule.log_sigma_1 * schedule.sigma_1 ** (-2 * times)
    per_bin = torch.trapezoid(weight[:, None] * (centres - k_hat) ** 2, times, dim=0)  # (17,) E L^inf for each value of x
    half = discretised.continuous_time_loss(oracle(x / 2, -3.0), x, schedule, bins)
    stderr = half.std().item() / math.sqrt(len(half))
    assert abs(half.mean().item() - per_bin[bins.index(x)].mean().item()) < 4 * stderr
    blind = discretised.continuous_time_loss(oracle(torch.zeros_like(x), 0.0), x, schedule, bins)
    exact_blind = (schedule.sigma_1**-2 - 1) / 2 * x.pow(2).mean().item()
    assert abs(blind.mean().item() - exact_blind) < 4 * blind.std().item() / math.sqrt(len(blind))


def test_discrete_losses_favour_the_true_posterior():
    """With data from a known joint, the exact denoiser has lower L^inf, L^n, L^r than a uniform predictor."""
    from minimdm.toys.enumerable import EnumerableJoint
    from minimdm.toys.enumerable_discrete import posterior_marginals

    joint = EnumerableJoint(vocab_size=3, length=3, concentration=0.3, seed=1)
    schedule = DiscreteSchedule(4.0, 3)
    x = joint.sample(20000)
    exact = lambda theta, t: posterior_marginals(joint, theta)  # noqa: E731
    uniform = lambda theta, t: torch.full_like(theta, 1 / 3)  # noqa: E731
    for loss in (
        lambda p: discrete.continuous_time_loss(p, x, schedule),
        lambda p: discrete.discrete_time_loss(p, x, schedule, n_steps=10),
        lambda p: discrete.reconstruction_loss(p, x, schedule),
    ):
        assert loss(exact).mean() < loss(uniform).mean()
    # The uniform predictor's reconstruction loss is exactly ln K.
    assert discrete.reconstruction_loss(uniform, x, schedule).mean().item() == pytest.approx(math.log(3), rel=1e-6)


# ------------------------------------------------------------------ SDE coefficients


def test_forward_sdes_reproduce_the_flow_marginals():
    """Linear SDE d m/ds = F m and d v/ds = 2 F v + G^2 must hold for mean and variance of the flow (s = 1 - t)."""
    schedule, h = ContinuousSchedule(1e-3), 1e-6
    for s in (0.1, 0.5, 0.9):
        mean = lambda s: schedule.gamma(1 - s)  # noqa: E731  (per unit x)
        var = lambda s: schedule.gamma(1 - s) * schedule.one_minus_gamma(1 - s)  # noqa: E731
        drift, diffusion_sq = sde.continuous_forward_sde(s, schedule)
        assert float((mean(s + h) - mean(s - h)) / (2 * h)) == pytest.approx(float(drift * mean(s)), rel=1e-6)
        assert float((var(s + h) - var(s - h)) / (2 * h)) == pytest.approx(float(2 * drift * var(s) + diffusion_sq), rel=1e-5)
    dschedule = DiscreteSchedule(3.0, 4)
    for s in (0.1, 0.5, 0.9):
        mean = lambda s: dschedule.beta(1 - s)  # noqa: E731  (per unit K e_x - 1)
        var = lambda s: 4 * dschedule.beta(1 - s)  # noqa: E731
        drift, diffusion_sq = sde.discrete_forward_sde(s, dschedule)
        assert (mean(s + h) - mean(s - h)) / (2 * h) == pytest.approx(float(drift * mean(s)), rel=1e-6)
        assert (var(s + h) - var(s - h)) / (2 * h) == pytest.approx(float(2 * drift * var(s) + diffusion_sq), rel=1e-6)


def test_reverse_sdes_and_pf_odes_follow_from_the_forward_sdes_and_the_score():
    """Anderson's reverse SDE, written in BFN time t = 1 - s: dz/dt = -F z + G^2 score with diffusion G, and the
    probability-flow ODE dz/dt = -F z + (G^2 / 2) score. The closed forms in ``sde`` must equal these, built from the
    forward coefficients and the score at the same point."""
    gen = torch.Generator().manual_seed(0)
    schedule = ContinuousSchedule(0.02)
    mu = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    x_hat = torch.rand(5, 3, generator=gen, dtype=torch.float64)
    for t in (0.2, 0.5, 0.9):
        forward_drift, g_sq = sde.continuous_forward_sde(1 - t, schedule)
        score = sde.continuous_score(mu, x_hat, torch.full((5,), t, dtype=torch.float64), schedule)
        drift, diffusion = sde.continuous_reverse_sde(mu, x_hat, t, schedule)
        assert torch.allclose(drift, -forward_drift * mu + g_sq * score, rtol=1e-10)
        assert diffusion**2 == pytest.approx(float(g_sq), rel=1e-10)
        assert torch.allclose(sde.continuous_pf_ode_drift(mu, x_hat, t, schedule),
                              -forward_drift * mu + 0.5 * g_sq * score, rtol=1e-10)
    dschedule = DiscreteSchedule(3.0, 4)
    y = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    e_hat = torch.softmax(torch.randn(5, 4, generator=gen, dtype=torch.float64), -1)
    for t in (0.2, 0.5, 0.9):
        forward_drift, g_sq = sde.discrete_forward_sde(1 - t, dschedule)
        score = sde.discrete_score(y, e_hat, torch.full((5,), t, dtype=torch.float64), dschedule)
        drift, diffusion = sde.discrete_reverse_sde(e_hat, t, dschedule)
        # the reverse drift does not depend on y: its linear part cancels against the score's
        assert torch.allclose(drift.expand_as(y), -forward_drift * y + g_sq * score, rtol=1e-10)
        assert diffusion**2 == pytest.approx(float(g_sq), rel=1e-10)
        assert torch.allclose(sde.discrete_pf_ode_drift(y, e_hat, t, dschedule),
                              -forward_drift * y + 0.5 * g_sq * score, rtol=1e-10)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("sigma_1", [0.0, 1.0, 1.5, -0.1])
def test_sigma_1_out_of_range(sigma_1):
    with pytest.raises(ValueError, match="sigma_1"):
        ContinuousSchedule(sigma_1)


@pytest.mark.parametrize("beta_1", [0.0, -1.0, float("inf")])
def test_beta_1_out_of_range(beta_1):
    with pytest.raises(ValueError, match="beta_1"):
        DiscreteSchedule(beta_1, 3)


def test_bad_input_errors():
    schedule, dschedule = ContinuousSchedule(1e-3), DiscreteSchedule(3.0, 3)
    identity = lambda mu, t: mu  # noqa: E731
    uniform = lambda theta, t: torch.full_like(theta, 1 / 3)  # noqa: E731
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        continuous.continuous_time_loss(identity, torch.tensor([[1.5, 0.0]]), schedule)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        continuous.discrete_time_loss(identity, torch.tensor([[-2.0, 0.0]]), schedule, 10)
    for nfe in (1, 0):
        with pytest.raises(ValueError, match="nfe"):
            continuous_solvers.sample(identity, (4, 2), nfe, "bfn_solver++2", schedule)
        with pytest.raises(ValueError, match="nfe"):
            discrete_solvers.sample(uniform, (4, 2), nfe, "bfn_solver2", dschedule)
    with pytest.raises(ValueError, match="n_steps"):
        continuous.original_sampler(identity, (4, 2), 0, schedule)
    with pytest.raises(ValueError, match="method"):
        continuous_solvers.sample(identity, (4, 2), 10, "dpm_solver", schedule)
    with pytest.raises(ValueError, match="spacing"):
        continuous_solvers.sample(identity, (4, 2), 10, "bfn_solver++1", schedule, spacing="cosine")
    with pytest.raises(ValueError, match="class indices"):
        discrete.sample_flow(torch.tensor([[0, 3]]), torch.ones(1), dschedule)
    with pytest.raises(ValueError, match="num_bins"):
        discretised.Bins(1)


# ------------------------------------------------------------------ the exact Gaussian-mixture probe


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_analytic_gmm_denoiser_matches_monte_carlo(t):
    """E[x | mu] in closed form (mixture posterior mean) against self-normalised importance sampling over prior
    draws x_j: sum_j x_j N(mu; gamma x_j, gamma(1-gamma)) / sum_j N(...), at a few mu on the 1-D and 2-D mixtures."""
    from minimdm.bfn.probes import exact_gmm_denoiser, random_mixture

    torch.manual_seed(0)
    schedule = ContinuousSchedule(0.05)
    gamma = float(schedule.gamma(t))
    for gmm in (two_component_1d(), random_mixture(dim=2, n_components=3, std=0.1, seed=1)):
        predict_x = exact_gmm_denoiser(gmm, schedule)
        x_prior = gmm.sample(400_000)  # (J, D)
        mu = continuous.sample_flow(gmm.sample(5), torch.full((5,), t, dtype=torch.float64), schedule)  # (5, D)
        log_w = -0.5 * ((mu[:, None, :] - gamma * x_prior[None]) ** 2).sum(-1) / (gamma * (1 - gamma))  # (5, J)
        weights = torch.softmax(log_w, -1)
        monte_carlo = weights @ x_prior
        ess = 1 / weights.pow(2).sum(-1)  # effective sample size per mu
        assert ess.min() > 500, ess
        exact = predict_x(mu, torch.full((5,), t, dtype=torch.float64))
        assert (exact - monte_carlo).abs().max() < 0.01, (exact, monte_carlo)


def test_mixture_moments_and_frechet_to_gaussian():
    """The exact mixture moments match a large sample's, and the Frechet distance to known moments equals the
    sample-vs-sample Frechet distance when the moments are the other sample's."""
    import numpy as np

    from minimdm.bfn.metrics import frechet_distance, frechet_distance_to_gaussian
    from minimdm.bfn.probes import frechet_to_mixture, mixture_moments, random_mixture

    torch.manual_seed(1)
    gmm = random_mixture(dim=6, n_components=4, seed=2)
    mean, cov = mixture_moments(gmm)
    draws = gmm.sample(200_000)
    assert torch.allclose(draws.mean(0), mean, atol=0.01)
    assert torch.allclose(torch.cov(draws.T), cov, atol=0.01)
    a, b = gmm.sample(3000).numpy(), gmm.sample(3000).numpy()
    assert frechet_distance_to_gaussian(a, b.mean(0), np.cov(b, rowvar=False)) == pytest.approx(frechet_distance(a, b), rel=1e-6)
    assert frechet_to_mixture(gmm.sample(20_000), gmm) < 0.01
    assert frechet_to_mixture(gmm.sample(20_000) * 0.8, gmm) > 10 * frechet_to_mixture(gmm.sample(20_000), gmm)
