"""Evaluate a module without changing the mode its caller left it in."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def evaluation_mode(model):
    """``model.eval()`` for the ``with`` block, then the mode it had (a plain function passes through untouched)."""
    if not hasattr(model, "eval"):
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
