"""Draw a sampler's history: HTML frames for the player and the lab, a static figure for GitHub readers.

One colour code everywhere (``legend_html`` and the static figure's legend say it in words):

* the prompt: bold text on white;
* a masked cell: a grey box drawn with CSS (fonts vary: no special glyph), with the model's current top proposal
  written faintly inside it, fainter when the model is less sure of it;
* a token committed at this step: yellow;
* a token committed earlier: blue, darker when the model gave it a higher probability at the moment it was
  committed (under every remasking strategy this is the model's probability, never the random number that chose
  the position);
* a block boundary (semi-autoregressive sampling): an orange bar.

The history comes from ``SampleResult`` (``frames``, ``confidences``, and ``proposals`` / ``proposal_probs`` when
the sampler recorded them), so scrubbing never runs the model.
"""
from __future__ import annotations

import html
import math

import matplotlib.pyplot as plt
import numpy as np

MASK_GREY, MASK_EDGE = "#d9d9d9", "#b3b3b3"
NEW_YELLOW = "#ffd54f"
COMMITTED_RGB = (33, 110, 220)
BLOCK_ORANGE = "#e65100"
MASK_BOX = ('<span style="display:inline-block;width:0.62em;height:1.05em;margin:0 1px;vertical-align:middle;'
            f'background:{MASK_GREY};border:1px solid {MASK_EDGE};border-radius:2px"></span>')
BLOCK_BAR = (f'<span class="mdm-block-edge" style="display:inline-block;width:2px;height:1.3em;margin:0 2px;'
             f'vertical-align:middle;background:{BLOCK_ORANGE}"></span>')


def committed_alpha(probability: float) -> float:
    """Opacity of a committed token's blue: 0.12 (probability 0) to 0.62 (probability 1)."""
    return 0.12 + 0.5 * probability


def proposal_alpha(probability: float) -> float:
    """Opacity of the faint proposal written in a masked cell: 0.2 (unsure) to 0.6 (sure)."""
    return 0.2 + 0.4 * probability


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _visible_text(text: str) -> str:
    return html.escape(text).replace(" ", "&nbsp;").replace("\n", "↵")


def block_starts(prompt_length: int, length: int, block_length: int | None) -> set[int]:
    """Positions where a new block starts (the first block's start excluded): where a boundary is drawn."""
    if not block_length or block_length >= length - prompt_length:
        return set()
    return set(range(prompt_length + block_length, length, block_length))


def _proposal(result, step: int, row: int, position: int):
    if len(result.proposals) <= step:
        return None, None
    token = int(result.proposals[step][row, position])
    return (token, _number(result.proposal_probs[step][row, position])) if token >= 0 else (None, None)


def frame_html(result, step: int, token_text=str, row: int = 0, block_length: int | None = None) -> str:
    """One frame of the history as HTML (a header line, then one cell per position)."""
    frame = result.frames[step][row]
    previous = result.frames[max(step - 1, 0)][row]
    confidence = result.confidences[step][row]
    mask_id = result.mask_id
    edges = block_starts(result.prompt_length, frame.shape[0], block_length)
    pieces = []
    for position, token in enumerate(frame.tolist()):
        if position in edges:
            pieces.append(BLOCK_BAR)
        if position < result.prompt_length:
            pieces.append(f"<b>{_visible_text(token_text(token))}</b>")
        elif token == mask_id:
            guess, probability = _proposal(result, step, row, position)
            if guess is None:
                pieces.append(MASK_BOX)
            else:
                pieces.append(
                    f'<span class="mdm-mask" title="masked; top proposal {html.escape(repr(token_text(guess)))} '
                    f'(p = {probability:.2f})" style="display:inline-block;min-width:0.62em;margin:0 1px;'
                    f'background:{MASK_GREY};border:1px solid {MASK_EDGE};border-radius:2px;line-height:1.15;'
                    f'color:rgba(0,0,0,{proposal_alpha(probability):.2f})">{_visible_text(token_text(guess))}</span>')
        else:
            text = _visible_text(token_text(token))
            probability = _number(confidence[position])
            shown = 1.0 if probability is None else probability
            if step > 0 and int(previous[position]) == mask_id:
                style = f"background:{NEW_YELLOW};font-weight:bold"
            else:
                style = f"background:rgba({COMMITTED_RGB[0]},{COMMITTED_RGB[1]},{COMMITTED_RGB[2]},{committed_alpha(shown):.2f})"
            pieces.append(f'<span title="model probability {shown:.2f}" style="{style};margin:0 1px">{text}</span>')
    masked = int((frame[result.prompt_length:] == mask_id).sum())
    header = (f"<div style='font-family:sans-serif;font-size:12px;color:#555'>step {step} / {len(result.frames) - 1}"
              f" &nbsp; still masked: {masked}</div>")
    return (f"<div class='mdm-frame' data-step='{step}'>" + header +
            "<div style='font-family:monospace;font-size:15px;line-height:1.9;max-width:62em'>" + "".join(pieces) +
            "</div></div>")


def _swatch(style: str, text: str = "&nbsp;") -> str:
    return f'<span style="display:inline-block;min-width:0.9em;margin:0 3px;padding:0 2px;{style}">{text}</span>'


def legend_html() -> str:
    """The colour code in words, as one line of HTML (the static figure draws the same legend)."""
    blues = "".join(_swatch(f"background:rgba({COMMITTED_RGB[0]},{COMMITTED_RGB[1]},{COMMITTED_RGB[2]},"
                            f"{committed_alpha(p):.2f})") for p in (0.0, 0.5, 1.0))
    items = [
        _swatch("font-weight:bold", "ab") + "prompt",
        _swatch(f"border:1px solid {MASK_EDGE};border-radius:2px;color:rgba(0,0,0,0.4);background:{MASK_GREY}", "e")
        + "masked (faint: the model's top proposal, darker = surer)",
        _swatch(f"background:{NEW_YELLOW};font-weight:bold") + "committed at this step",
        blues + "committed earlier (model's probability 0 → 1)",
        BLOCK_BAR + "block boundary",
    ]
    return ("<div class='mdm-legend' style='font-family:sans-serif;font-size:12px;color:#333;margin:4px 0'>"
            + " &nbsp; ".join(items) + "</div>")


def commit_steps(result, row: int = 0) -> np.ndarray:
    """For each position, the step at which it was committed (0: visible from the start, e.g. the prompt)."""
    frames = np.stack([frame[row].numpy() for frame in result.frames])  # (steps + 1, L)
    masked = frames == result.mask_id
    return masked.sum(0)  # a position masked in frames 0..k-1 and visible from frame k was committed at step k


def commit_order_html(result, token_text=str, row: int = 0, block_length: int | None = None) -> str:
    """The commit-order heat map: each generated token coloured by the step that committed it (early = dark)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    steps = commit_steps(result, row)
    last = max(len(result.frames) - 1, 1)
    cmap = colormaps["viridis"]
    frame = result.frames[-1][row].tolist()
    edges = block_starts(result.prompt_length, len(frame), block_length)
    cells = []
    for position in range(result.prompt_length, len(frame)):
        if position in edges:
            cells.append(BLOCK_BAR)
        fraction = steps[position] / last
        colour = to_hex(cmap(fraction))
        ink = "white" if fraction < 0.6 else "black"
        text = "" if frame[position] == result.mask_id else _visible_text(token_text(frame[position]))
        cells.append(f'<span title="committed at step {steps[position]}" style="display:inline-block;min-width:0.62em;'
                     f'margin:0 1px;background:{colour};color:{ink}">{text}</span>')
    gradient = ", ".join(to_hex(cmap(x)) for x in np.linspace(0, 1, 6))
    scale = (f"<div style='font-family:sans-serif;font-size:11px;color:#555'>commit order: step 1 "
             f"<span style='display:inline-block;width:8em;height:0.8em;background:linear-gradient(to right, {gradient})'>"
             f"</span> step {last}</div>")
    return ("<div class='mdm-heatmap'>" + scale + "<div style='font-family:monospace;font-size:13px;line-height:1.7;"
            "max-width:62em'>" + "".join(cells) + "</div></div>")


def show_unmasking(result, token_text=str, row: int = 0, interval_ms: int = 150, block_length: int | None = None):
    """Play / slider / frame / legend: the unmasking process of one sample (``widgets.link`` also works in Colab)."""
    import ipywidgets as widgets

    last = len(result.frames) - 1
    play = widgets.Play(value=0, min=0, max=last, step=1, interval=interval_ms, description="play")
    slider = widgets.IntSlider(value=0, min=0, max=last, description="step", continuous_update=True)
    widgets.link((play, "value"), (slider, "value"))
    view = widgets.HTML(frame_html(result, 0, token_text, row, block_length))
    slider.observe(lambda change: setattr(view, "value", frame_html(result, change["new"], token_text, row, block_length)),
                   names="value")
    return widgets.VBox([widgets.HBox([play, slider]), view, widgets.HTML(legend_html())])


def draw_legend(fig) -> None:
    """The legend of ``legend_html`` for a matplotlib figure (below the panels)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    blue = tuple(c / 255 for c in COMMITTED_RGB)
    handles = [
        Patch(facecolor="white", edgecolor="#999999", label="prompt (not drawn: only the answer is)"),
        Patch(facecolor=MASK_GREY, edgecolor=MASK_EDGE, label="masked (faint: model's top proposal)"),
        Patch(facecolor=NEW_YELLOW, label="committed at this step"),
        Patch(facecolor=(*blue, committed_alpha(0.2)), label="committed earlier, model prob. low"),
        Patch(facecolor=(*blue, committed_alpha(1.0)), label="committed earlier, model prob. high"),
        Line2D([0], [0], color=BLOCK_ORANGE, lw=2, label="block boundary"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)


def plot_unmasking(result, token_text=str, row: int = 0, steps=None, width: int = 64, title: str | None = None,
                   block_length: int | None = None, legend: bool = True):
    """Static fallback (reads well on GitHub): chosen frames as grids of cells, in the colours of the player."""
    last = len(result.frames) - 1
    steps = steps if steps is not None else sorted({0, last // 4, last // 2, (3 * last) // 4, last})
    canvas = result.frames[0][row]
    mask_id = result.mask_id
    generated = range(result.prompt_length, canvas.shape[0])
    edges = block_starts(result.prompt_length, canvas.shape[0], block_length)
    lines = (len(generated) + width - 1) // width
    cell_inches = 0.16
    legend_inches = 0.55 if legend else 0.0
    fig, axes = plt.subplots(len(steps), 1, squeeze=False,
                             figsize=(max(width * cell_inches, 6.0),
                                      len(steps) * (lines * cell_inches + 0.3) + 0.3 + legend_inches))
    blue = tuple(c / 255 for c in COMMITTED_RGB)
    for ax, step in zip(axes[:, 0], steps):
        frame, previous = result.frames[step][row], result.frames[max(step - 1, 0)][row]
        confidence = result.confidences[step][row]
        for k, position in enumerate(generated):
            x, y = k % width, -(k // width)
            token = int(frame[position])
            if token == mask_id:
                color = MASK_GREY
                guess, probability = _proposal(result, step, row, position)
                text = "" if guess is None else token_text(guess).replace("\n", "↵")
                ink = (0, 0, 0, proposal_alpha(probability)) if guess is not None else "black"
            else:
                new = step > 0 and int(previous[position]) == mask_id
                probability = _number(confidence[position])
                color = NEW_YELLOW if new else (*blue, committed_alpha(1.0 if probability is None else probability))
                text, ink = token_text(token).replace("\n", "↵"), "black"
            ax.add_patch(plt.Rectangle((x, y), 0.92, 0.85, color=color, lw=0))
            if position in edges:
                ax.plot([x - 0.04, x - 0.04], [y - 0.05, y + 0.9], color=BLOCK_ORANGE, lw=1.5)
            if text:
                ax.text(x + 0.46, y + 0.42, text, ha="center", va="center", fontsize=7, family="monospace", color=ink)
        ax.set_xlim(-0.1, width)
        ax.set_ylim(-lines + 1, 1)
        ax.set_aspect("equal")  # square cells, one character each
        ax.axis("off")
        ax.set_title(f"step {step}", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    if legend:
        draw_legend(fig)
    fig.tight_layout(rect=(0, legend_inches / fig.get_size_inches()[1], 1, 1))
    return fig
