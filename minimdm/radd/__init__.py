"""RADD: absorbing diffusion models the conditionals of clean data (Ou, Nie et al., arXiv 2406.03736; ICLR'25).

One theorem and what follows from it:

* **Concrete score.** For x_t with x_t^i = M and x_hat = x_t except x_hat^i = v,
      p_t(x_hat) / p_t(x_t) = a(t) * p_0(x^i = v | unmasked tokens of x_t),   a(t) = alpha_t / (1 - alpha_t)
  so the network needs no time input: s_theta(x_t, t) = a(t) c_theta(x_t)  (``concrete_score``).
* **Four losses, one bound.** t-DSE, t-DCE, lambda-DCE and k-DCE (``LOSSES``) all estimate the same NELBO,
  which equals the expected NLL of an any-order autoregressive model (the core computes that average,
  ``minimdm.mdm.elbo.elbo_over_orders``; ``exact_loss_expectation`` lets the tests compare against it). The
  time-indexed pair reaches it exactly with ``schedule="linear"``; RADD's log-linear schedule stops at mask ratio
  1 - eps (alpha_1 = eps) and the geometric one inside (0, 1), so under those they estimate the integral over that
  range only, a little below it (tested).
* **Caching.** c_theta has no t, so while x_t does not change its output can be reused: ``tau_leaping_sample``
  with cache=True draws exactly the same samples with E-NFE = N [1 - (1 - 1/N)^L] network calls.
* ``ordered_sample`` decodes one position per call in a given order, and ``ordered_nll`` is the exact NLL of that
  decoder for a fixed order; ``zero_shot_perplexity`` is the NELBO-per-token evaluator of RADD's zero-shot
  perplexity protocol.

Time-conditioned networks (``TransformerConfig(time_cond=True)``, the ablation) are told the noise level as the
mask ratio lambda = 1 - alpha_t: any monotone function of t carries the same information.

Modules: ``score`` (schedules, concrete score), ``losses``, ``sampling``, ``perplexity``.
"""
from minimdm.radd.losses import (LOSSES, KDCE, LambdaDCE, NoiseDraw, RADDLoss, TimeDCE, TimeDSE,
                                 exact_loss_expectation, get_loss)
from minimdm.radd.perplexity import PerplexityResult, ordered_nll, zero_shot_perplexity
from minimdm.radd.sampling import (ORDERS, SAMPLING_METHODS, RADDSampleResult, draw_reveal_steps, expected_nfe,
                                   ordered_sample, reveal_probabilities, tau_leaping_sample)
from minimdm.radd.score import (GeometricSchedule, LogLinearSchedule, concrete_score, concrete_score_error,
                                conditional_logits, is_time_conditioned, noise_rate, noisy_marginal,
                                resolve_schedule, score_scale)

__all__ = [
    "LOSSES", "KDCE", "LambdaDCE", "NoiseDraw", "RADDLoss", "TimeDCE", "TimeDSE", "exact_loss_expectation", "get_loss",
    "PerplexityResult", "ordered_nll", "zero_shot_perplexity",
    "ORDERS", "SAMPLING_METHODS", "RADDSampleResult", "draw_reveal_steps", "expected_nfe", "ordered_sample",
    "reveal_probabilities", "tau_leaping_sample",
    "GeometricSchedule", "LogLinearSchedule", "concrete_score", "concrete_score_error", "conditional_logits",
    "is_time_conditioned", "noise_rate", "noisy_marginal", "resolve_schedule", "score_scale",
]
