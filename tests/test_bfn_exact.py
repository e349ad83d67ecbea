"""Exact answers for BFN pieces: the KL to a mixture, continuous L^r, the solvers' initial state, discrete L^n, the
enumeration denoiser and the offline metrics.

Each test compares against something computed another way: a closed form, a 1-D quadrature, or a plain loop. Where
the code samples, the tolerance is four Monte-Carlo standard errors.
"""
import math

import numpy as np
import pytest
import torch

from minimdm.bfn import continuous, continuous_solvers, discrete, discretised
from minimdm.bfn.continuous import ContinuousSchedule
from minimdm.bfn.discrete import DiscreteSchedule
from minimdm.bfn.kl import gaussian_to_mixture_kl
from minimdm.bfn.metrics import energy_distance, histogram_tv_2d, independent_categorical_nll, matching_nfe
from minimdm.toys.enumerable import EnumerableJoint
from minimdm.toys.enumerable_discrete import factorised_law, posterior_marginals


def kl_by_quadrature(sender_mean: float, variance: float, means, weights) -> float:
    """KL(N(m_s, v) || sum_k w_k N(m_k, v)) in one dimension: trapezoid rule on +-12 sender standard deviations."""
    y = sender_mean + math.sqrt(variance) * np.linspace(-12.0, 12.0, 4001)
    log_sender = -((y - sender_mean) ** 2) / (2 * variance)
    log_receiver = np.logaddexp.reduce(
        [math.log(w) - (y - m) ** 2 / (2 * variance) for m, w in zip(means, weights) if w > 0], axis=0)
    density = np.exp(log_sender) / math.sqrt(2 * math.pi * variance)
    return float(torch.trapezoid(torch.from_numpy(density * (log_sender - log_receiver)), torch.from_numpy(y)))


def assert_within_mc_error(values: torch.Tensor, exact: float, n_stderr: float = 4.0):
    """The mean of i.i.d. ``values`` lies within n_stderr standard errors of ``exact`` (plus 1e-6 for the error of
    the quadratures that give ``exact``, which matters only where the values barely vary)."""
    stderr = values.std().item() / math.sqrt(values.numel())
    assert abs(values.mean().item() - exact) < n_stderr * stderr + 1e-6, (values.mean().item(), exact, stderr)


# ------------------------------------------------------------------ KL(Gaussian || mixture)


def test_kl_to_a_one_component_mixture_is_the_kl_between_two_gaussians():
    """K = 1: the Monte-Carlo KL must average to the closed form KL(N(m_s, v I) || N(m_1, v I)) (torch.distributions),
    for three (sender, receiver, variance) settings in one batch with a per-setting variance."""
    n = 20000
    sender = torch.tensor([[0.3, -0.2, 0.0], [1.0, 1.0, 1.0], [-0.5, 0.0, 2.0]], dtype=torch.float64)  # (C, E)
    receiver = torch.tensor([[1.0, 0.5, -0.4], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    variance = torch.tensor([0.7, 0.05, 3.0], dtype=torch.float64)
    estimates = gaussian_to_mixture_kl(
        sender[:, None].expand(-1, n, -1), receiver[:, None, None], torch.ones(3, 1, 1, dtype=torch.float64),
        variance[:, None], n_samples=1)  # (C, n): one draw per problem, so n independent estimates per setting
    std = variance.sqrt()[:, None]
    exact = torch.distributions.kl_divergence(torch.distributions.Normal(sender, std),
                                              torch.distributions.Normal(receiver, std)).sum(-1)
    for c in range(3):
        assert_within_mc_error(estimates[c], exact[c].item())


def test_kl_to_a_three_component_mixture_matches_1d_quadrature():
    """K = 3 in one dimension: the estimate averages to the KL integral computed by the trapezoid rule, for senders
    near one component, between components and far from all, with overlapping and separated components (one of
    zero weight, which must drop out)."""
    n = 20000
    means, weights = [-1.0, 0.2, 1.5, 3.0], [0.5, 0.3, 0.2, 0.0]
    settings = [(0.0, 0.25), (1.2, 0.04), (-2.0, 1.0), (0.2, 0.01)]  # (sender mean, variance)
    sender = torch.tensor([s for s, _ in settings], dtype=torch.float64)
    variance = torch.tensor([v for _, v in settings], dtype=torch.float64)
    estimates = gaussian_to_mixture_kl(
        sender[:, None, None].expand(-1, n, 1), torch.tensor(means, dtype=torch.float64).view(1, 1, 4, 1),
        torch.tensor(weights, dtype=torch.float64).view(1, 1, 4), variance[:, None], n_samples=1)  # (C, n)
    for c, (s, v) in enumerate(settings):
        assert_within_mc_error(estimates[c], kl_by_quadrature(s, v, means, weights))


# ------------------------------------------------------------------ continuous reconstruction loss


def test_continuous_reconstruction_loss_of_perfect_and_offset_predictions_is_the_gaussian_nll():
    """L^r = -ln N(x | x_hat, sigma_1^2) per dim: 1/2 ln(2 pi sigma_1^2) when x_hat = x, and the Normal log-density
    of torch.distributions when x_hat = x + delta (no sampling enters: the prediction ignores mu)."""
    schedule = ContinuousSchedule(0.02)
    x = torch.rand(6, 4, dtype=torch.float64) * 2 - 1
    delta = torch.tensor([0.0, 0.01, -0.03, 0.05], dtype=torch.float64)
    perfect = continuous.reconstruction_loss(lambda mu, t: x, x, schedule)
    assert torch.allclose(perfect, torch.full((6,), 0.5 * math.log(2 * math.pi * 0.02**2), dtype=torch.float64), rtol=1e-12)
    offset = continuous.reconstruction_loss(lambda mu, t: x + delta, x, schedule)
    expected = -torch.distributions.Normal(x + delta, 0.02).log_prob(x).mean(1)
    assert torch.allclose(offset, expected, rtol=1e-12)


def test_continuous_reconstruction_loss_reads_the_flow_at_t_equal_one():
    """With x_hat = mu / gamma(t), x_hat - x = sqrt((1 - gamma)/gamma) eps at t = 1 (gamma = 1 - sigma_1^2), so
    E L^r = 1/2 ln(2 pi sigma_1^2) + 1 / (2 (1 - sigma_1^2))."""
    sigma_1 = 0.1
    schedule = ContinuousSchedule(sigma_1)
    x = torch.rand(20000, 3, dtype=torch.float64) * 2 - 1
    loss = continuous.reconstruction_loss(lambda mu, t: mu / continuous.per_sample(schedule.gamma(t), mu), x, schedule)
    assert_within_mc_error(loss, 0.5 * math.log(2 * math.pi * sigma_1**2) + 1 / (2 * (1 - sigma_1**2)))


# ------------------------------------------------------------------ the solvers' initial state


def test_initial_state_moments_are_gamma_m_and_gamma_1_minus_gamma_plus_gamma_squared_v():
    """mu at t = eta has mean gamma m and variance gamma (1 - gamma) + gamma^2 v per dimension, gamma = 1 - sigma_1^(2 eta);
    without data moments, mean 0 and variance gamma (1 - gamma). Checked to 4 standard errors (variance: v sqrt(2/n))."""
    sigma_1, eta, n = 0.05, 0.4, 40000
    schedule = ContinuousSchedule(sigma_1)
    gamma = 1 - sigma_1 ** (2 * eta)
    m = torch.tensor([0.3, -0.5, 0.0], dtype=torch.float64)
    v = torch.tensor([0.04, 0.2, 0.0], dtype=torch.float64)
    for data_mean, data_variance, mean, var in (
        (m, v, gamma * m, gamma * (1 - gamma) + gamma**2 * v),
        (None, None, torch.zeros(3, dtype=torch.float64), torch.full((3,), gamma * (1 - gamma), dtype=torch.float64)),
    ):
        mu = continuous_solvers.initial_state((n, 3), eta, schedule, data_mean=data_mean, data_variance=data_variance,
                                              dtype=torch.float64)
        assert ((mu.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all(), (mu.mean(0), mean)
        assert ((mu.var(0) - var).abs() < 4 * var * math.sqrt(2 / (n - 1))).all(), (mu.var(0), var)


# ------------------------------------------------------------------ discrete-time losses


def _two_class_predictor(theta, t):
    """e_hat = (0.2 + 0.6 t, 0.8 - 0.6 t) at every position, whatever theta: the loss then has a quadrature answer."""
    p = (0.2 + 0.6 * t).to(theta.dtype).view(-1, 1, 1)
    return torch.cat([p, 1 - p], -1).expand_as(theta)


def test_discrete_time_loss_with_two_classes_matches_quadrature():
    """K = 2: sender and receiver components all sit on the line through K e_0 - 1 and K e_1 - 1, so in units of
    the sender std the step-i KL is KL(N(+-sqrt(alpha_i), 1) || p_0 N(sqrt(alpha_i), 1) + p_1 N(-sqrt(alpha_i), 1))
    with p = e_hat(t_{i-1}), and E L^n = sum_i KL_i (quadrature). Checked at n = 1, 4 and 25."""
    beta_1, n = 3.0, 20000
    schedule = DiscreteSchedule(beta_1, 2)
    x = torch.randint(0, 2, (n, 2))
    for n_steps in (1, 4, 25):
        kl = torch.zeros(2, dtype=torch.float64)  # summed over steps, for x = 0 and x = 1
        for i in range(1, n_steps + 1):
            root_alpha, p_0 = math.sqrt(beta_1 * (2 * i - 1) / n_steps**2), 0.2 + 0.6 * (i - 1) / n_steps
            for cls, sign in ((0, 1.0), (1, -1.0)):
                kl[cls] += kl_by_quadrature(sign * root_alpha, 1.0, [root_alpha, -root_alpha], [p_0, 1 - p_0])
        loss = discrete.discrete_time_loss(_two_class_predictor, x, schedule, n_steps)
        assert_within_mc_error(loss.double(), kl[x].mean().item())


def test_discrete_continuous_time_loss_with_two_classes_is_its_time_integral():
    """L^inf = int_0^1 K beta_1 t ||e_x - e_hat(t)||^2 dt with ||e_x - e_hat||^2 = 2 (1 - p_x(t))^2: for the
    predictor above, 4 beta_1 int t (0.8 - 0.6 t)^2 dt (x = 0) and 4 beta_1 int t (0.2 + 0.6 t)^2 dt (x = 1),
    polynomials integrated exactly by numpy."""
    beta_1, n = 3.0, 40000
    x = torch.randint(0, 2, (n, 2))
    t_poly = np.polynomial.Polynomial([0.0, 1.0])
    exact = torch.tensor([4 * beta_1 * (t_poly * (0.8 - 0.6 * t_poly) ** 2).integ()(1.0),
                          4 * beta_1 * (t_poly * (0.2 + 0.6 * t_poly) ** 2).integ()(1.0)], dtype=torch.float64)
    loss = discrete.continuous_time_loss(_two_class_predictor, x, DiscreteSchedule(beta_1, 2))
    assert_within_mc_error(loss.double(), exact[x].mean().item())


def test_discrete_time_loss_approaches_continuous_time_loss_with_the_exact_posterior():
    """With the exact enumeration denoiser L^n - L^inf = O(1/n): at n = 2 L^n lies > 4 combined standard errors above
    L^inf (the gap is ~0.17, ~25 errors), at n = 50 within 4 of it (the gap is ~0.01; 4 errors are ~9% of L^inf)."""
    joint = EnumerableJoint(vocab_size=3, length=3, concentration=0.3, seed=1)
    schedule = DiscreteSchedule(4.0, 3)
    exact = lambda theta, t: posterior_marginals(joint, theta.double())  # noqa: E731
    x = joint.sample(20000)
    l_inf = discrete.continuous_time_loss(exact, joint.sample(80000), schedule)

    def gap(loss):
        return (loss.mean() - l_inf.mean()).item(), math.hypot(loss.std().item() / math.sqrt(loss.numel()),
                                                             l_inf.std().item() / math.sqrt(l_inf.numel()))

    gap_2, stderr_2 = gap(discrete.discrete_time_loss(exact, x, schedule, 2))
    gap_50, stderr_50 = gap(discrete.discrete_time_loss(exact, x, schedule, 50))
    assert gap_2 > 4 * stderr_2, (gap_2, stderr_2)
    assert abs(gap_50) < 4 * stderr_50, (gap_50, stderr_50)


# ------------------------------------------------------------------ discretised data: L^n


def test_discretised_time_loss_of_a_centred_output_matches_quadrature():
    """An output Gaussian centred on the data (mu_x = x, sigma_x a function of t) gives bin weights p(t) that do not
    depend on mu, so E L^n = sum_i mean_d KL(N(x, 1/alpha_i) || sum_k p_k(t_{i-1}) N(k_c, 1/alpha_i)), each KL by 1-D
    quadrature, with alpha_i = beta(i/n) - beta((i-1)/n). (The data's own bin keeps weight ~1, so the code's 1e-30
    floor on mixture weights never matters.)"""
    bins, schedule, n_steps = discretised.Bins(9), ContinuousSchedule(0.01), 6
    centres = bins.centres(torch.float64)

    def predict_bins(mu, t):  # the data are the bin centres, one per column: truth = centres
        gamma = continuous.per_sample(schedule.gamma(t.clamp_min(1e-6)), mu)
        eps = (mu - gamma * centres) / torch.sqrt(gamma * (1 - gamma))
        net_out = torch.stack([eps, torch.full_like(eps, -3.0)], -1)
        return discretised.bin_probabilities(*discretised.output_gaussian(net_out, mu, t, schedule), bins)

    exact = 0.0
    for i in range(1, n_steps + 1):
        alpha = schedule.sigma_1 ** (-2 * i / n_steps) - schedule.sigma_1 ** (-2 * (i - 1) / n_steps)
        t_prev = torch.tensor([(i - 1) / n_steps], dtype=torch.float64)
        probs = predict_bins(torch.zeros(1, 9, dtype=torch.float64), t_prev)[0]  # (9 data values, 9 bins)
        exact += np.mean([kl_by_quadrature(c, 1 / alpha, centres.tolist(), probs[d].tolist())
                          for d, c in enumerate(centres.tolist())])
    x = centres.repeat(4000, 1)  # (B, 9): every bin centre in every row
    assert_within_mc_error(discretised.discrete_time_loss(predict_bins, x, schedule, bins, n_steps), exact)


# ------------------------------------------------------------------ the enumeration denoiser of discrete BFN


def test_posterior_marginals_and_factorised_law_match_a_loop_over_the_table():
    """p(x | theta) ∝ p(x) prod_d theta_d[x_d] and mean_b prod_d probs[b, d, x_d], summed sequence by sequence in
    plain Python over a random V = 3, L = 3 table (one theta entry exactly 0, which must rule its sequences out)."""
    joint = EnumerableJoint(vocab_size=3, length=3, concentration=0.5, seed=3)
    gen = torch.Generator().manual_seed(1)
    theta = torch.softmax(torch.randn(4, 3, 3, generator=gen, dtype=torch.float64) * 2, -1)
    theta[0, 1, 2] = 0.0
    theta[0, 1] /= theta[0, 1].sum()
    marginals = torch.zeros(4, 3, 3, dtype=torch.float64)
    law = torch.zeros(len(joint.sequences), dtype=torch.float64)
    for b in range(4):
        total = 0.0
        for n, seq in enumerate(joint.sequences.tolist()):
            evidence = math.prod(theta[b, d, v].item() for d, v in enumerate(seq))
            law[n] += evidence / 4
            weight = joint.probs[n].item() * evidence
            total += weight
            for d, v in enumerate(seq):
                marginals[b, d, v] += weight
        marginals[b] /= total
    assert torch.allclose(posterior_marginals(joint, theta), marginals, atol=1e-12)
    assert marginals[0, 1, 2] == 0.0 and posterior_marginals(joint, theta)[0, 1, 2] < 1e-12
    assert torch.allclose(factorised_law(joint, theta), law, atol=1e-12)
    assert factorised_law(joint, theta).sum().item() == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ metrics


def test_energy_distance_of_hand_built_samples_and_its_1d_cdf_identity():
    """Hand cases: single points (0,0) vs (3,4) give 2 * 5 = 10; {0, 2} vs {1} on a line give 2*1 - 1 - 0 = 1.
    For 1-D samples the (V-statistic) energy distance equals 2 int (F_a - F_b)^2 dx of the empirical CDFs,
    integrated exactly between the sorted jump points; ``max_points`` keeps only the first points."""
    assert energy_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])) == pytest.approx(10.0, abs=1e-12)
    on_a_line = energy_distance(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert on_a_line == pytest.approx(1.0, abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(60, 1, generator=gen, dtype=torch.float64)
    b = torch.randn(60, 1, generator=gen, dtype=torch.float64) + 0.5
    jumps = torch.cat([a, b]).flatten().sort().values
    cdf_a = (a.flatten()[None] <= jumps[:-1, None]).double().mean(1)
    cdf_b = (b.flatten()[None] <= jumps[:-1, None]).double().mean(1)
    exact = 2 * ((cdf_a - cdf_b) ** 2 * jumps.diff()).sum().item()
    assert energy_distance(a, b) == pytest.approx(exact, rel=1e-10)
    assert energy_distance(torch.cat([a, b]), torch.cat([b, a]), max_points=60) == pytest.approx(exact, rel=1e-10)


def test_histogram_tv_2d_of_hand_built_samples_and_against_numpy_histogram2d():
    """One point each in two different cells: TV = 1; the same cell, but half of one sample outside the square: 1/2 of
    the mass is lost, TV = 1/4 (|1/2 - 1| / 2). Random points, some outside: numpy.histogram2d counts / n."""
    assert histogram_tv_2d(torch.tensor([[0.01, 0.01]]), torch.tensor([[0.5, 0.5]]), bins=4) == pytest.approx(1.0)
    a = torch.tensor([[0.3, -0.3], [1.5, 0.0]])
    b = torch.tensor([[0.3, -0.3], [0.35, -0.35]])
    assert histogram_tv_2d(a, b, bins=4) == pytest.approx(0.25)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3000, 2, generator=gen, dtype=torch.float64) * 0.6
    b = torch.randn(2000, 2, generator=gen, dtype=torch.float64) * 0.5 + 0.1
    edges = [np.linspace(-1.2, 1.2, 13)] * 2
    h_a = np.histogram2d(a[:, 0].numpy(), a[:, 1].numpy(), bins=edges)[0] / len(a)
    h_b = np.histogram2d(b[:, 0].numpy(), b[:, 1].numpy(), bins=edges)[0] / len(b)
    assert histogram_tv_2d(a, b, bins=12, limit=1.2) == pytest.approx(0.5 * np.abs(h_a - h_b).sum(), abs=1e-12)


def test_independent_categorical_nll_matches_a_loop_over_pixels():
    """Per pixel d, p_d(k) = (count of k in the training column + 1) / (n_train + K); the NLL is
    -mean over test pixels of log2 p_d(value), counted here with plain loops (n_train != n_test != D != K)."""
    train = torch.tensor([[0, 1, 2], [0, 1, 1], [0, 0, 2], [1, 1, 2], [0, 2, 2]])
    test = torch.tensor([[0, 1, 1], [2, 2, 0], [1, 0, 2], [0, 1, 2]])
    num_classes, bits = 4, []
    for row in test.tolist():
        for d, value in enumerate(row):
            count = sum(1 for train_row in train.tolist() if train_row[d] == value)
            bits.append(-math.log2((count + 1) / (len(train) + num_classes)))
    assert independent_categorical_nll(train, test, num_classes) == pytest.approx(sum(bits) / len(bits), rel=1e-12)
    # Hand value for one pixel: train (0, 0, 1), K = 2 -> p = (3/5, 2/5); test (0, 1) -> -(log2 0.6 + log2 0.4) / 2.
    hand = -(math.log2(0.6) + math.log2(0.4)) / 2
    assert independent_categorical_nll(torch.tensor([[0], [0], [1]]), torch.tensor([[0], [1]]), 2) == pytest.approx(hand)


def test_matching_nfe_interpolates_in_log_nfe():
    """Scores (1.0, 0.5, 0.1) at NFE (10, 20, 40): target 0.3 is halfway from 0.5 to 0.1, so NFE = sqrt(20 * 40);
    a target met at the first point gives that NFE, one met exactly at a point gives it, one never met gives inf."""
    nfes, scores = [10, 20, 40], [1.0, 0.5, 0.1]
    assert matching_nfe(nfes, scores, 0.3) == pytest.approx(math.sqrt(20 * 40), rel=1e-12)
    assert matching_nfe(nfes, scores, 0.75) == pytest.approx(math.sqrt(10 * 20), rel=1e-12)
    assert matching_nfe(nfes, scores, 2.0) == 10.0
    assert matching_nfe(nfes, scores, 0.5) == pytest.approx(20.0, rel=1e-12)
    assert matching_nfe(nfes, scores, 0.05) == float("inf")
