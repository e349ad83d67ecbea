"""Argument checks shared across the package: a clear error that names the argument, not a failure deep in torch."""
from __future__ import annotations

import math
import numbers


def is_integer(value) -> bool:
    """A Python or NumPy integer; not a bool, and not a float that happens to be whole (it fails later in range())."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> None:
    """Counts (steps, lengths, batch sizes) must be integers >= 1."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def is_finite_number(value) -> bool:
    """A real number that is neither nan nor infinite (nan passes every comparison check silently)."""
    return isinstance(value, numbers.Real) and math.isfinite(value)
