"""How VRPO estimates the ELBO of an answer: the Monte Carlo design, the masked copies, and the exact enumeration.

B_hat(y) = 1/n_t sum_j 1/n_{y_t} sum_k (1/t_j) sum_{i masked in y^(j,k)} log pi(y^i | y^(j,k), x), with a budget
n = n_t n_{y_t} masked copies of the answer (Zhu et al. 2025, arXiv 2505.19223, the ELBO estimator of VRPO). Its
variance splits into a part from the timesteps and a part from the masks drawn at each timestep:

    Var B_hat = Var_t(E[l|t]) / n_t + E_t Var(l|t) / (n_t n_{y_t}),

so at a fixed budget the most timesteps (n_t = n, n_{y_t} = 1) give the smallest variance. An estimate and the
exact value are the same weighted sum over masked copies of the answer: n random copies with weights w/n (w = 1/t,
or n_y/l for the default l-form), or *all* 2^{n_y} - 1 non-empty masks of the n_y answer tokens with the k-form
weights 1/(k C(n_y, k)) (docs/derivations.md, "Three forms of the ELBO").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minimdm.mdm.denoiser import check_model_mask_id, logits_of
from minimdm.mdm.elbo import all_subsets
from minimdm.mdm.forward import mask_tokens_l, mask_tokens_t, stratified_counts, stratified_uniform
from minimdm.mdm.loss import masked_cross_entropy

ESTIMATORS = ("t", "l")
# The t-form's floor on t (t = 0 would mask nothing with weight 1/0; without a floor Var B_hat is infinite).
# torch.rand gives float32 t on a grid of step 2^-24 ~ 6e-8; a floor far above that step makes the sampled t the
# continuous U(0,1) clamped at T_FLOOR (to about 2^-24 / T_FLOOR ~ 6e-4, relative) that single_draw_variance integrates.
T_FLOOR = 1e-4


# --- how an ELBO is estimated ----------------------------------------------------------------------------

def _divisors(number: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, number + 1) if number % d == 0)


@dataclass(frozen=True)
class ELBOSampling:
    """The Monte Carlo design of every B_hat in one DPO-E step.

    * ``num_timesteps`` n_t and ``masks_per_timestep`` n_{y_t}: the budget n = n_t n_{y_t} masked copies per answer;
    * ``antithetic``: the reference reuses the policy's masked copies (else it draws its own);
    * ``estimator``: ``"l"`` (the default; LLaDA's form: l ~ U{1..n_y} tokens masked, weight n_y/l <= n_y, finite
      variance) or ``"t"`` (the paper's form: t ~ U(0,1), each answer token masked with probability t, weight
      1/t; same expectation, but one masked token at small t carries log pi / t, so the variance of one draw grows
      like ln(1/c) with the floor c on t and is infinite without one: see ``single_draw_variance``);
    * ``stratified``: spread the n_t timesteps of an answer evenly over (0,1) (each is still uniform; optional
      but our option, off by default so the three techniques are compared alone).
    """

    num_timesteps: int = 8
    masks_per_timestep: int = 1
    antithetic: bool = True
    estimator: str = "l"
    stratified: bool = False

    def __post_init__(self):
        for name in ("num_timesteps", "masks_per_timestep"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator={self.estimator!r}: allowed values are {ESTIMATORS}")

    @property
    def budget(self) -> int:
        """n = n_t x n_{y_t}: masked copies of each answer, i.e. network passes per answer and per model."""
        return self.num_timesteps * self.masks_per_timestep

    @classmethod
    def with_budget(cls, budget: int, num_timesteps: int, **options) -> "ELBOSampling":
        """Split a budget n into n_t timesteps x n/n_t masks each; n_t must divide n."""
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"budget={budget!r} must be a positive integer")
        if not isinstance(num_timesteps, int) or num_timesteps < 1 or budget % num_timesteps:
            raise ValueError(f"num_timesteps={num_timesteps!r} does not divide budget={budget}: "
                             f"allowed values are the divisors of {budget}: {_divisors(budget)}")
        return cls(num_timesteps=num_timesteps, masks_per_timestep=budget // num_timesteps, **options)

    def describe(self) -> str:
        return f"(n_t={self.num_timesteps}, n_yt={self.masks_per_timestep})" + (" + antithetic" if self.antithetic else "")


def estimator_family(budget: int = 8, estimator: str = "l") -> dict[str, ELBOSampling]:
    """The three estimators compared at one budget n (our reading of "equal budget"):

    * ``naive``: one timestep, n masks at it (n_t = 1), independent draws for policy and reference;
    * ``allocated``: the optimal allocation n_t = n, one mask each, still independent draws;
    * ``vrpo``: the optimal allocation plus antithetic sampling.
    """
    return {
        "naive": ELBOSampling.with_budget(budget, 1, antithetic=False, estimator=estimator),
        "allocated": ELBOSampling.with_budget(budget, budget, antithetic=False, estimator=estimator),
        "vrpo": ELBOSampling.with_budget(budget, budget, antithetic=True, estimator=estimator),
    }


# --- masked copies of an answer and the ELBO as a weighted sum over them ---------------------------------

@dataclass
class MaskDraws:
    """Masked copies of B rows: B_hat_b = sum_d coefficients[b, d] sum_{i masked in copy d} log pi(y^i | copy d).

    Monte Carlo draws have coefficient w_d / n (w = 1/t or n_y/l); the exact enumeration has 1/(k C(n_y,k)).
    """

    inputs: torch.Tensor  # (B, D, L) y_t: answer tokens masked, prompt intact
    is_masked: torch.Tensor  # (B, D, L) bool
    coefficients: torch.Tensor  # (B, D) float64


def _per_row_timesteps(rows: int, num_timesteps: int, stratified: bool, device, generator) -> torch.Tensor:
    """(rows, n_t) timesteps t ~ U(0,1); stratified: (u_b + j/n_t) mod 1 within each row."""
    if stratified:
        return torch.stack([stratified_uniform(num_timesteps, device, generator) for _ in range(rows)])
    return torch.rand(rows, num_timesteps, device=device, generator=generator)


def _per_row_mask_counts(answer_lengths: torch.Tensor, num_timesteps: int, stratified: bool, generator) -> torch.Tensor:
    """(rows, n_t) mask counts l ~ U{1..n_y} (the l-form's "timestep"); stratified across each row's n_t."""
    if stratified:
        return torch.stack([stratified_counts(num_timesteps, int(n), answer_lengths.device, generator)
                            for n in answer_lengths])
    u = torch.rand(answer_lengths.shape[0], num_timesteps, device=answer_lengths.device, generator=generator)
    return (u * answer_lengths[:, None]).long() + 1


def draw_masks(tokens: torch.Tensor, answer_mask: torch.Tensor, mask_id: int, sampling: ELBOSampling,
               generator: torch.Generator | None = None) -> MaskDraws:
    """n = n_t x n_{y_t} independent masked copies of every row of ``tokens`` (B, L); only ``answer_mask`` is noised.

    Timestep j of a row is shared by its n_{y_t} masks; rows never share anything (so y_w and y_l, stacked as
    different rows, get independent draws). Randomness comes from ``generator`` or the global RNG.
    """
    rows, length = tokens.shape
    n_t, n_yt = sampling.num_timesteps, sampling.masks_per_timestep
    answer_lengths = answer_mask.sum(1)  # (B,) n_y
    if bool((answer_lengths == 0).any()):
        raise ValueError("answer_mask selects no position in some row: there is no answer to score")
    copies = tokens.repeat_interleave(sampling.budget, 0)  # (B n, L), copy d of row b at b n + d
    maskable = answer_mask.repeat_interleave(sampling.budget, 0)
    if sampling.estimator == "t":
        t = _per_row_timesteps(rows, n_t, sampling.stratified, tokens.device, generator)
        t = t.clamp_min(T_FLOOR)  # t below the floor is read as the floor
        per_copy = t.repeat_interleave(n_yt, 1).flatten()  # (B n,) each timestep serves n_yt masks
        inputs, is_masked = mask_tokens_t(copies, per_copy, mask_id, maskable, generator)
        weight = 1.0 / per_copy.double()  # w = 1/t
    else:
        counts = _per_row_mask_counts(answer_lengths, n_t, sampling.stratified, generator)
        per_copy = counts.repeat_interleave(n_yt, 1).flatten()  # (B n,)
        inputs, is_masked = mask_tokens_l(copies, per_copy, mask_id, maskable, generator)
        weight = answer_lengths.repeat_interleave(sampling.budget).double() / per_copy.double()  # w = n_y / l
    shape = (rows, sampling.budget, length)
    return MaskDraws(inputs.view(shape), is_masked.view(shape), (weight / sampling.budget).view(rows, -1))


def all_answer_masks(tokens: torch.Tensor, answer_mask: torch.Tensor, mask_id: int) -> MaskDraws:
    """Every non-empty mask of the answer of one row ``tokens`` (L,), with the k-form weights (docs/derivations.md):

        B(y|x) = - sum_{k=1}^{n_y} f(k)/k = sum_{S != {}} 1/(|S| C(n_y, |S|)) sum_{i in S} log pi(y^i | y with S masked, x)

    (The same subsets as the core's ``subset_nll_table``, which runs under no_grad; here we need the gradient.)
    """
    n = int(answer_mask.sum())
    if not 1 <= n <= 16:
        raise ValueError(f"exact enumeration needs 1 to 16 answer positions, got {n}")
    is_masked = all_subsets(tokens.shape[0], answer_mask, tokens.device)[1:]  # (2^n - 1, L): drop the empty set
    sizes = is_masked.sum(1)
    binomial = torch.tensor([math.comb(n, int(k)) for k in sizes], dtype=torch.float64, device=tokens.device)
    coefficients = 1.0 / (sizes.double() * binomial)
    inputs = tokens.expand_as(is_masked).masked_fill(is_masked, mask_id)
    return MaskDraws(inputs[None], is_masked[None], coefficients[None])


def elbo_from_draws(denoiser, tokens: torch.Tensor, draws: MaskDraws) -> torch.Tensor:
    """B_hat (B,) float64 = sum_d c_d sum_{i masked} log pi(y^i | y_t^(d), x); differentiable w.r.t. the denoiser."""
    rows, copies, length = draws.inputs.shape
    logits = logits_of(denoiser, draws.inputs.reshape(rows * copies, length))  # (B D, L, K)
    targets = tokens.repeat_interleave(copies, 0)
    nll = masked_cross_entropy(logits, targets, draws.is_masked.reshape(rows * copies, length))  # (B D, L)
    log_likelihood = -nll.sum(1).double().view(rows, copies)  # sum_{i masked} log pi(y^i | y_t, x)
    return (draws.coefficients * log_likelihood).sum(1)


def exact_answer_elbo(denoiser, tokens: torch.Tensor, answer_mask: torch.Tensor, mask_id: int,
                      rows_per_call: int = 32) -> torch.Tensor:
    """The exact B(y|x) of each row (B,) by enumerating all masks of its answer; differentiable.

    Rows that share one answer mask (the usual case: one answer canvas) go through the network ``rows_per_call`` at
    a time; otherwise row by row."""
    check_model_mask_id(denoiser, mask_id)
    if not bool((answer_mask == answer_mask[:1]).all()):
        return torch.cat([elbo_from_draws(denoiser, row[None], all_answer_masks(row, mask, mask_id))
                          for row, mask in zip(tokens, answer_mask)])
    template = all_answer_masks(tokens[0], answer_mask[0], mask_id)  # the masks and k-form weights, shared by every row
    is_masked = template.is_masked[0]  # (S, L)
    elbos = []
    for start in range(0, tokens.shape[0], rows_per_call):
        rows = tokens[start:start + rows_per_call]  # (b, L)
        inputs = rows[:, None].masked_fill(is_masked[None], mask_id)  # (b, S, L)
        draws = MaskDraws(inputs, is_masked.expand_as(inputs), template.coefficients.expand(rows.shape[0], -1))
        elbos.append(elbo_from_draws(denoiser, rows, draws))
    return torch.cat(elbos)


def _t_form_second_moment_weights(n: int, floor: float) -> list[float]:
    """I_k = E_t[t^-2 t^k (1-t)^(n-k)] for t ~ U(0,1) clamped at ``floor``, k = 1..n (float64, exact sums).

    With (1-t)^(n-k) expanded, ∫_c^1 t^(k-2+j) dt is log(1/c) for k = 1, j = 0 (the divergent term) and
    (1 - c^(k-1+j)) / (k-1+j) otherwise; the clamp adds c * c^(k-2) (1-c)^(n-k) (t below c is read as c).
    """
    weights = []
    for k in range(1, n + 1):
        total = floor ** (k - 1) * (1 - floor) ** (n - k)
        for j in range(n - k + 1):
            power = k - 1 + j
            part = math.log(1 / floor) if power == 0 else (1 - floor ** power) / power
            total += math.comb(n - k, j) * (-1) ** j * part
        weights.append(total)
    return weights


@torch.no_grad()
def single_draw_variance(denoiser, tokens: torch.Tensor, answer_mask: torch.Tensor, mask_id: int, estimator: str,
                         t_floor: float = T_FLOOR) -> float:
    """The exact variance of a one-draw estimate B_hat (n_t = n_{y_t} = 1) of the ELBO of one row ``tokens`` (L,).

    With v_S = sum_{i in S} log pi(y^i | y with S masked) for every non-empty mask S of the answer (2^n_y - 1):

    * l-form: l ~ U{1..n_y}, S uniform of size l, weight n_y/l:  E B_hat^2 = sum_S (1/n_y) (n_y/|S|)^2 v_S^2 / C(n_y, |S|);
    * t-form: t ~ U(0,1) clamped at ``t_floor``, each token masked with probability t, weight 1/t:
      E B_hat^2 = sum_S I_|S| v_S^2 with I_k = E[t^(k-2) (1-t)^(n_y-k)]; I_1 grows like ln(1/t_floor) (infinite
      without a floor), which is why a sample variance of the t-form keeps growing with the number of repeats.

    Var B_hat = E B_hat^2 - B^2 (B the exact ELBO). Answers of at most 16 tokens.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: allowed values are {ESTIMATORS}")
    if not 0 < t_floor < 1:
        raise ValueError(f"t_floor={t_floor} must lie in (0, 1)")
    draws = all_answer_masks(tokens, answer_mask, mask_id)
    n = int(answer_mask.sum())
    logits = logits_of(denoiser, draws.inputs[0])
    nll = masked_cross_entropy(logits, tokens.expand_as(draws.inputs[0]), draws.is_masked[0])
    values = -nll.sum(1).double()  # v_S, (2^n - 1,)
    sizes = draws.is_masked[0].sum(1)
    elbo = float((draws.coefficients[0] * values).sum())
    if estimator == "l":
        binomial = torch.tensor([math.comb(n, int(k)) for k in sizes], dtype=torch.float64)
        second = float(((n / sizes.double()) ** 2 / n / binomial * values**2).sum())
    else:
        weight = torch.tensor(_t_form_second_moment_weights(n, t_floor), dtype=torch.float64)[sizes - 1]
        second = float((weight * values**2).sum())
    return second - elbo**2
