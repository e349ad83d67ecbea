"""RoPE scaling for context extension: five variants behind one function, ``rope_scaling``.

RoPE (Su et al., arXiv 2104.09864, §3.2) rotates the channel pair i = 0..d/2-1 of a head of
dimension d by the angle m * theta_i at position m, with theta_i = b^(-2i/d). Pair i turns once every
P_i = 2 pi b^(2i/d) positions. A model trained on sequences of length T_train has seen, for every pair, only
the angles of the offsets it met; each variant below changes the angles so that a longer target length
T_target maps onto angles the model has (nearly) seen.

* ``"none"``      -- plain RoPE, lambda = 1 (direct extrapolation).
* ``"linear"``    -- position interpolation (Chen et al., arXiv 2306.15595, §2.3): positions are divided
  by s = T_target / T_train, so every offset lands inside the trained range (lambda = s).
* ``"ntk"``       -- classic NTK-aware scaling: the base becomes lambda b with lambda = (T_target/T_train)^(d/(d-2)),
  chosen so that the lowest-frequency pair is interpolated by exactly T_target/T_train while pair 0 is unchanged.
* ``"critical_ntk"`` -- the critical-dimension NTK of Liu et al. (*Scaling Laws of RoPE-based Extrapolation*, arXiv
  2310.05209), which LongLLaDA (Liu et al., arXiv 2506.14429) applies to LLaDA without training: only pairs whose period fits in the training length have
  turned a full circle in training; the first pair that has not sets the critical dimension
  d_crit = 2 ceil((d/2) log_b(T_train / 2 pi)), and the base is raised until that pair's period equals the target:
  lambda = b^(-1) (T_target / 2 pi)^(d / d_crit). A target inside that pair's period needs no raise; there the
  formula would give lambda < 1 (a faster rotation than training's), so lambda is held at 1.
* ``"diffusion_ntk"`` -- UltraLLaDA's diffusion-aware NTK (He et al., arXiv 2510.10481): a bidirectional
  model sees relative offsets of both signs, -T_train < m - n < T_train, a span of 2 T_train, so the critical
  dimension is computed from 2 T_train and the target from 2 T_target:
  d'_crit = 2 ceil((d/2) log_b(2 T_train / 2 pi)),  lambda' = b^(-1) (2 T_target / 2 pi)^(d / d'_crit).

The NTK family changes only the base, b' = lambda b, and position interpolation only the position scale: both
are fields of ``TransformerConfig`` (``rope_base``, ``rope_scale``), so ``apply_rope_scaling`` builds the same
network with new angles and the trained weights, and lambda = 1 gives plain RoPE bit for bit.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from minimdm.checks import is_finite_number, is_integer

VARIANTS = ("none", "linear", "ntk", "critical_ntk", "diffusion_ntk")
NTK_FAMILY = ("ntk", "critical_ntk", "diffusion_ntk")  # these scale the base; "linear" scales positions


def _check_head_dim(head_dim: int) -> None:
    if not is_integer(head_dim) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be an even integer >= 2 (RoPE rotates channel pairs)")


def _check_base(base: float) -> None:
    if not (math.isfinite(base) and base > 1):
        raise ValueError(f"base={base} must be a finite number > 1")


def _check_train_length(train_length: int) -> None:
    # nan (or a float that is not one) would give a nan base
    if not (is_finite_number(train_length) and train_length >= 1):
        raise ValueError(f"train_length={train_length} must be a positive integer")


def _check_lengths(train_length: int, target_length: int) -> None:
    _check_train_length(train_length)
    if not is_finite_number(target_length) or target_length < train_length:
        raise ValueError(f"target_length={target_length} must be >= train_length={train_length} (this extends context)")


def critical_dimension(head_dim: int, base: float, length: float) -> int:
    """d_crit = 2 ceil((d/2) log_b(length / 2 pi)): the first dimension whose pair has not turned a full circle
    within ``length`` positions (pairs below it have periods P_i = 2 pi b^(2i/d) <= length)."""
    _check_head_dim(head_dim)
    _check_base(base)
    if length <= 0:
        raise ValueError(f"length={length} must be > 0")
    pairs = math.ceil((head_dim / 2) * math.log(length / (2 * math.pi), base))
    return 2 * min(max(pairs, 1), head_dim // 2)  # at least one pair, at most all of them


def scaling_factor(variant: str, *, head_dim: int, base: float, train_length: int, target_length: int) -> float:
    """The lambda each variant's formula picks for extending ``train_length`` to ``target_length``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: allowed values are {VARIANTS}")
    _check_head_dim(head_dim)
    _check_lengths(train_length, target_length)
    ratio = target_length / train_length
    if variant == "none":
        return 1.0
    if variant == "linear":
        return ratio  # s = T_target / T_train (Chen et al. 2023, §2.3)
    if variant == "ntk":
        return ratio ** (head_dim / (head_dim - 2))  # classic NTK-aware: b' = b s^(d/(d-2))
    # The critical-dimension family: a causal model has seen offsets in [0, T), a bidirectional one in (-T, T).
    span = 1 if variant == "critical_ntk" else 2  # UltraLLaDA: T_cap = 2 T_train, T_Ecap = 2 T_target
    d_crit = critical_dimension(head_dim, base, span * train_length)
    # lambda = b^-1 (T/2pi)^(d/d_crit), at least 1: a target inside the critical pair's period needs no raise
    return max(1.0, (span * target_length / (2 * math.pi)) ** (head_dim / d_crit) / base)


@dataclass(frozen=True)
class RopeScaling:
    """What a variant does to RoPE: the new base b' and the position scale s (angles m theta_i -> (m/s) b'^(-2i/d))."""

    variant: str
    factor: float  # lambda
    base: float  # b' (lambda b for the NTK family, b otherwise)
    position_scale: float  # s (lambda for "linear", 1 otherwise)
    original_base: float  # b, the base the model was trained with
    critical_dim: int | None = None  # d_crit or d'_crit for the critical-dimension variants


def rope_scaling(variant: str, *, head_dim: int, base: float, train_length: int, target_length: int | None = None,
                 factor: float | None = None) -> RopeScaling:
    """One function for every variant: the formula's lambda for ``target_length``, or an explicit ``factor``.

    An explicit factor (the lambda sweep) is applied the variant's way: to the base for the NTK family, to the
    positions for "linear"; "none" accepts only factor 1.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: allowed values are {VARIANTS}")
    _check_head_dim(head_dim)
    _check_base(base)
    _check_train_length(train_length)
    if (target_length is None) == (factor is None):
        raise ValueError("pass exactly one of target_length (the formula picks lambda) and factor (lambda itself)")
    if factor is None:
        factor = scaling_factor(variant, head_dim=head_dim, base=base, train_length=train_length,
                                target_length=target_length)
    elif not (is_finite_number(factor) and factor > 0):
        raise ValueError(f"factor={factor} must be a finite number > 0 (lambda scales the base or the positions)")
    elif variant == "none" and factor != 1:
        raise ValueError(f"factor={factor}: variant 'none' is plain RoPE, lambda = 1")
    critical_dim = None
    if variant in ("critical_ntk", "diffusion_ntk"):
        critical_dim = critical_dimension(head_dim, base, (1 if variant == "critical_ntk" else 2) * train_length)
    return RopeScaling(variant=variant, factor=float(factor),
                       base=base * factor if variant in NTK_FAMILY else base,
                       position_scale=float(factor) if variant == "linear" else 1.0,
                       original_base=base, critical_dim=critical_dim)


def apply_rope_scaling(model, scaling: RopeScaling):
    """A copy of ``model`` (a ``minimdm.nn.Transformer``) with ``scaling``'s angles and the same weights.

    The rotation tables are buffers that are not saved, so the state dict carries over unchanged.
    """
    if scaling.original_base != model.config.rope_base or model.config.rope_scale != 1:
        raise ValueError(f"scaling was made for plain RoPE with base {scaling.original_base}; the model has "
                         f"rope_base={model.config.rope_base}, rope_scale={model.config.rope_scale}")
    config = dataclasses.replace(model.config, rope_base=scaling.base, rope_scale=scaling.position_scale)
    scaled = type(model)(config)
    scaled.load_state_dict(model.state_dict())
    first = next(model.parameters())
    return scaled.to(device=first.device, dtype=first.dtype).train(model.training)
