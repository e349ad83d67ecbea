"""Watch a masked diffusion model write: an ipywidgets player over a sampler's history, and a static figure.

The sampler already recorded every frame (``SampleResult.frames``) and the confidence of each committed
token, so the player only scrubs precomputed frames: dragging the slider never runs the model.

* masked positions: an empty grey box (drawn with CSS, not a glyph: fonts vary);
* tokens revealed at the current step: highlighted yellow;
* earlier tokens: shaded blue by the confidence they had when committed (darker = surer);
* the prompt: plain bold text.
"""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np

MASK_BOX = ('<span style="display:inline-block;width:0.62em;height:1.05em;margin:0 1px;vertical-align:middle;'
            'background:#d9d9d9;border:1px solid #b3b3b3;border-radius:2px"></span>')


def _visible_text(text: str) -> str:
    return html.escape(text).replace(" ", "&nbsp;").replace("\n", "↵")


def frame_html(result, step: int, token_text=str, row: int = 0) -> str:
    """One frame of the history as HTML."""
    frame = result.frames[step][row]
    previous = result.frames[max(step - 1, 0)][row]
    confidence = result.confidences[step][row]
    mask_id = result.mask_id
    pieces = []
    for position, token in enumerate(frame.tolist()):
        if position < result.prompt_length:
            pieces.append(f"<b>{_visible_text(token_text(token))}</b>")
        elif token == mask_id:
            pieces.append(MASK_BOX)
        else:
            text = _visible_text(token_text(token))
            conf = float(confidence[position]) if not np.isnan(float(confidence[position])) else 1.0
            if step > 0 and int(previous[position]) == mask_id:
                style = "background:#ffd54f;font-weight:bold"
            else:
                style = f"background:rgba(33,110,220,{0.12 + 0.5 * conf:.2f})"
            pieces.append(f'<span title="confidence {conf:.2f}" style="{style};margin:0 1px">{text}</span>')
    masked = int((frame[result.prompt_length:] == mask_id).sum())
    header = (f"<div style='font-family:sans-serif;font-size:12px;color:#555'>step {step} / {len(result.frames) - 1}"
              f" &nbsp; still masked: {masked}</div>")
    return header + "<div style='font-family:monospace;font-size:15px;line-height:1.9;max-width:62em'>" + "".join(pieces) + "</div>"


def show_unmasking(result, token_text=str, row: int = 0, interval_ms: int = 150):
    """Play / slider / frame: the unmasking process of one sample (``widgets.link`` also works in Colab)."""
    import ipywidgets as widgets

    last = len(result.frames) - 1
    play = widgets.Play(value=0, min=0, max=last, step=1, interval=interval_ms, description="play")
    slider = widgets.IntSlider(value=0, min=0, max=last, description="step", continuous_update=True)
    widgets.link((play, "value"), (slider, "value"))
    view = widgets.HTML(frame_html(result, 0, token_text, row))
    slider.observe(lambda change: setattr(view, "value", frame_html(result, change["new"], token_text, row)), names="value")
    return widgets.VBox([widgets.HBox([play, slider]), view])


def plot_unmasking(result, token_text=str, row: int = 0, steps=None, width: int = 64, title: str | None = None):
    """Static fallback (reads well on GitHub): chosen frames as grids of cells, masks grey, new tokens yellow."""
    last = len(result.frames) - 1
    steps = steps if steps is not None else sorted({0, last // 4, last // 2, (3 * last) // 4, last})
    canvas = result.frames[0][row]
    mask_id = result.mask_id
    generated = range(result.prompt_length, canvas.shape[0])
    lines = (len(generated) + width - 1) // width
    cell_inches = 0.16
    fig, axes = plt.subplots(len(steps), 1, squeeze=False,
                             figsize=(width * cell_inches, len(steps) * (lines * cell_inches + 0.3) + 0.3))
    for ax, step in zip(axes[:, 0], steps):
        frame, previous = result.frames[step][row], result.frames[max(step - 1, 0)][row]
        confidence = result.confidences[step][row]
        for k, position in enumerate(generated):
            x, y = k % width, -(k // width)
            token = int(frame[position])
            if token == mask_id:
                color, text = "#d9d9d9", ""
            else:
                new = step > 0 and int(previous[position]) == mask_id
                conf = float(confidence[position]) if not np.isnan(float(confidence[position])) else 1.0
                color = "#ffd54f" if new else (0.13, 0.43, 0.86, 0.12 + 0.5 * conf)
                text = token_text(token).replace("\n", "↵")
            ax.add_patch(plt.Rectangle((x, y), 0.92, 0.85, color=color, lw=0))
            if text:
                ax.text(x + 0.46, y + 0.42, text, ha="center", va="center", fontsize=7, family="monospace")
        ax.set_xlim(0, width)
        ax.set_ylim(-lines + 1, 1)
        ax.set_aspect("equal")  # square cells, one character each
        ax.axis("off")
        ax.set_title(f"step {step}", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
