"""The DPO-E objective of VRPO: DPO with the ELBO in place of the log-likelihood, estimated and exact, and the
statistics that tell how close an estimator comes to the exact loss and gradient.

    s = beta [ (B_pi(y_w) - B_ref(y_w)) - (B_pi(y_l) - B_ref(y_l)) ],      loss = -log sigma(s)

(Zhu et al. 2025, arXiv 2505.19223; DPO: Rafailov et al. 2023, arXiv 2305.18290.) The score s_hat built from
unbiased ELBO estimates is unbiased; the loss is convex in s, so its estimate is biased upwards (Jensen).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minimdm.checks import is_finite_number
from minimdm.mdm.denoiser import check_model_mask_id, logits_of
from minimdm.vrpo.estimators import ELBOSampling, draw_masks, elbo_from_draws, exact_answer_elbo

# --- DPO-E --------------------------------------------------------------------------------------------------

@dataclass
class DPOEOutput:
    loss: torch.Tensor  # () mean over pairs of -log sigma(s_hat), float64
    score: torch.Tensor  # (B,) s_hat, differentiable w.r.t. the policy
    policy_elbo: torch.Tensor  # (2B,) B_hat_pi of [y_w; y_l]
    reference_elbo: torch.Tensor  # (2B,) B_hat_ref of [y_w; y_l], no gradient


def dpo_e_from_elbos(policy_elbo: torch.Tensor, reference_elbo: torch.Tensor, beta: float) -> DPOEOutput:
    """Score and loss from the ELBOs of the stacked answers [y_w (B rows); y_l (B rows)]."""
    if not (is_finite_number(beta) and beta > 0):  # beta < 0 would learn the opposite
        raise ValueError(f"beta={beta} must be a finite number > 0 (DPO's inverse temperature, e.g. 0.1)")
    if policy_elbo.shape != reference_elbo.shape or policy_elbo.dim() != 1 or len(policy_elbo) % 2:
        raise ValueError(f"policy_elbo and reference_elbo must both have shape (2 * pairs,) (chosen rows, then "
                         f"rejected), got {tuple(policy_elbo.shape)} and {tuple(reference_elbo.shape)}")
    log_ratio = policy_elbo - reference_elbo  # B_pi(y) - B_ref(y), (2B,)
    chosen, rejected = log_ratio.chunk(2)
    score = beta * (chosen - rejected)  # s = beta [(B_pi(y_w) - B_ref(y_w)) - (B_pi(y_l) - B_ref(y_l))]
    loss = F.softplus(-score).mean()  # -log sigma(s) = log(1 + e^{-s}), stable for large |s|
    return DPOEOutput(loss, score, policy_elbo, reference_elbo)


def _stack_pair(chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor):
    if chosen.shape != rejected.shape or chosen.dim() != 2:
        raise ValueError(f"chosen and rejected must both have shape (pairs, length), got "
                         f"{tuple(chosen.shape)} and {tuple(rejected.shape)}")
    if answer_mask.shape not in (chosen.shape, chosen.shape[1:]):
        raise ValueError(f"answer_mask must have shape {tuple(chosen.shape)} or ({chosen.shape[1]},) like chosen, "
                         f"got {tuple(answer_mask.shape)}")
    answer_mask = answer_mask.expand_as(chosen)
    if answer_mask.dtype != torch.bool:
        raise ValueError(f"answer_mask must be a bool tensor, got {answer_mask.dtype}")
    return torch.cat([chosen, rejected]), torch.cat([answer_mask, answer_mask])  # (2B, L) each


def dpo_e_loss(policy, reference, chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor,
               mask_id: int, sampling: ELBOSampling, beta: float = 0.1,
               generator: torch.Generator | None = None) -> DPOEOutput:
    """The DPO-E loss of a batch of pairs: ``chosen`` y_w and ``rejected`` y_l rows (B, L) after the same prompt.

    ``answer_mask`` (B, L) or (L,) is True on the answer canvas (EOS padding included, as in SFT). Per step:
    2n policy passes with gradient, 2n reference passes without (the per-step cost of VRPO with antithetic sampling, arXiv 2505.19223).
    """
    answers, maskable = _stack_pair(chosen, rejected, answer_mask)
    if not isinstance(sampling, ELBOSampling):
        raise ValueError(f"sampling={sampling!r} must be an ELBOSampling (e.g. estimator_family(8)['vrpo'])")
    for model in (policy, reference):  # a mask id inside the vocabulary would give a plausible, meaningless loss
        check_model_mask_id(model, mask_id)
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


# --- estimator quality on enumerable cases -----------------------------------------------------------------

def flat_gradient(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    """d loss / d theta for the listed parameters, as one flat float64 vector (P,)."""
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten().double() for p, g in zip(parameters, grads)])


class LogitOffsetPolicy(torch.nn.Module):
    """A toy policy for exact checks: a fixed denoiser's logits plus a learnable offset per (position, token).

    With ``base`` the Markov oracle and a small offset this is a policy close to a known distribution, as a
    fine-tuned policy is close to its reference; the offset is a parameter, so the policy has a gradient. The
    offsets are drawn uniformly in [-scale, scale] (our choice).
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
            "grad_cosine": cosines.mean().item(), "grad_cosine_stderr": cosines.std().item() / math.sqrt(repeats),
            "grad_norm_var": norms.var().item(),
        })
    return rows


# --- diagnostics of a DPO run: preference accuracy and likelihood displacement ----------------------------------

@torch.no_grad()
def pair_elbos(model, chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor, mask_id: int,
               batch_size: int = 32) -> torch.Tensor:
    """The exact ELBOs of the chosen answers, then of the rejected ones (nats per answer), by enumerating masks."""
    answers, maskable = _stack_pair(chosen, rejected, answer_mask)
    return exact_answer_elbo(model, answers, maskable, mask_id, batch_size)


@torch.no_grad()
def preference_diagnostics(policy, reference, chosen: torch.Tensor, rejected: torch.Tensor, answer_mask: torch.Tensor,
                           mask_id: int, beta: float = 0.1, batch_size: int = 32,
                           reference_elbos: torch.Tensor | None = None) -> dict:
    """What a DPO run did to a set of pairs, from the *exact* ELBOs (answers of at most 16 tokens):

    * ``accuracy``: the implicit-reward accuracy, the fraction of pairs with s > 0, i.e. whose implicit reward
      r(y) = beta (B_pi(y) - B_ref(y)) ranks the chosen answer above the rejected one (ties count one half; at
      pi = pi_ref every s is 0, so the accuracy starts at 0.5);
    * ``chosen_drift`` / ``rejected_drift``: the mean change B_pi(y) - B_ref(y) of the chosen and of the rejected
      answers' ELBO (nats per answer). DPO only pushes their difference up; when both fall while the margin
      grows, that is DPO's known likelihood displacement, not a bug (Razin et al. 2024, arXiv 2410.08847);
    * ``margin``: the mean score s = beta (chosen_drift - rejected_drift) per pair.

    On held-out pairs the accuracy says whether the policy learned the preference or only the training pairs.
    ``reference_elbos`` (``pair_elbos`` of the reference on the same pairs) saves recomputing them for every run.
    """
    if reference_elbos is None:
        reference_elbos = pair_elbos(reference, chosen, rejected, answer_mask, mask_id, batch_size)
    elif reference_elbos.shape != (2 * len(chosen),):
        raise ValueError(f"reference_elbos has shape {tuple(reference_elbos.shape)}; pair_elbos of the same "
                         f"{len(chosen)} pairs has shape ({2 * len(chosen)},)")
    drift = pair_elbos(policy, chosen, rejected, answer_mask, mask_id, batch_size) - reference_elbos
    chosen_drift, rejected_drift = drift.chunk(2)
    scores = beta * (chosen_drift - rejected_drift)
    accuracy = (scores > 0).double() + 0.5 * (scores == 0).double()
    return {"accuracy": accuracy.mean().item(), "chosen_drift": chosen_drift.mean().item(),
            "rejected_drift": rejected_drift.mean().item(), "margin": scores.mean().item(), "pairs": len(scores)}
