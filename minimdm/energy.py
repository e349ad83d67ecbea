"""Masked diffusion as energy minimisation (Chen et al. 2025, arXiv 2509.13866; spec bfn_energy.md §C, §D.3).

The paper in four lines:

* a mask schedule alpha carries the all-mask law to the data law; a *weighted kinetic energy* prices the trip;
* the kinetic, conditional kinetic and geodesic energies differ only by constants (Thm 3.1, 3.2), so the
  intractable one is minimised through the one-token energy  E(alpha, gamma) = ∫ alpha'^2 / (gamma' alpha (1-alpha)) dtau;
* for a weight function gamma the minimiser is alpha* = sin^2(pi/2 * gamma), with value pi^2 (Thm 3.6);
* with gamma = I_tau(a, b), the Beta(a, b) CDF, every (a, b) is a sampling schedule for an already-trained MDM,
  and a 2-D grid search over (a, b) picks one for a given step budget (App. E.1).

Provenance: the text the spec was written from had lost the display formulas, so the energy definitions below are
the spec's *reconstruction* (they reproduce every constant the paper quotes), not the paper's printed equations.

TIME. The paper runs tau from all-masked (tau = 0) to data (tau = 1); the course (LLaDA) runs t from data (t = 0)
to all-masked (t = 1). alpha means the same in both (the probability that a token is unmasked), only the clock is
reversed. The energies are written in paper time; the schedule objects handed to the sampler are in course time;
``paper_time`` is the one place that converts.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy
import torch
from scipy.special import betainc

from minimdm.mdm.denoiser import logits_of
from minimdm.mdm.sampler import SampleResult, generate, gumbel_argmax, transfer_counts
from minimdm.mdm.schedules import Schedule
from minimdm.toys import EnumerableJoint

# ---------------------------------------------------------------------------------------------------------------
# Time convention, Beta-CDF weight, the optimal schedule
# ---------------------------------------------------------------------------------------------------------------


def paper_time(t):
    """tau = 1 - t. Course time t (0 = data, 1 = all masked) as paper time tau (0 = all masked, 1 = data).

    The map is its own inverse, so it also turns paper time back into course time; d tau / dt = -1.
    """
    return 1.0 - t


def check_beta_parameters(a, b) -> None:
    for name, value in (("a", a), ("b", b)):
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name}={value!r}: the Beta-CDF parameters a, b must be finite numbers > 0 "
                             f"(the paper searches a, b in {{0.1, ..., 1.0}})")


def _scipy_on_tensor(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a numpy/scipy function elementwise in float64 and hand back a tensor on x's device (torch has no betainc)."""
    x = torch.as_tensor(x)
    out = torch.as_tensor(fn(x.detach().cpu().double().numpy()), dtype=torch.float64)
    return out.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64)


@dataclass(frozen=True)
class BetaWeight:
    """The energy's weight function gamma_tau = I_tau(a, b), the Beta(a, b) CDF (Sec. 3.3), in paper time.

    a > b makes gamma convex-ish late (slow start: few tokens decoded in the first steps); a < b front-loads it.
    """

    a: float
    b: float

    def __post_init__(self):
        check_beta_parameters(self.a, self.b)

    def gamma(self, tau: torch.Tensor) -> torch.Tensor:
        """gamma_tau = I_tau(a, b) (regularised incomplete beta function)."""
        return _scipy_on_tensor(lambda x: betainc(self.a, self.b, x), tau)

    def gamma_complement(self, one_minus_tau: torch.Tensor) -> torch.Tensor:
        """1 - gamma_tau = I_{1-tau}(b, a), computed from 1 - tau itself: no cancellation where gamma is near 1."""
        return _scipy_on_tensor(lambda x: betainc(self.b, self.a, x), one_minus_tau)

    def gamma_rate(self, tau: torch.Tensor, one_minus_tau: torch.Tensor | None = None) -> torch.Tensor:
        """gamma'_tau = tau^(a-1) (1-tau)^(b-1) / B(a, b), the Beta density.

        Pass one_minus_tau when it is known more accurately than 1 - tau (near tau = 1). Both are kept >= 1e-15:
        the density is infinite at an end where a < 1 (or b < 1).
        """
        tau = torch.as_tensor(tau)
        one_minus_tau = 1 - tau if one_minus_tau is None else torch.as_tensor(one_minus_tau)
        log_beta_fn = math.lgamma(self.a) + math.lgamma(self.b) - math.lgamma(self.a + self.b)  # log B(a, b)
        return torch.exp((self.a - 1) * torch.log(tau.clamp_min(1e-15)) + (self.b - 1) * torch.log(
            one_minus_tau.clamp_min(1e-15)) - log_beta_fn)


def optimal_alpha(gamma: torch.Tensor) -> torch.Tensor:
    """alpha*_tau = sin^2(pi/2 * gamma_tau): the energy-optimal schedule for the weight gamma (Thm 3.6)."""
    return torch.sin(0.5 * math.pi * gamma) ** 2


def weight_of_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """gamma = (2/pi) arcsin(sqrt(alpha)): the inverse map. Every schedule is optimal for exactly one weight."""
    return (2 / math.pi) * torch.arcsin(alpha.clamp(0, 1).sqrt())


class BetaCDFSchedule(Schedule):
    """alpha = sin^2(pi/2 * I_tau(a, b)) (Prop. 3.7), in the course's time t = 1 - tau, so it plugs into the sampler.

    (a, b) = (1/2, 1/2) is the linear schedule alpha_t = 1 - t (LLaDA's); (1, 1) is alpha_t = cos^2(pi t / 2).
    The course's ``CosineSchedule`` (alpha_t = cos(pi t / 2), the paper's "sine" schedule) is *not* in the family.
    """

    def __init__(self, a: float, b: float):
        self.weight = BetaWeight(a, b)
        self.a, self.b = float(a), float(b)
        self.name = f"beta({self.a:g},{self.b:g})"

    def alpha(self, t):
        return optimal_alpha(self.weight.gamma(paper_time(torch.as_tensor(t))))

    def mask_prob(self, t):
        # 1 - sin^2(pi/2 gamma) = sin^2(pi/2 (1 - gamma)), with 1 - gamma_tau = I_t(b, a): exact near t = 0,
        # where 1 - alpha would cancel to 0 and the energies would divide by it.
        return optimal_alpha(self.weight.gamma_complement(torch.as_tensor(t)))

    def alpha_prime(self, t):
        # d alpha/dt = -(d/dtau) sin^2(pi/2 gamma_tau) = -(pi/2) sin(pi gamma_tau) gamma'_tau   (chain rule, dtau/dt = -1)
        #            = -pi sqrt(alpha (1 - alpha)) gamma'_tau                                  (sin 2x = 2 sin x cos x)
        t = torch.as_tensor(t)
        gamma_rate = self.weight.gamma_rate(paper_time(t), one_minus_tau=t)
        return -math.pi * torch.sqrt(self.alpha(t) * self.mask_prob(t)) * gamma_rate

    def __repr__(self):
        return f"BetaCDFSchedule(a={self.a:g}, b={self.b:g})"


# ---------------------------------------------------------------------------------------------------------------
# The energies (paper time)
# ---------------------------------------------------------------------------------------------------------------


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


def alpha_in_paper_time(schedule: Schedule, nodes: TimeNodes):
    """(alpha, 1 - alpha, d alpha / d tau) of a course-time schedule at the nodes: the same alpha on the reversed clock."""
    return schedule.alpha(nodes.t), schedule.mask_prob(nodes.t), -schedule.alpha_prime(nodes.t)


def one_token_energy_density(alpha, mask_prob, alpha_rate, gamma_rate):
    """alpha'^2 / (gamma' alpha (1 - alpha)): the n = 1 energy density, where all three energies coincide (Ex. 3.3).
    mask_prob = 1 - alpha is passed separately so that it keeps its digits near alpha = 1."""
    return alpha_rate**2 / (gamma_rate * alpha * mask_prob)


def one_token_energy(schedule: Schedule, weight: BetaWeight, num_nodes: int = 801) -> float:
    """E(alpha, gamma) = ∫_0^1 alpha'^2 / (gamma' alpha (1 - alpha)) dtau; equals pi^2 iff alpha = sin^2(pi/2 gamma)."""
    nodes = time_quadrature(num_nodes)
    gamma_rate = weight.gamma_rate(nodes.tau, one_minus_tau=nodes.t)
    density = one_token_energy_density(*alpha_in_paper_time(schedule, nodes), gamma_rate)
    return float((nodes.weights * density).sum())


def exact_denoiser(joint: EnumerableJoint):
    """The joint's oracle denoiser, made total. Tokens revealed in the same step ignore each other, so a sampler can
    reach an *impossible* state (e.g. 'a?b??' under target A), where no conditional exists and the oracle returns
    NaN. We fill those with uniform logits. An impossible state only ever completes to sequences of probability 0,
    so the TV to the target does not depend on this choice; it just keeps the sampler's law summing to 1."""
    oracle = joint.oracle_denoiser(joint.vocab_size)

    def denoiser(x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(oracle(x), nan=0.0)  # (B, L, d)

    return denoiser


class MaskedStates:
    """Every partially masked sequence z in {0..d-1, M}^n of a toy joint (M = d), and the one-token moves between them.

    A move (z -> x) unmasks one masked position i of z with a value v. ``conditional[s, i, v]`` = q(x^i = v | z^UM),
    the data's conditional given z's visible tokens (from the joint's exact oracle).
    """

    def __init__(self, joint: EnumerableJoint):
        d, n = joint.vocab_size, joint.length
        self.joint, self.mask_id, self.length = joint, d, n
        self.states = torch.tensor(list(itertools.product(range(d + 1), repeat=n)))  # (S, n)
        self.is_masked = self.states == d  # (S, n)
        self.num_masked = self.is_masked.sum(1)  # m(z), (S,)
        place = (d + 1) ** torch.arange(n - 1, -1, -1)  # state index = sum_i z_i (d+1)^(n-1-i)
        self.conditional = exact_denoiser(joint)(self.states).softmax(-1)  # (S, n, d)
        # consistent[s, k]: clean sequence k agrees with state s wherever s is visible (the kernel's support)
        sequences = joint.sequences  # (N, n)
        self.consistent = ((self.states[:, None] == sequences[None]) | self.is_masked[:, None]).all(-1)  # (S, N)
        self.visible_mass = self.consistent.double() @ joint.probs  # P(z^UM) = sum of q over consistent x, (S,)
        source, position = self.is_masked.nonzero(as_tuple=True)
        value = torch.arange(d).repeat(len(source))
        self.move_source = source.repeat_interleave(d)  # (moves,)
        self.move_position = position.repeat_interleave(d)
        self.move_value = value
        self.move_target = self.move_source + (value - d) * place[self.move_position]
        self.is_clean = self.num_masked == 0  # the final states, in the order of joint.sequences
        self.fill_moves = _fill_moves(self)  # for the sampler's exact law

    def law_given_clean(self, alpha: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """p_{tau|1}(z | x_1) = prod_i [alpha 1(z^i = x_1^i) + (1 - alpha) 1(z^i = M)]: (T,) -> (T, S, N)."""
        visible = self.length - self.num_masked
        per_state = alpha[:, None] ** visible * mask_prob[:, None] ** self.num_masked  # (T, S)
        return per_state[:, :, None] * self.consistent  # (T, S, N)


def kinetic_energy_density(states: MaskedStates, alpha, mask_prob, alpha_rate) -> torch.Tensor:
    """sum_z sum_{x != z} p_tau(z) Q_tau(z, x)^2 / p_tau(x) for the marginal path and the MDM's rates. (T,) -> (T,)

    p_tau(z) = sum_x1 q(x1) p_{tau|1}(z | x1);  Q_tau(z, x) = alpha'/(1 - alpha) * q(x^i = v | z^UM) (Sec. C.1).
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
    E = ∫_0^1 density_tau / gamma'_tau dtau, plus the one-token energy and the constants Thm 3.1/3.2 predict:

        E_k = C_k * E_1,  E_c = n 2^(n-1) * E_1,  E_g = n * E_1,  C_1 = E_k/E_c = C_k/(n 2^(n-1)),  C_2 = E_c/E_g = 2^(n-1)

    with C_k = sum of m(z) over the partially masked states z the path visits (the spec's counting, [reconstruction]).
    """
    states = MaskedStates(joint)
    nodes = time_quadrature(num_nodes)
    path = alpha_in_paper_time(schedule, nodes)  # alpha, 1 - alpha, alpha'
    per_time = nodes.weights / weight.gamma_rate(nodes.tau, one_minus_tau=nodes.t)  # dtau / gamma'
    n = joint.length
    result = {
        "kinetic": float((per_time * kinetic_energy_density(states, *path)).sum()),
        "conditional_kinetic": float((per_time * conditional_kinetic_energy_density(states, *path)).sum()),
        "geodesic": float((per_time * geodesic_energy_density(states, *path)).sum()),
        "one_token": float((per_time * one_token_energy_density(*path, 1.0)).sum()),
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


# ---------------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------------


def time_grid(steps: int) -> torch.Tensor:
    """Course times 1 = t_0 > t_1 > ... > t_N = 0 on an even grid (the paper's tau_k = k/N), float64, (N+1,)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    return 1 - torch.arange(steps + 1, dtype=torch.float64) / steps


def unmask_probabilities(schedule: Schedule, steps: int) -> torch.Tensor:
    """r_j = (alpha_s - alpha_t) / (1 - alpha_t) for the step t = t_j -> s = t_{j+1}: the chance that a still-masked
    token is revealed (the paper's (alpha_{k+1} - alpha_k)/(1 - alpha_k)). alpha_0 = 1 makes the last r equal 1. (N,)"""
    alpha = schedule.alpha(time_grid(steps)).double()  # (N+1,) from alpha = 0 (all masked) up to 1
    return ((alpha[1:] - alpha[:-1]) / (1 - alpha[:-1])).clamp(0, 1)


@torch.no_grad()
def bernoulli_generate(denoiser, prompt: torch.Tensor | None = None, *, gen_length: int, steps: int, mask_id: int,
                       schedule: Schedule, temperature: float = 1.0, batch_size: int = 1, generator=None,
                       record_history: bool = True) -> SampleResult:
    """The paper's sampler (Sec. C.1): at each step every still-masked token is revealed independently with
    probability r_j = (alpha_s - alpha_t)/(1 - alpha_t), its value drawn from p_theta(x^i | x_t). The number revealed
    per step is random (its mean follows the schedule); ``minimdm.mdm.sampler.generate`` fixes it instead (LLaDA).

    Same interface as ``generate``: prompt (B, P) or None (then batch_size rows); returns a SampleResult whose nfe
    counts denoiser calls (a step that reveals nothing skips the call: the prediction would not be used).
    """
    if gen_length < 1:
        raise ValueError(f"gen_length={gen_length} must be a positive integer")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0")
    device = prompt.device if prompt is not None else torch.device("cpu")
    if prompt is None:
        prompt = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    canvas = torch.full((prompt.shape[0], gen_length), mask_id, dtype=torch.long, device=device)
    x = torch.cat([prompt.long(), canvas], dim=1)  # (B, P + G)
    result = SampleResult(tokens=x, prompt_length=prompt.shape[1], mask_id=mask_id)
    if record_history:
        result.frames.append(x.cpu().clone())
    for reveal_prob in unmask_probabilities(schedule, steps).tolist():
        is_masked = x == mask_id
        reveal = is_masked & (torch.rand(x.shape, device=device, generator=generator) < reveal_prob)  # (B, L)
        if bool(reveal.any()):
            proposal = gumbel_argmax(logits_of(denoiser, x), temperature, generator)  # x_hat ~ p_theta(. | x_t)
            result.nfe += 1
            x = torch.where(reveal, proposal, x)
        if record_history:
            result.frames.append(x.cpu().clone())
    result.tokens = x
    return result


# ---------------------------------------------------------------------------------------------------------------
# The paper's 5-token toy, exactly (dynamic programming over partially masked states)
# ---------------------------------------------------------------------------------------------------------------


def paper_toy_target(name: str) -> EnumerableJoint:
    """Fig. 4 / App. E.6: n = 5 tokens over {a, b} = {0, 1}. 'A': uniform on {aaaaa, bbbbb};
    'B': uniform on the sequences with two or three a's."""
    if name not in ("A", "B"):
        raise ValueError(f"name={name!r}: allowed values are 'A' and 'B'")
    joint = EnumerableJoint(vocab_size=2, length=5)
    # EnumerableJoint draws its law from a Dirichlet and has no constructor from given probabilities,
    # so the toy overwrites .probs (float64, rows of joint.sequences).
    num_a = (joint.sequences == 0).sum(1)
    support = (num_a == 5) | (num_a == 0) if name == "A" else (num_a == 2) | (num_a == 3)
    joint.probs = support.double() / support.sum()
    return joint


def exact_output_law(joint: EnumerableJoint, schedule: Schedule, steps: int, sampler: str = "bernoulli",
                     states: MaskedStates | None = None) -> torch.Tensor:
    """The exact law (N,) of the samples, over joint.sequences, of an MDM sampler run with the *exact* conditionals.

    The sampler is a Markov chain on the (d+1)^n partially masked states; from z it fills a set F of masked positions,
    each with v ~ q(v | z^UM) independently (tokens revealed in one step ignore each other). Per step:
      'bernoulli':    P(F) = r^|F| (1 - r)^(m - |F|)           (paper; r from ``unmask_probabilities``)
      'fixed_counts': P(F) = 1(|F| = k_j) / binom(m, k_j)       (LLaDA with random remasking; k_j from ``transfer_counts``)
    """
    if sampler not in ("bernoulli", "fixed_counts"):
        raise ValueError(f"sampler={sampler!r}: allowed values are 'bernoulli' and 'fixed_counts'")
    states = states or MaskedStates(joint)
    moves = states.fill_moves
    law = torch.zeros(len(states.states), dtype=torch.float64)
    law[-1] = 1.0  # the all-mask state is the last in the enumeration
    if sampler == "bernoulli":
        per_step = unmask_probabilities(schedule, steps).tolist()
    else:
        per_step = transfer_counts(torch.tensor([joint.length]), steps, schedule=schedule)[0].tolist()
    for step_value in per_step:
        filled, left = moves["num_filled"], moves["num_left"]
        if sampler == "bernoulli":
            choose = step_value**filled * (1 - step_value) ** left
        else:
            ways = torch.tensor([math.comb(m, step_value) or 1 for m in range(joint.length + 1)], dtype=torch.float64)
            choose = (filled == step_value).double() / ways[(filled + left).long()]  # 1(|F| = k) / binom(m, k)
        weight = law[moves["source"]] * choose * moves["value_prob"]
        law = torch.zeros_like(law).index_add_(0, moves["target"], weight)
    return law[states.is_clean]


def _fill_moves(states: MaskedStates) -> dict:
    """All pairs (z -> z') where z' fills some masked positions of z: sizes |F|, m - |F| and prod_{i in F} q(z'^i | z^UM)."""
    s = states.states
    extends = ((s[None] == s[:, None]) | states.is_masked[:, None]).all(-1)  # extends[z, z'], (S, S)
    source, target = extends.nonzero(as_tuple=True)
    filled = states.is_masked[source] & ~states.is_masked[target]  # (pairs, n)
    value = s[target].clamp(max=states.mask_id - 1)
    prob = states.conditional[source[:, None], torch.arange(states.length), value]  # (pairs, n)
    value_prob = torch.where(filled, prob, 1.0).prod(1)
    return {"source": source, "target": target, "num_filled": filled.sum(1).double(),
            "num_left": (states.is_masked[target]).sum(1).double(), "value_prob": value_prob}


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """TV(p, q) = 1/2 sum |p - q|."""
    return 0.5 * float((p.double() - q.double()).abs().sum())


# ---------------------------------------------------------------------------------------------------------------
# The post-training 2-D search (App. E.1)
# ---------------------------------------------------------------------------------------------------------------

BETA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))  # a, b in {0.1, ..., 1.0}


def beta_grid_search(score, a_values=BETA_GRID, b_values=BETA_GRID, progress: bool = False) -> torch.Tensor:
    """Evaluate score(BetaCDFSchedule(a, b)) -> float (lower is better) on the grid: (len(a_values), len(b_values))."""
    from tqdm.auto import tqdm

    table = torch.empty(len(a_values), len(b_values), dtype=torch.float64)
    pairs = list(itertools.product(range(len(a_values)), range(len(b_values))))
    for i, j in tqdm(pairs, disable=not progress, desc="Beta grid"):
        table[i, j] = score(BetaCDFSchedule(a_values[i], b_values[j]))
    return table


def best_on_grid(table: torch.Tensor, a_values=BETA_GRID, b_values=BETA_GRID):
    """(a, b, score) of the lowest score in a grid-search table."""
    flat = int(table.argmin())
    i, j = divmod(flat, table.shape[1])
    return a_values[i], b_values[j], float(table[i, j])


# ---------------------------------------------------------------------------------------------------------------
# Schedules for a trained MDM: complete held-out prompts, score them against the known source
# ---------------------------------------------------------------------------------------------------------------

SAMPLERS = ("bernoulli", "fixed_counts")


def complete_prompts(denoiser, prompts: torch.Tensor, schedule: Schedule, *, gen_length: int, steps: int,
                     mask_id: int, sampler: str = "bernoulli", seed: int = 0) -> torch.Tensor:
    """Fill gen_length tokens after each prompt (B, P) at temperature 1 with one of the two samplers -> (B, P + G).

    'bernoulli' is the paper's sampler; 'fixed_counts' is the course's LLaDA ``generate`` with random remasking
    (counts per step from the schedule's expected count)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: allowed values are {SAMPLERS}")
    generator = torch.Generator(prompts.device).manual_seed(seed)
    kwargs = dict(gen_length=gen_length, steps=steps, mask_id=mask_id, schedule=schedule, temperature=1.0,
                  generator=generator, record_history=False)
    if sampler == "bernoulli":
        return bernoulli_generate(denoiser, prompts, **kwargs).tokens
    return generate(denoiser, prompts, remasking="random", **kwargs).tokens


def completion_excess_nll(source, tokens: torch.Tensor, prompt_length: int):
    """Mean and standard error of [-log q(completion | prompt) - G H] / G in nats per token, for a stationary Markov
    source q with entropy rate H (``MarkovChain``): 0 for a perfect sampler, positive when tokens revealed together
    contradict each other. (Not a divergence: a sampler sharper than q could score below 0.)"""
    full, prompt = source.log_prob(tokens), source.log_prob(tokens[:, :prompt_length])  # (B,) each
    gen_length = tokens.shape[1] - prompt_length
    excess = (prompt - full) / gen_length - source.entropy_rate()  # (B,)
    return float(excess.mean()), float(excess.std() / math.sqrt(len(excess)))
