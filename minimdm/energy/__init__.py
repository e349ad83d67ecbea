"""Masked diffusion as energy minimisation (Chen et al. 2025, arXiv 2509.13866).

The paper in four lines:

* a mask schedule alpha carries the all-mask law to the data law; a *weighted kinetic energy* prices the trip;
* the kinetic, conditional kinetic and geodesic energies differ only by constants (Thm 3.1, 3.2), so the
  intractable one is minimised through the one-token energy  E(alpha, gamma) = ∫ alpha'^2 / (gamma' alpha (1-alpha)) dtau;
* for a weight function gamma the minimiser is alpha* = sin^2(pi/2 * gamma), with value pi^2 (Thm 3.6);
* with gamma = I_tau(a, b), the Beta(a, b) CDF, every (a, b) is a sampling schedule for an already-trained MDM,
  and a 2-D grid search over (a, b) picks one for a given step budget (App. E.1).

Provenance: the energy definitions below are the course's *reconstruction* from the paper's statements (they
reproduce every constant the paper quotes), not a copy of the paper's printed equations; docs/energy_definitions.md
writes them out. Compare them with the paper before quoting them as its equations.

TIME. The paper runs tau from all-masked (tau = 0) to data (tau = 1); the course (LLaDA) runs t from data (t = 0)
to all-masked (t = 1). alpha means the same in both (the probability that a token is unmasked), only the clock is
reversed. The energies are written in paper time; the schedule objects handed to the sampler are in course time;
``paper_time`` is the one place that converts.

Modules: ``schedules`` (Beta-CDF weight, alpha*, the schedule object), ``energies`` (the three energies, the n = 1
minimiser), ``sampling`` (the Bernoulli sampler, prompt completion and its score), ``toy`` (the exact 5-token toy),
``search`` (the (a, b) grid).
"""
from minimdm.energy.schedules import BetaCDFSchedule, BetaWeight, check_beta_parameters, optimal_alpha, paper_time
from minimdm.energy.sampling import (SAMPLER_NAMES, SAMPLERS, bernoulli_generate, complete_prompts, completion_excess_nll, time_grid,
                                     unmask_probabilities)
from minimdm.energy.toy import (MaskedStates, exact_output_law, paper_toy_target, total_variation)
from minimdm.energy.energies import (TimeNodes, alpha_in_paper_time, conditional_kinetic_energy_density, energies,
                                     geodesic_energy_density, kinetic_energy_density, minimise_one_token_energy,
                                     one_token_energy, one_token_energy_density, time_quadrature,
                                     diverges, endpoint_exponents, integrate)
from minimdm.energy.search import BETA_GRID, beta_grid_search, best_on_grid
