"""IsoFLOP fits: known exponents come back from synthetic points; the compute multiplier; a parallel sweep gives
the serial one's numbers and resumes; bad input."""
from dataclasses import replace

import numpy as np
import pytest

from minimdm.scaling import (compute_multiplier, fit_parabola, fit_power_law, fit_scaling, run_sweep,
                             steps_for_budget, sweep_for)


def synthetic_runs(kind, loss_coef, loss_exponent, params_coef, params_exponent, budgets, curvature=0.3):
    """IsoFLOP points from a known law: at budget C the loss is a parabola in log10 N with its vertex at
    (N*(C) = k C^c, L*(C) = a C^-b); the sizes straddle N*."""
    runs = []
    for budget in budgets:
        params_star = params_coef * budget**params_exponent
        loss_star = loss_coef * budget ** (-loss_exponent)
        for offset in (-0.6, -0.25, 0.1, 0.5):  # log10 N - log10 N*
            runs.append({"kind": kind, "budget": budget, "params": params_star * 10**offset,
                         "loss": loss_star + curvature * offset**2})
    return runs


BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)


def test_fit_recovers_known_exponents():
    runs = synthetic_runs("arm", 40.0, 0.064, 0.08, 0.62, BUDGETS)
    fit = fit_scaling(runs, "arm")
    assert fit.loss_exponent == pytest.approx(0.064, rel=1e-6)
    assert fit.loss_coef == pytest.approx(40.0, rel=1e-5)
    assert fit.params_exponent == pytest.approx(0.62, rel=1e-6)
    assert fit.params_coef == pytest.approx(0.08, rel=1e-4)
    assert all(optimum.from_vertex for optimum in fit.optima)


def test_compute_multiplier_of_a_shifted_law_is_the_shift():
    """An MDM whose L*(C) is the ARM's at C/16 needs exactly 16x the compute at every loss."""
    arm = fit_scaling(synthetic_runs("arm", 40.0, 0.06, 0.1, 0.6, BUDGETS), "arm")
    mdm_coef = 40.0 * 16**0.06  # a (C/16)^-b = (a 16^b) C^-b
    mdm = fit_scaling(synthetic_runs("mdm", mdm_coef, 0.06, 0.05, 0.6, BUDGETS), "mdm")
    for loss in (2.5, 3.0, 3.5):
        assert compute_multiplier(arm, mdm, loss) == pytest.approx(16.0, rel=1e-5)


def test_parabola_without_an_interior_minimum_falls_back_to_the_best_point():
    params, losses = [1e4, 3e4, 1e5], [3.0, 3.2, 3.5]  # monotone: the optimum is below the smallest size
    n_star, l_star, from_vertex = fit_parabola(params, losses)
    assert (n_star, l_star, from_vertex) == (pytest.approx(1e4), 3.0, False)


def test_a_vertex_is_not_trusted_when_the_lowest_loss_is_at_the_edge_of_the_sizes():
    # A parabola through these has its vertex between the two smallest sizes, but nothing measured shows the loss
    # rising below the smallest one: the grid does not bracket the optimum.
    params, losses = [1e4, 3e4, 1e5], [3.0, 3.01, 3.3]
    curvature, slope, _ = np.polyfit(np.log10(params), losses, 2)
    assert curvature > 0 and 4 < -slope / (2 * curvature) < np.log10(3e4)  # the vertex the old rule accepted
    assert fit_parabola(params, losses) == (pytest.approx(1e4), 3.0, False)
    assert fit_parabola(params[::-1], losses[::-1]) == (pytest.approx(1e4), 3.0, False)  # order of the points
    assert fit_parabola(params, [3.1, 3.0, 3.3])[2]  # bracketed: the vertex stands


def test_power_law_fit_is_exact_on_a_power_law():
    x = np.array([1.0, 10.0, 100.0])
    assert fit_power_law(x, 3.0 * x**0.5) == (pytest.approx(3.0), pytest.approx(0.5))


def test_steps_for_budget():
    assert steps_for_budget(1e12, flops_per_token=1e5, batch_size=16, seq_len=64) == round(1e12 / (1e5 * 1024))
    assert steps_for_budget(1.0, 1e5, 16, 64) == 1  # never zero steps


def test_parallel_sweep_equals_the_serial_one_and_resumes(tmp_path):
    sweep = replace(sweep_for("quick"), budgets=(1e8,), sizes=((1, 16, 2), (1, 24, 2)))
    serial = run_sweep(sweep, tmp_path / "serial.json", log=None)
    parallel = run_sweep(sweep, tmp_path / "parallel.json", jobs=2, log=None)
    def numbers(runs):
        return {run["key"]: (run["loss"], run["steps"]) for run in runs}

    assert len(serial) == 4 and numbers(parallel) == numbers(serial)
    assert run_sweep(sweep, tmp_path / "serial.json", log=None) == serial  # everything done: nothing retrained
    with pytest.raises(ValueError, match=r"results_path=.*other settings \(seq_len: 32 there, 16 now\)"):
        run_sweep(replace(sweep, base=replace(sweep.base, seq_len=16)), tmp_path / "serial.json", log=None)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"preset='tpu'.*allowed values"):
        sweep_for("tpu")
    with pytest.raises(ValueError, match="jobs=0"):
        run_sweep(sweep_for("quick"), jobs=0)
    with pytest.raises(ValueError, match="budget=0"):
        steps_for_budget(0, 1e5, 16, 64)
    with pytest.raises(ValueError, match="at least 3 model sizes"):
        fit_parabola([1e4, 2e4], [3.0, 2.9])
    with pytest.raises(ValueError, match="kind='mdm' has runs at 1 budget"):
        fit_scaling(synthetic_runs("mdm", 40.0, 0.06, 0.1, 0.6, BUDGETS[:1]), "mdm")
