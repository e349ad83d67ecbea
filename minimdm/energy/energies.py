"""The kinetic, conditional kinetic and geodesic energies of a mask schedule (paper time), and the numerical
minimiser of the one-token energy (Chen et al. 2025, arXiv 2509.13866). The definitions are the course's
reconstruction from the paper's statements (docs/energy_definitions.md), not a copy of its printed equations; they
reproduce every constant the paper quotes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy
import torch

from minimdm.energy.schedules import BetaWeight
from minimdm.energy.toy import MaskedStates
from minimdm.mdm.schedules import Schedule
from minimdm.toys import EnumerableJoint


@dataclass
class TimeNodes:
    """Quadrature nodes for ∫_0^1 f(tau) dtau: tau (T,), its complement t = 1 - tau (T,) computed without
    cancellation (it is also the course time of each node), and the weights (T,). float64."""

    tau: torch.Tensor
    t: torch.Tensor
    weights: torch.Tensor


def time_quadrature(num_nodes: int = 801, half_width: float = 3.0) -> TimeNodes:
    """tanh-sinh rule: tau = sigmoid(pi sinh x) on an even grid in x crowds nodes at both ends, where the energy
    densities blow up like tau^(a-1). Truncated at |x| <= 3 (tau in [2e-14, 1 - 2e-14]): relative error about
    1e-4 for a, b >= 0.3 (the mass lost at the ends grows like (2e-14)^min(a, b)); keep a, b >= 0.3 for energies.
    """
    x = torch.linspace(-half_width, half_width, num_nodes, dtype=torch.float64)
    tau, t = torch.sigmoid(math.pi * torch.sinh(x)), torch.sigmoid(-math.pi * torch.sinh(x))
    return TimeNodes(tau, t, (x[1] - x[0]) * math.pi * torch.cosh(x) * tau * t)  # weights = dx * dtau/dx


# --- divergence: the integrand's power law at each end of (0, 1) ----------------------------------------------

ENDPOINT_PROBES = (1e-7, 1e-11)  # distances to an end at which the local power law is read (both above gamma_rate's 1e-15 floor)
DIVERGENCE_TOLERANCE = 1e-3  # an exponent within this of -1 counts as divergent (log divergence reads exactly -1)


def endpoint_nodes(distances=ENDPOINT_PROBES) -> tuple[TimeNodes, TimeNodes]:
    """Points at the given distances from tau = 0 and from tau = 1 (no weights: they only probe the integrand)."""
    d = torch.tensor(distances, dtype=torch.float64)
    return TimeNodes(d, 1 - d, torch.zeros_like(d)), TimeNodes(1 - d, d, torch.zeros_like(d))


def endpoint_exponents(density, distances=ENDPOINT_PROBES) -> tuple[float, float]:
    """The local power s of an integrand f ~ C d^s at each end of (0, 1), d the distance to that end.

    ``density`` maps TimeNodes to f at them. s is the slope of log f against log d between the two probe distances.
    ∫ f converges at that end iff s > -1 (a power below -1 or exactly -1, the log case, diverges). An integrand
    that vanishes at an end reads +inf. Returns (s at tau -> 0, s at tau -> 1).
    """
    exponents = []
    for nodes in endpoint_nodes(distances):
        f = density(nodes).double()
        d = nodes.tau if float(nodes.tau[0]) < 0.5 else nodes.t
        if not bool(torch.isfinite(f).all()):  # infinite at a probe: not integrable there
            exponents.append(-math.inf)
            continue
        if bool((f <= 0).any()):  # the integrand vanishes near the end: nothing to diverge
            exponents.append(math.inf)
            continue
        exponents.append(float((f[1].log() - f[0].log()) / (d[1].log() - d[0].log())))
    return exponents[0], exponents[1]


def diverges(exponents: tuple[float, float], tolerance: float = DIVERGENCE_TOLERANCE) -> bool:
    """True if an integrand with these endpoint powers has an infinite integral over (0, 1)."""
    return any(s <= -1 + tolerance for s in exponents)


def integrate(density, nodes: TimeNodes) -> float:
    """∫_0^1 f(tau) dtau on the tanh-sinh nodes, or inf when the endpoint analysis finds a non-integrable end.

    The nodes stop at 2e-14 from each end; the part beyond them is added from the fitted power law,
    ∫_0^e C d^s dd = e f(e) / (s + 1), so integrands with an end power just above -1 (slowly convergent) are not cut short.
    """
    exponents = endpoint_exponents(density)
    if diverges(exponents):
        return math.inf
    f = density(nodes)
    total = float((nodes.weights * f).sum())
    for end, s in ((0, exponents[0]), (-1, exponents[1])):
        distance = float(nodes.tau[0]) if end == 0 else float(nodes.t[-1])
        if math.isfinite(s) and s > -1:
            total += distance * float(f[end]) / (s + 1)
    return total


def alpha_in_paper_time(schedule: Schedule, nodes: TimeNodes):
    """(alpha, 1 - alpha, d alpha / d tau) of a course-time schedule at the nodes: the same alpha on the reversed clock."""
    return schedule.alpha(nodes.t), schedule.mask_prob(nodes.t), -schedule.alpha_prime(nodes.t)


def one_token_energy_density(alpha, mask_prob, alpha_rate, gamma_rate):
    """alpha'^2 / (gamma' alpha (1 - alpha)): the n = 1 energy density, where all three energies coincide (Ex. 3.3).
    mask_prob = 1 - alpha is passed separately so that it keeps its digits near alpha = 1."""
    return alpha_rate**2 / (gamma_rate * alpha * mask_prob)


def one_token_energy(schedule: Schedule, weight: BetaWeight, num_nodes: int = 401) -> float:
    """E(alpha, gamma) = ∫_0^1 alpha'^2 / (gamma' alpha (1 - alpha)) dtau; equals pi^2 iff alpha = sin^2(pi/2 gamma).

    inf when the integrand is not integrable at an end (``endpoint_exponents``): e.g. the linear schedule under
    gamma = tau, whose density 1/(tau (1 - tau)) diverges logarithmically at both ends."""
    return integrate(lambda nodes: one_token_energy_density(
        *alpha_in_paper_time(schedule, nodes), weight.gamma_rate(nodes.tau, one_minus_tau=nodes.t)),
        time_quadrature(num_nodes))


def kinetic_energy_density(states: MaskedStates, alpha, mask_prob, alpha_rate) -> torch.Tensor:
    """sum_z sum_{x != z} p_tau(z) Q_tau(z, x)^2 / p_tau(x) for the marginal path and the MDM's rates. (T,) -> (T,)

    p_tau(z) = sum_x1 q(x1) p_{tau|1}(z | x1);  Q_tau(z, x) = alpha'/(1 - alpha) * q(x^i = v | z^UM)
    (Chen et al., arXiv 2509.13866).
    """
    marginal = states.law_given_clean(alpha, mask_prob) @ states.joint.probs  # p_tau(z), (T, S)
    rate = (alpha_rate / mask_prob)[:, None] * states.conditional[
        states.move_source, states.move_position, states.move_value]  # Q_tau, (T, moves)
    p_source, p_target = marginal[:, states.move_source], marginal[:, states.move_target]
    used = (rate > 0) & (p_source > 0)  # only moves the path makes (from unreachable states the target has p = 0)
    terms = torch.where(used, p_source * rate**2 / torch.where(used, p_target, 1.0), 0.0)
    return terms.sum(1)


def conditional_kinetic_energy_density(states: MaskedStates, alpha, mask_prob, alpha_rate) -> torch.Tensor:
    """E_{x1~q} sum_z sum_{x != z} p_{tau|1}(z|x1) Q_{tau|1}(z, x|x1)^2 / p_{tau|1}(x|x1). (T,) -> (T,)

    Q_{tau|1}(z, x | x1) = alpha'/(1 - alpha) if the move writes x1's own token, else 0.
    """
    law = states.law_given_clean(alpha, mask_prob)  # (T, S, N)
    clean_token = states.joint.sequences[:, states.move_position].T  # x1^i for every move, (moves, N)
    writes_clean = (states.move_value[:, None] == clean_token) & states.consistent[states.move_source]  # (moves, N)
    rate = (alpha_rate / mask_prob)[:, None, None] * writes_clean  # (T, moves, N)
    p_source, p_target = law[:, states.move_source], law[:, states.move_target]  # (T, moves, N)
    terms = torch.where(writes_clean, p_source * rate**2 / torch.where(writes_clean, p_target, 1.0), 0.0)
    return terms.sum(1) @ states.joint.probs


def geodesic_energy_density(states: MaskedStates, alpha, mask_prob, alpha_rate) -> torch.Tensor:
    """E_{x1~q} sum_i 4 |d/dtau y^i|^2 with y^i = sqrt(p_{tau|1}(. | x1^i)) on the unit sphere (Fisher-Rao). (T,) -> (T,)

    Per token the law over {0..d-1, M} is alpha e_{x1^i} + (1 - alpha) e_M, and 4 |y'|^2 = sum_v p'_v^2 / p_v.
    """
    d = states.mask_id
    one_hot = torch.nn.functional.one_hot(states.joint.sequences, d + 1).double()  # e_{x1^i}, (N, n, d+1)
    mask_one_hot = torch.nn.functional.one_hot(torch.tensor(d), d + 1).double()  # e_M
    token_law = alpha[:, None, None, None] * one_hot + mask_prob[:, None, None, None] * mask_one_hot
    token_rate = alpha_rate[:, None, None, None] * (one_hot - mask_one_hot)  # (T, N, n, d+1)
    fisher = torch.where(token_law > 0, token_rate**2 / token_law.clamp_min(1e-300), 0.0).sum((-1, -2))  # (T, N)
    return fisher @ states.joint.probs


def energies(schedule: Schedule, weight: BetaWeight, joint: EnumerableJoint, num_nodes: int = 401) -> dict:
    """The kinetic, conditional kinetic and geodesic energies of `schedule` for the data law `joint`, each
    E = ∫_0^1 density_tau / gamma'_tau dtau (inf where the integrand is not integrable at an end), plus the one-token energy and the constants Thm 3.1/3.2 predict:

        E_k = C_k * E_1,  E_c = n 2^(n-1) * E_1,  E_g = n * E_1,  C_1 = E_k/E_c = C_k/(n 2^(n-1)),  C_2 = E_c/E_g = 2^(n-1)

    with C_k = sum of m(z) over the partially masked states z the path visits (our counting, part of the reconstruction).
    """
    states = MaskedStates(joint)
    nodes = time_quadrature(num_nodes)
    n = joint.length

    def weighted(density_fn):  # tau -> density_tau / gamma'_tau, the integrand of each energy
        return lambda at: density_fn(*alpha_in_paper_time(schedule, at)) / weight.gamma_rate(at.tau, one_minus_tau=at.t)

    one_token = weighted(lambda *path: one_token_energy_density(*path, 1.0))
    result = {
        "kinetic": integrate(weighted(lambda *path: kinetic_energy_density(states, *path)), nodes),
        "conditional_kinetic": integrate(weighted(lambda *path: conditional_kinetic_energy_density(states, *path)), nodes),
        "geodesic": integrate(weighted(lambda *path: geodesic_energy_density(states, *path)), nodes),
        "one_token": integrate(one_token, nodes),
        "endpoint_exponents": endpoint_exponents(one_token),  # (tau -> 0, tau -> 1); <= -1 means divergent
    }
    reachable = states.visible_mass > 0
    result["C_k"] = int(states.num_masked[reachable].sum())
    result["C_c"] = n * 2 ** (n - 1)
    result["C_1"] = result["C_k"] / result["C_c"]
    result["C_2"] = 2 ** (n - 1)
    return result


def minimise_one_token_energy(weight: BetaWeight, num_knots: int = 64, iterations: int = 200):
    """Minimise E(alpha, gamma) numerically over schedules, knowing nothing of the closed form.

    alpha = sin^2(theta) keeps alpha in [0, 1]; theta is a free increasing piecewise-linear curve (a linear spline in
    angle) from theta_0 = 0 to theta_1 = pi/2 (alpha_0 = 0, alpha_1 = 1), with knots crowded at both ends where Beta
    weights are steep (the same knots for every weight: nothing about the answer is built in). Its increments are a
    softmax of free logits (positive, summing to pi/2; logs tame the huge range of segment widths), started from equal
    increments (theta linear in logit(tau)). 8-point Gauss-Legendre on each segment. Returns (knots tau (K+2,), alpha at the knots (K+2,), energy).
    """
    # knots evenly spaced in logit(tau) over [-18, 18]: each segment near an end is a fixed fraction of its distance
    # to that end, so the t^(a-1) cusps of Beta weights are resolved at every scale down to tau = 1.5e-8
    logit = torch.linspace(-18.0, 18.0, num_knots, dtype=torch.float64)
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    knot_tau = torch.cat([zero, torch.sigmoid(logit), one])  # (K+2,)
    knot_t = torch.cat([one, torch.sigmoid(-logit), zero])  # 1 - tau at the knots, without cancellation
    gl_x, gl_w = (torch.as_tensor(v, dtype=torch.float64) for v in numpy.polynomial.legendre.leggauss(8))
    width = knot_tau[1:] - knot_tau[:-1]  # (K+1,)
    where = (1 + gl_x) / 2  # GL points mapped to [0, 1] inside each segment, (8,)
    tau = knot_tau[:-1, None] + width[:, None] * where  # (K+1, 8)
    t = knot_t[:-1, None] - width[:, None] * where  # 1 - tau without cancellation
    quad_weights = width[:, None] * gl_w / 2
    gamma_rate = weight.gamma_rate(tau, one_minus_tau=t)
    logits = torch.zeros(num_knots + 1, dtype=torch.float64, requires_grad=True)  # equal increments per segment

    def curve(logits):
        theta_knots = torch.cat([zero, 0.5 * math.pi * torch.softmax(logits, 0).cumsum(0)])
        theta_rate = (theta_knots[1:] - theta_knots[:-1]) / width  # constant on each segment, (K+1,)
        theta = theta_knots[:-1, None] + theta_rate[:, None] * (tau - knot_tau[:-1, None])  # (K+1, 8)
        # alpha, 1 - alpha, alpha' = sin(2 theta) theta'
        return torch.sin(theta) ** 2, torch.cos(theta) ** 2, torch.sin(2 * theta) * theta_rate[:, None], theta_knots

    def energy(logits):
        alpha, mask_prob, alpha_rate, _ = curve(logits)
        # alpha = 0 on a segment whose increment underflowed: clamp, so 0/0 reads 0 (its alpha' is 0 too)
        alpha, mask_prob = alpha.clamp_min(1e-300), mask_prob.clamp_min(1e-300)
        return (quad_weights * one_token_energy_density(alpha, mask_prob, alpha_rate, gamma_rate)).sum()

    optimizer = torch.optim.LBFGS([logits], max_iter=iterations, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-15, history_size=50)

    def closure():
        optimizer.zero_grad()
        value = energy(logits)
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        return knot_tau, torch.sin(curve(logits)[3]) ** 2, float(energy(logits))
