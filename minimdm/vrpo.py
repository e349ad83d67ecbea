"""LLaDA 1.5: Variance-Reduced Preference Optimisation (VRPO) for masked diffusion models (mdm_core.md §4).

DPO compares the policy's and a frozen reference's log-likelihoods of a chosen answer y_w and a rejected
answer y_l. A masked diffusion model has no exact log-likelihood, so DPO-E puts its ELBO in the place of it:

    B_pi(y|x) = E_{t ~ U[0,1]} E_{y_t ~ q(.|t, y)} (1/t) sum_{i: y_t^i = M} log pi(y^i | y_t, x)   <= log pi(y|x)

    s = beta [ (B_pi(y_w) - B_ref(y_w)) - (B_pi(y_l) - B_ref(y_l)) ],      loss = -log sigma(s)

Only the answer is masked; the prompt x is never masked. Each B is estimated by Monte Carlo with a budget of
n = n_t x n_{y_t} masked copies of the answer (n_t timesteps, n_{y_t} masks at each):

    B_hat(y) = 1/n_t sum_j 1/n_{y_t} sum_k (1/t_j) sum_{i masked in y^(j,k)} log pi(y^i | y^(j,k), x)

The score s_hat is unbiased for s; the loss -log sigma(s_hat) is not (it is convex: E loss_hat >= loss). The
paper bounds the bias and variance of the loss and of its gradient by increasing functions of Var s_hat and
lowers that variance with three unbiased changes:

1. a larger budget n (variance ~ 1/n);
2. the optimal allocation n_t = n, n_{y_t} = 1, because
   Var B_hat = Var_t(E[l|t]) / n_t + E_t Var(l|t) / (n_t n_{y_t})  is smallest with the most timesteps;
3. antithetic sampling: the policy and the reference see the *same* masked copies of an answer, so the large
   common part of B_pi and B_ref cancels in their difference (at pi = pi_ref, s_hat = 0 exactly). The chosen
   and the rejected answer keep independent draws.

VRPO's training code is not public. This module follows the spec; the choices that are ours are marked
"(our choice)". The same code computes the estimates and the exact values: an estimate is a weighted sum over
masked copies of the answer (random copies, weights 1/(t n)); the exact ELBO is the same sum over *all* 2^n
masks with the k-form weights 1/(k C(n,k)) (§0.2), which keeps it differentiable, so the exact loss gradient
is one ``backward`` away on enumerable cases.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from minimdm.chat import answer_prompts
from minimdm.mdm.denoiser import logits_of
from minimdm.mdm.elbo import Estimate, all_subsets
from minimdm.mdm.forward import mask_tokens_l, mask_tokens_t, stratified_counts, stratified_uniform
from minimdm.mdm.loss import masked_cross_entropy
from minimdm.mdm.sft import ChatTemplate, make_sft_batch
from minimdm.train import TrainConfig, TrainResult, resolve_device, train

ESTIMATORS = ("t", "l")


# --- how an ELBO is estimated ----------------------------------------------------------------------------

def _divisors(number: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, number + 1) if number % d == 0)


@dataclass(frozen=True)
class ELBOSampling:
    """The Monte Carlo design of every B_hat in one DPO-E step.

    * ``num_timesteps`` n_t and ``masks_per_timestep`` n_{y_t}: the budget n = n_t n_{y_t} masked copies per answer;
    * ``antithetic``: the reference reuses the policy's masked copies (else it draws its own);
    * ``estimator``: ``"t"`` (the paper's form: t ~ U(0,1), each answer token masked with probability t, weight
      1/t) or ``"l"`` (LLaDA's: l ~ U{1..n_y} tokens masked, weight n_y/l; same expectation, bounded weights);
    * ``stratified``: spread the n_t timesteps of an answer evenly over (0,1) (each is still uniform; optional
      in the spec, off by default so the three techniques are compared alone).
    """

    num_timesteps: int = 8
    masks_per_timestep: int = 1
    antithetic: bool = True
    estimator: str = "t"
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


def estimator_family(budget: int = 8, estimator: str = "t") -> dict[str, ELBOSampling]:
    """The three estimators compared at one budget n (our reading of "equal budget", mdm_core.md §7.2 J):

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
        t = t.clamp_min(torch.finfo(torch.float32).tiny)  # t = 0 masks nothing and has weight 0 * inf
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
    """Every non-empty mask of the answer of one row ``tokens`` (L,), with the k-form weights (mdm_core.md §0.2):

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


def exact_answer_elbo(denoiser, tokens: torch.Tensor, answer_mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The exact B(y|x) of each row (B,) by enumerating all masks of its answer; differentiable."""
    return torch.cat([elbo_from_draws(denoiser, row[None], all_answer_masks(row, mask, mask_id))
                      for row, mask in zip(tokens, answer_mask)])


# --- DPO-E --------------------------------------------------------------------------------------------------

@dataclass
class DPOEOutput:
    loss: torch.Tensor  # () mean over pairs of -log sigma(s_hat), float64
    score: torch.Tensor  # (B,) s_hat, differentiable w.r.t. the policy
    policy_elbo: torch.Tensor  # (2B,) B_hat_pi of [y_w; y_l]
    reference_elbo: torch.Tensor  # (2B,) B_hat_ref of [y_w; y_l], no gradient


def dpo_e_from_elbos(policy_elbo: torch.Tensor, reference_elbo: torch.Tensor, beta: float) -> DPOEOutput:
    """Score and loss from the ELBOs of the stacked answers [y_w (B rows); y_l (B rows)]."""
    log_ratio = policy_elbo - reference_elbo  # B_pi(y) - B_ref(y), (2B,)
    chosen, rejected = log_ratio.chunk(2)
    score = beta * (chosen - rejected)  # s = beta [(B_pi(y_w) - B_ref(y_w)) - (B_pi(y_l) - B_ref(y_l))]
    loss = F.softplus(-score).mean()  # -log sigma(s) = log(1 + e^{-s}), stable for large |s|
    return DPOEOutput(loss, score, policy_elbo, reference_elbo)


def _stack_pair(chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor):
    if chosen.shape != rejected.shape or chosen.dim() != 2:
        raise ValueError(f"chosen and rejected must both have shape (pairs, length), got "
                         f"{tuple(chosen.shape)} and {tuple(rejected.shape)}")
    answer_mask = answer_mask.expand_as(chosen)
    if answer_mask.dtype != torch.bool:
        raise ValueError(f"answer_mask must be a bool tensor, got {answer_mask.dtype}")
    return torch.cat([chosen, rejected]), torch.cat([answer_mask, answer_mask])  # (2B, L) each


def dpo_e_loss(policy, reference, chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor,
               mask_id: int, sampling: ELBOSampling, beta: float = 0.1,
               generator: torch.Generator | None = None) -> DPOEOutput:
    """The DPO-E loss of a batch of pairs: ``chosen`` y_w and ``rejected`` y_l rows (B, L) after the same prompt.

    ``answer_mask`` (B, L) or (L,) is True on the answer canvas (EOS padding included, as in SFT). Per step:
    2n policy passes with gradient, 2n reference passes without (mdm_core.md §4.2, per-step algorithm).
    """
    answers, maskable = _stack_pair(chosen, rejected, answer_mask)
    # y_w and y_l are different rows, so their draws are independent; policy and reference share them if antithetic.
    policy_draws = draw_masks(answers, maskable, mask_id, sampling, generator)
    reference_draws = policy_draws if sampling.antithetic else draw_masks(answers, maskable, mask_id, sampling, generator)
    policy_elbo = elbo_from_draws(policy, answers, policy_draws)
    with torch.no_grad():  # the reference is a fixed baseline: no gradient flows into it
        reference_elbo = elbo_from_draws(reference, answers, reference_draws)
    return dpo_e_from_elbos(policy_elbo, reference_elbo, beta)


def exact_dpo_e(policy, reference, chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor,
                mask_id: int, beta: float = 0.1) -> DPOEOutput:
    """The exact DPO-E score and loss (exact ELBOs by enumeration; answers of at most 16 tokens). Differentiable."""
    answers, maskable = _stack_pair(chosen, rejected, answer_mask)
    policy_elbo = exact_answer_elbo(policy, answers, maskable, mask_id)
    with torch.no_grad():
        reference_elbo = exact_answer_elbo(reference, answers, maskable, mask_id)
    return dpo_e_from_elbos(policy_elbo, reference_elbo, beta)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference pi_ref: a copy of the starting policy, in eval mode, with no trainable parameter."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


# --- estimator quality on enumerable cases -----------------------------------------------------------------

def flat_gradient(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    """d loss / d theta for the listed parameters, as one flat float64 vector (P,)."""
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten().double() for p, g in zip(parameters, grads)])


class LogitOffsetPolicy(torch.nn.Module):
    """A toy policy for exact checks: a fixed denoiser's logits plus a learnable offset per (position, token).

    With ``base`` the Markov oracle and a small offset this is the spec's "oracle with a ±0.1 logit
    perturbation" (mdm_core.md §4.2); the offset is a parameter, so the policy has a gradient. The offsets
    are drawn uniformly in [-scale, scale] (our choice).
    """

    def __init__(self, base, length: int, vocab_size: int, scale: float = 0.1, seed: int = 0):
        super().__init__()
        self.base = base
        offset = (2 * torch.rand(length, vocab_size, generator=torch.Generator().manual_seed(seed)) - 1) * scale
        self.offset = torch.nn.Parameter(offset.double())

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        return logits_of(self.base, xt).double() + self.offset[: xt.shape[1]]


def estimator_statistics(policy, reference, chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor,
                         mask_id: int, samplings: dict[str, ELBOSampling], beta: float = 1.0, repeats: int = 300,
                         seed: int = 0) -> list[dict]:
    """Var s_hat, Var loss_hat, loss bias and gradient cosine of each estimator against the exact DPO-E.

    ``repeats`` independent estimates per estimator on the same pairs. The cosine is the mean over repeats of
    cos(grad_hat, grad_exact); ``grad_norm_var`` is the variance of |grad_hat|.
    """
    parameters = [p for p in policy.parameters() if p.requires_grad]
    exact = exact_dpo_e(policy, reference, chosen, rejected, answer_mask, mask_id, beta)
    exact_gradient = flat_gradient(exact.loss, parameters)
    rows = []
    for name, sampling in samplings.items():
        generator = torch.Generator(device=chosen.device).manual_seed(seed)
        scores, losses, cosines, norms = [], [], [], []
        for _ in range(repeats):
            estimate = dpo_e_loss(policy, reference, chosen, rejected, answer_mask, mask_id, sampling, beta, generator)
            gradient = flat_gradient(estimate.loss, parameters)
            scores.append(estimate.score.detach())
            losses.append(estimate.loss.detach())
            norms.append(gradient.norm())
            cosines.append(F.cosine_similarity(gradient, exact_gradient, dim=0))
        scores, losses, norms, cosines = (torch.stack(v).double() for v in (scores, losses, norms, cosines))
        rows.append({
            "estimator": name, "design": sampling.describe(), "budget": sampling.budget,
            "score_mean": scores.mean().item(), "score_stderr": scores.std().item() / math.sqrt(repeats),
            "score_var": scores.var().item(),  # over repeats (and pairs, if several)
            "loss_var": losses.var().item(),
            "loss_bias": losses.mean().item() - exact.loss.item(),
            "loss_bias_stderr": losses.std().item() / math.sqrt(repeats),
            "grad_cosine": cosines.mean().item(), "grad_norm_var": norms.var().item(),
        })
    return rows


# --- a preference dataset from the SFT model's own samples ----------------------------------------------------

def exact_match_reward(example, answer_text: str) -> float:
    """The programmatic reward: 1 if the answer is exactly the task's correct answer, else 0."""
    return float(answer_text == example.answer)


def split_held_out(examples: list, num_held_out: int) -> tuple[list, list]:
    """(training examples, held-out examples): distinct prompts, none of the held-out ones among the training ones."""
    unique = list({example.prompt: example for example in examples}.values())
    if num_held_out < 1 or num_held_out >= len(unique):
        raise ValueError(f"num_held_out={num_held_out}: allowed values are 1..{len(unique) - 1} "
                         f"({len(unique)} distinct prompts)")
    return unique[:-num_held_out], unique[-num_held_out:]


@dataclass
class PreferenceData:
    """Pairs of answers to one prompt, as rows ``[left-padded prompt | answer EOS EOS ...]`` of one canvas."""

    chosen: torch.Tensor  # (N, P + G)
    rejected: torch.Tensor  # (N, P + G)
    answer_mask: torch.Tensor  # (N, P + G) bool, True on the answer canvas
    prompts: list[str] = field(default_factory=list)
    chosen_texts: list[str] = field(default_factory=list)
    rejected_texts: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.chosen.shape[0]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.chosen[indices], self.rejected[indices], self.answer_mask[indices]


def sample_answers(model, tokenizer, examples: list, samples_per_prompt: int, *, batch_size: int = 256,
                   **sampler_kwargs) -> list[list[str]]:
    """``samples_per_prompt`` decoded answers for every example, from ``minimdm.chat.answer_prompts``."""
    prompts = [example.prompt for example in examples for _ in range(samples_per_prompt)]
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts += answer_prompts(model, tokenizer, prompts[start:start + batch_size], **sampler_kwargs).texts
    return [texts[i * samples_per_prompt:(i + 1) * samples_per_prompt] for i in range(len(examples))]


def mean_reward(model, tokenizer, examples: list, *, samples_per_prompt: int = 1,
                reward_fn: Callable = exact_match_reward, **sampler_kwargs) -> Estimate:
    """Mean reward of the model's answers on ``examples`` (e.g. held-out prompts), with its standard error."""
    answers = sample_answers(model, tokenizer, examples, samples_per_prompt, **sampler_kwargs)
    rewards = [reward_fn(example, text) for example, texts in zip(examples, answers) for text in texts]
    return Estimate.from_draws(torch.tensor(rewards))


def build_preference_data(model, tokenizer, examples: list, *, samples_per_prompt: int = 8, gen_length: int,
                          steps: int | None = None, temperature: float = 1.0, remasking: str = "random",
                          prompt_length: int | None = None, reward_fn: Callable = exact_match_reward,
                          seed: int = 0, **sampler_kwargs) -> PreferenceData:
    """Sample answers from the (SFT) model, score them with ``reward_fn``, keep one (best, worst) pair per prompt.

    A prompt gives a pair only when its samples disagree in reward; chosen and rejected are drawn at random
    among the best- and worst-rewarded distinct answers (our choice; the paper's data are human/AI-labelled).
    Answers are stored the way SFT rows are, answer + EOS up to ``gen_length`` (the text after the model's first
    EOS is dropped, as the decoder drops it), so the pairs line up with the sampler's canvas.
    """
    template = ChatTemplate.from_tokenizer(tokenizer)
    prompt_ids = [template.prompt([{"role": "user", "content": e.prompt}]) for e in examples]
    prompt_length = max(len(p) for p in prompt_ids) if prompt_length is None else prompt_length
    generator = torch.Generator(device=next(iter(model.state_dict().values())).device).manual_seed(seed)
    answers = sample_answers(model, tokenizer, examples, samples_per_prompt, gen_length=gen_length,
                             steps=steps or gen_length, temperature=temperature, remasking=remasking,
                             prompt_length=prompt_length, generator=generator, **sampler_kwargs)
    rng = random.Random(seed)
    chosen_pairs, rejected_pairs, prompts, chosen_texts, rejected_texts = [], [], [], [], []
    all_rewards = []
    for example, ids, texts in zip(examples, prompt_ids, answers):
        rewards = {text: reward_fn(example, text) for text in texts}
        all_rewards += [rewards[text] for text in texts]
        best, worst = max(rewards.values()), min(rewards.values())
        if best == worst:
            continue
        chosen = rng.choice(sorted(text for text, r in rewards.items() if r == best))
        rejected = rng.choice(sorted(text for text, r in rewards.items() if r == worst))
        chosen_pairs.append((ids, template.answer(chosen)[:gen_length]))
        rejected_pairs.append((ids, template.answer(rejected)[:gen_length]))
        prompts.append(example.prompt)
        chosen_texts.append(chosen)
        rejected_texts.append(rejected)
    if not prompts:
        raise ValueError("no prompt had samples of different reward: sample more per prompt or at a higher temperature")
    kwargs = dict(gen_length=gen_length, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id,
                  mask_id=model.mask_id, prompt_length=prompt_length)
    chosen_batch = make_sft_batch(chosen_pairs, **kwargs)
    rejected_batch = make_sft_batch(rejected_pairs, **kwargs)
    stats = {"prompts": len(examples), "pairs": len(prompts), "samples": len(all_rewards),
             "sample_reward": sum(all_rewards) / len(all_rewards)}
    return PreferenceData(chosen_batch.tokens, rejected_batch.tokens, ~chosen_batch.prompt_mask, prompts,
                          chosen_texts, rejected_texts, stats)


# --- training --------------------------------------------------------------------------------------------------

def train_dpo_e(policy, reference, data: PreferenceData, cfg: TrainConfig, *, sampling: ELBOSampling | None,
                beta: float = 0.1, batch_size: int = 16, eval_fn=None) -> TrainResult:
    """DPO-E on the shared trainer: each step draws ``batch_size`` pairs and one set of masks from the global RNG
    (which the trainer reseeds per step, so a run is reproducible and resumable). ``reference`` is frozen here.

    ``sampling=None`` trains on the exact ELBOs (every mask enumerated; answers of at most 16 tokens): the
    noise-free limit that the estimators approach.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    device = resolve_device(cfg.device)
    reference = reference.to(device).eval().requires_grad_(False)
    mask_id = policy.mask_id

    def batch_fn(step: int):
        return data.batch(torch.randint(len(data), (batch_size,)))

    def loss_fn(model, batch):
        chosen, rejected, answer_mask = batch
        if sampling is None:
            return exact_dpo_e(model, reference, chosen, rejected, answer_mask, mask_id, beta).loss
        return dpo_e_loss(model, reference, chosen, rejected, answer_mask, mask_id, sampling, beta).loss

    return train(policy, loss_fn, batch_fn, cfg, eval_fn)


def gradient_norms(policy, reference, data: PreferenceData, *, sampling: ELBOSampling, beta: float = 0.1,
                   batch_size: int = 16, repeats: int = 32, seed: int = 0) -> torch.Tensor:
    """|grad| of ``repeats`` independent DPO-E estimates on one fixed batch of pairs (R,): the estimator's noise."""
    generator = torch.Generator(device=data.chosen.device).manual_seed(seed)
    indices = torch.randperm(len(data), generator=generator)[:batch_size]
    chosen, rejected, answer_mask = data.batch(indices)
    parameters = [p for p in policy.parameters() if p.requires_grad]
    norms = [flat_gradient(dpo_e_loss(policy, reference, chosen, rejected, answer_mask, policy.mask_id, sampling,
                                      beta, generator).loss, parameters).norm() for _ in range(repeats)]
    return torch.stack(norms)


__all__ = ["ELBOSampling", "estimator_family", "MaskDraws", "draw_masks", "all_answer_masks", "elbo_from_draws",
           "exact_answer_elbo", "DPOEOutput", "dpo_e_from_elbos", "dpo_e_loss", "exact_dpo_e", "frozen_copy",
           "flat_gradient", "LogitOffsetPolicy", "estimator_statistics", "exact_match_reward", "split_held_out",
           "PreferenceData", "sample_answers", "mean_reward", "build_preference_data", "train_dpo_e",
           "gradient_norms"]
