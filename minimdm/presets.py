"""One switch for size: every notebook and CLI run picks a preset here.

* ``quick`` -- ``MINIMDM_QUICK=1`` (CI and nbval): a smoke run of a few seconds.
* ``cpu``   -- no GPU: minutes on a 2-core laptop.
* ``gpu``   -- a CUDA device: at most about five minutes a notebook on one GPU.

``MINIMDM_PRESET=cpu|gpu|quick`` overrides the choice (e.g. to run the CPU preset on a GPU box), and
``MINIMDM_DEVICE=cpu|cuda`` overrides the device (e.g. ``MINIMDM_QUICK=1 MINIMDM_DEVICE=cuda`` smoke-tests the
GPU code paths in seconds).
"""
from __future__ import annotations

import os

import torch

PRESETS = ("quick", "cpu", "gpu")


def preset_name() -> str:
    forced = os.environ.get("MINIMDM_PRESET", "").strip().lower()
    if forced:
        if forced not in PRESETS:
            raise ValueError(f"MINIMDM_PRESET={forced!r}: allowed values are {PRESETS}")
        return forced
    if os.environ.get("MINIMDM_QUICK", "") not in ("", "0"):
        return "quick"
    return "gpu" if torch.cuda.is_available() else "cpu"


def pick(*, quick, cpu, gpu):
    """Return the value for the active preset: ``pick(quick=50, cpu=800, gpu=5000)``."""
    return {"quick": quick, "cpu": cpu, "gpu": gpu}[preset_name()]


def default_device() -> torch.device:
    forced = os.environ.get("MINIMDM_DEVICE", "").strip().lower()
    if forced:
        if forced not in ("cpu", "cuda"):
            raise ValueError(f"MINIMDM_DEVICE={forced!r}: allowed values are 'cpu' and 'cuda'")
        if forced == "cuda" and not torch.cuda.is_available():
            raise ValueError("MINIMDM_DEVICE='cuda' but torch sees no CUDA device: unset it or use 'cpu'")
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() and preset_name() == "gpu" else "cpu")


def describe() -> str:
    """The line every notebook prints first."""
    device = default_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return f"minimdm preset: {preset_name()} | device: {name} | torch {torch.__version__}"
