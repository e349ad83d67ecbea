"""LLaDA 1.5: Variance-Reduced Preference Optimisation (VRPO) for masked diffusion models (Zhu et al. 2025, arXiv 2505.19223).

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

VRPO's training code is not public. This package follows the paper's description; the choices that are ours are
marked "(our choice)". The same code computes the estimates and the exact values: an estimate is a weighted sum
over masked copies of the answer (n random copies, weights w/n with w = 1/t or, the default, n_y/l); the exact ELBO
is the same sum over *all* 2^{n_y} - 1 non-empty masks of the n_y answer tokens with the k-form weights
1/(k C(n_y, k)) (docs/derivations.md), which keeps it differentiable, so the exact loss
gradient is one ``backward`` away on enumerable cases.

Modules, one idea each:

* ``estimators``: the Monte Carlo design of an ELBO estimate (budget, allocation, antithetic flag) and the exact
  enumeration;
* ``objective``: the DPO-E score and loss, estimated and exact, and the estimator statistics against the exact ones;
* ``preference``: preference pairs built from the SFT model's own samples and a programmatic reward;
* ``training``: DPO-E training on the shared trainer and the gradient noise on real pairs.
"""
from minimdm.vrpo.estimators import (ESTIMATORS, T_FLOOR, ELBOSampling, MaskDraws, all_answer_masks, draw_masks,
                                     elbo_from_draws, estimator_family, exact_answer_elbo, single_draw_variance)
from minimdm.vrpo.objective import (DPOEOutput, LogitOffsetPolicy, dpo_e_from_elbos, dpo_e_loss, estimator_statistics,
                                    exact_dpo_e, flat_gradient, pair_elbos, preference_diagnostics)
from minimdm.vrpo.preference import (PreferenceData, build_preference_data, exact_match_reward, mean_reward,
                                     sample_answers, split_held_out)
from minimdm.vrpo.training import frozen_copy, gradient_norms, train_dpo_e

__all__ = ["ESTIMATORS", "ELBOSampling", "estimator_family", "MaskDraws", "draw_masks", "all_answer_masks",
           "elbo_from_draws", "exact_answer_elbo", "DPOEOutput", "dpo_e_from_elbos", "dpo_e_loss", "exact_dpo_e", "frozen_copy",
           "flat_gradient", "LogitOffsetPolicy", "estimator_statistics", "exact_match_reward", "split_held_out",
           "PreferenceData", "sample_answers", "mean_reward", "build_preference_data", "train_dpo_e",
           "gradient_norms", "T_FLOOR", "single_draw_variance", "pair_elbos", "preference_diagnostics"]
