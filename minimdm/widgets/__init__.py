"""Watch a masked diffusion model write: the player over a stored run, the live unmasking lab, a static figure.

* ``show_unmasking(result, token_text)``: Play / slider over a sampler's recorded frames;
* ``UnmaskingLab(model_or_pretrained)``: type a prompt, pick strategies and settings, Generate, step through;
* ``plot_unmasking(result, token_text)``: the same frames as a static matplotlib figure (reads on GitHub).
"""
from minimdm.widgets.player import (commit_order_html, commit_steps, frame_html, legend_html, plot_unmasking,
                                    show_unmasking)

__all__ = ["UnmaskingLab", "commit_order_html", "commit_steps", "frame_html", "legend_html", "plot_unmasking",
           "show_unmasking"]


def __getattr__(name):  # the lab pulls in the samplers and ipywidgets only when asked for
    if name == "UnmaskingLab":
        from minimdm.widgets.lab import UnmaskingLab

        return UnmaskingLab
    raise AttributeError(f"module 'minimdm.widgets' has no attribute {name!r}")
