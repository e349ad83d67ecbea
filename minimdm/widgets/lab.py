"""The unmasking lab: type a prompt, choose how to sample, press Generate, and step through the run.

    from minimdm import load_pretrained
    from minimdm.widgets import UnmaskingLab
    UnmaskingLab(load_pretrained("shakespeare-char"), prompt="ROMEO:\\n")

Every control feeds one call of a sampler from the package, which records its history (``SampleResult``):

* ``random`` / ``low-confidence`` / ``low-confidence, EOS/EoT last``: LLaDA's sampler (arXiv 2502.09992, §2.4)
  with its remasking strategies, semi-autoregressive blocks, temperature and unsupervised classifier-free
  guidance (SMDM, arXiv 2410.18514); ``EOS/EoT last`` commits end-of-text and end-of-turn proposals after all
  the others;
* ``RADD cached``: RADD's tau-leaping sampler with its cache (arXiv 2406.03736): a row calls the network only at
  the steps where it reveals something, so its network calls are fewer than its steps;
* ``exact oracle``: for a toy from ``minimdm.toys`` (whose conditionals are exact), any-order autoregressive
  decoding in a random order, one token per call: exact samples of the toy's law.

Two strategies run side by side on the same seed. A masked cell shows, faintly, the model's current top proposal
and its probability (hover); a committed cell is coloured by the model's probability of the token when it was
committed; a heat map shows the order in which positions were committed.
"""
from __future__ import annotations

import html
import time

import torch

from minimdm.mdm.sampler import SampleResult, generate
from minimdm.widgets.player import commit_order_html, frame_html, legend_html

LLADA_STRATEGIES = {
    "random": dict(remasking="random"),
    "low-confidence": dict(remasking="low_confidence"),
    # commits EOS / EoT proposals after all others and leaves the other scores alone (the sampler's eos_eot_last,
    # not LLaDA's confidence_eos_eot_inf, which also renormalises them)
    "low-confidence, EOS/EoT last": dict(remasking="low_confidence", eos_eot_last=True),
}
RADD = "RADD cached (tau-leaping)"
EXACT = "exact oracle (toy: any-order AR)"
NONE = "(none)"
MAX_TEMPERATURE, MAX_GUIDANCE = 2.0, 4.0  # the sliders' ranges (both start at 0)


class _Letters:
    """The toys' tokens as letters a, b, c, ... (a toy has no tokenizer of its own)."""

    def __init__(self, vocab_size: int):
        self.alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"[:vocab_size]
        if len(self.alphabet) < vocab_size:
            raise ValueError(f"a toy with vocab_size={vocab_size} has too many tokens to show as letters (at most 36)")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.alphabet))
        if unknown:
            raise ValueError(f"the prompt may only use the letters {self.alphabet!r}, not {unknown}")
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(self.alphabet[i] for i in ids if 0 <= i < self.vocab_size)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def attach_proposals(result: SampleResult, denoiser) -> SampleResult:
    """Fill ``proposals`` / ``proposal_probs`` after the fact (for samplers that do not record them): one batched
    call of a time-free network on every frame gives the top proposal it would make at each masked cell."""
    from minimdm.mdm.denoiser import logits_of

    frames = torch.cat(result.frames)  # (frames * B, L)
    with torch.no_grad():
        probs = torch.softmax(logits_of(denoiser, frames.to(_device_of(denoiser))).double(), -1).cpu()
    top_probability, top_token = probs.max(-1)
    masked = frames == result.mask_id
    top_token = top_token.masked_fill(~masked, -1)
    top_probability = top_probability.float().masked_fill(~masked, float("nan"))
    B = result.frames[0].shape[0]
    result.proposals = list(top_token.split(B))
    result.proposal_probs = list(top_probability.split(B))
    return result


def _device_of(denoiser):
    from minimdm.mdm.denoiser import device_of

    return device_of(denoiser)


class UnmaskingLab:
    """An ipywidgets lab around one model (a ``Pretrained``, a minimdm Transformer + tokenizer, or a toy).

    Drive it from Python as from the browser: set a control's ``.value``, then ``generate_button.click()`` (or
    ``run()``); ``results`` holds the sampler outputs of the panels, ``texts`` their decoded answers, ``frame(k)``
    the HTML of step k. Display it by leaving it as a cell's last expression (or ``display(lab.widget)``).
    """

    def __init__(self, model, tokenizer=None, *, token_text=None, prompt: str = "", chat: bool | None = None,
                 gen_length: int = 64, steps: int = 32, block_length: int | None = None,
                 strategy: str = "low-confidence", compare: str | None = None, temperature: float = 0.0,
                 cfg_scale: float = 0.0, seed: int = 0, eos_id: int | None = None, eot_id: int | None = None,
                 max_length: int | None = None, interval_ms: int = 120):
        import ipywidgets as widgets

        if hasattr(model, "model") and hasattr(model, "tokenizer"):  # a Pretrained from minimdm.load_pretrained
            tokenizer = model.tokenizer if tokenizer is None else tokenizer
            token_text = model.token_text if token_text is None else token_text
            model = model.model
        self.is_toy = hasattr(model, "oracle_denoiser")
        if self.is_toy:
            self.toy = model
            self.mask_id = model.vocab_size
            self.denoiser = model.oracle_denoiser()
            tokenizer = tokenizer or _Letters(model.vocab_size)
            fixed = getattr(model, "length", None)  # an enumerable joint has one length
            max_length = max_length or fixed or 256
        else:
            if tokenizer is None:
                raise ValueError("tokenizer is required for a trained model (anything with encode and decode)")
            self.mask_id = model.mask_id
            self.denoiser = model.eval()
            max_length = max_length or model.config.max_len
        self.tokenizer = tokenizer
        self.token_text = token_text or (lambda i: tokenizer.decode([i]))
        self.chat = hasattr(tokenizer, "role_ids") if chat is None else chat
        self.eos_id = getattr(tokenizer, "eos_id", None) if eos_id is None else eos_id
        self.eot_id = getattr(tokenizer, "eot_id", None) if eot_id is None else eot_id
        self.max_length = max_length
        self.strategies = [name for name in LLADA_STRATEGIES if "EOS" not in name or self.eos_id is not None]
        time_free = not getattr(getattr(model, "config", None), "time_cond", False)
        if time_free:
            self.strategies.append(RADD)
        if self.is_toy:
            self.strategies.append(EXACT)
        for name, value in (("strategy", strategy), ("compare", compare)):
            if value not in self.strategies and not (name == "compare" and value in (None, NONE)):
                raise ValueError(f"{name}={value!r}: allowed values for this model are {self.strategies}")
        if gen_length < 1 or gen_length > max_length:
            raise ValueError(f"gen_length={gen_length} must lie in 1..{max_length} (the model's context)")
        # refused rather than clamped by the sliders; more steps than tokens still means one token per step
        if steps < 1:
            raise ValueError(f"steps={steps} must be at least 1")
        for name, value, high in (("temperature", temperature, MAX_TEMPERATURE),
                                  ("cfg_scale", cfg_scale, MAX_GUIDANCE)):
            if not 0.0 <= value <= high:
                raise ValueError(f"{name}={value} must lie in 0.0..{high} (the range of its slider)")

        style = {"description_width": "8em"}
        self.prompt_box = widgets.Textarea(value=prompt, description="prompt", layout={"width": "36em", "height": "4em"},
                                           style=style)
        self.strategy_menu = widgets.Dropdown(options=self.strategies, value=strategy, description="strategy", style=style)
        self.compare_menu = widgets.Dropdown(options=[NONE] + self.strategies, value=compare or NONE,
                                             description="side by side", style=style)
        self.length_slider = widgets.IntSlider(value=gen_length, min=1, max=max_length, description="answer length",
                                               style=style, continuous_update=False)
        self.steps_slider = widgets.IntSlider(value=min(steps, gen_length), min=1, max=gen_length, description="steps",
                                              style=style, continuous_update=False)
        block = gen_length if block_length is None else block_length
        if block < 1 or gen_length % block:
            raise ValueError(f"block_length={block_length} must be one of {_divisors(gen_length)} "
                             f"(the divisors of gen_length={gen_length})")
        self.block_menu = widgets.Dropdown(options=_divisors(gen_length), value=block, description="block length",
                                           style=style)
        self.temperature_slider = widgets.FloatSlider(value=temperature, min=0.0, max=MAX_TEMPERATURE, step=0.1,
                                                      description="temperature", style=style, continuous_update=False)
        self.guidance_slider = widgets.FloatSlider(value=cfg_scale, min=0.0, max=MAX_GUIDANCE, step=0.5,
                                                   description="guidance w", style=style, continuous_update=False)
        self.seed_box = widgets.IntText(value=seed, description="seed", style=style, layout={"width": "16em"})
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.play = widgets.Play(value=0, min=0, max=1, step=1, interval=interval_ms, description="play")
        self.step_slider = widgets.IntSlider(value=0, min=0, max=1, description="step", continuous_update=True)
        self.back_button = widgets.Button(description="◀", layout={"width": "3em"}, tooltip="one step back")
        self.forward_button = widgets.Button(description="▶", layout={"width": "3em"}, tooltip="one step forward")
        self.status = widgets.HTML()
        self.panels = [widgets.HTML(), widgets.HTML()]
        self.heatmaps = [widgets.HTML(), widgets.HTML()]
        for widget, name in ((self.prompt_box, "mdm-prompt"), (self.generate_button, "mdm-generate"),
                             (self.play, "mdm-play"), (self.step_slider, "mdm-step"), (self.status, "mdm-status"),
                             (self.back_button, "mdm-back"), (self.forward_button, "mdm-forward")):
            widget.add_class(name)
        widgets.link((self.play, "value"), (self.step_slider, "value"))
        self.generate_button.on_click(lambda _: self.run())
        self.back_button.on_click(lambda _: self._move(-1))
        self.forward_button.on_click(lambda _: self._move(+1))
        self.step_slider.observe(lambda change: self._show(change["new"]), names="value")
        self.length_slider.observe(self._length_changed, names="value")
        self.strategy_menu.observe(lambda _: self._enable_controls(), names="value")
        self.compare_menu.observe(lambda _: self._enable_controls(), names="value")

        columns = [widgets.VBox([widgets.HTML(), self.panels[i], self.heatmaps[i]],
                                layout={"width": "50%", "padding": "0 8px"}) for i in range(2)]
        self.columns = columns
        self.widget = widgets.VBox([
            self.prompt_box,
            widgets.HBox([widgets.VBox([self.strategy_menu, self.compare_menu, self.seed_box]),
                          widgets.VBox([self.length_slider, self.steps_slider, self.block_menu]),
                          widgets.VBox([self.temperature_slider, self.guidance_slider, self.generate_button])]),
            widgets.HBox([self.back_button, self.play, self.forward_button, self.step_slider]),
            self.status,
            widgets.HBox(columns),
            widgets.HTML(legend_html()),
        ])
        self.widget.add_class("mdm-lab")
        self.results: list[SampleResult] = []
        self.runs = 0  # how many times Generate has run (shown in the status line)
        self.seconds = 0.0
        self._enable_controls()
        self.run()

    # ---- what the controls mean --------------------------------------------------------------------------
    def _selected(self) -> list[str]:
        compare = self.compare_menu.value
        return [self.strategy_menu.value] + ([compare] if compare != NONE else [])

    def _llada_selected(self) -> bool:
        """Whether a selected strategy is LLaDA's sampler, the one that reads blocks, guidance and temperature."""
        return any(s in LLADA_STRATEGIES for s in self._selected())

    def _enable_controls(self) -> None:
        """Grey out what no selected strategy reads (RADD has no blocks or guidance; the exact sampler no steps)."""
        llada = self._llada_selected()
        self.block_menu.disabled = self.guidance_slider.disabled = self.temperature_slider.disabled = not llada
        self.steps_slider.disabled = all(s == EXACT for s in self._selected())

    def _length_changed(self, change) -> None:
        length = change["new"]
        self.steps_slider.max = length
        old_block = self.block_menu.value
        options = _divisors(length)
        self.block_menu.options = options
        self.block_menu.value = min(options, key=lambda d: (abs(d - old_block), -d))

    def prompt_ids(self) -> list[int]:
        text = self.prompt_box.value
        if self.chat:
            from minimdm.mdm.sft import ChatTemplate

            return ChatTemplate.from_tokenizer(self.tokenizer).prompt([{"role": "user", "content": text}])
        return self.tokenizer.encode(text)

    def settings(self) -> dict:
        """The current controls as sampler settings (steps rounded to a multiple of the number of blocks when a
        LLaDA strategy reads the blocks; a greyed-out block length changes nothing)."""
        gen_length, block = self.length_slider.value, self.block_menu.value
        blocks = gen_length // block if self._llada_selected() else 1
        steps = max(blocks, round(self.steps_slider.value / blocks) * blocks)
        return dict(gen_length=gen_length, steps=steps, block_length=block, temperature=self.temperature_slider.value,
                    cfg_scale=self.guidance_slider.value, seed=self.seed_box.value)

    def sample(self, strategy: str, prompt: torch.Tensor, settings: dict) -> SampleResult:
        """One run of one strategy on the prompt (1, P) with the settings, its history recorded."""
        device = _device_of(self.denoiser)
        generator = torch.Generator(device=device).manual_seed(settings["seed"])
        prompt = prompt.to(device)
        canvas = torch.cat([prompt, torch.full((1, settings["gen_length"]), self.mask_id, dtype=torch.long,
                                               device=device)], 1)
        if strategy in LLADA_STRATEGIES:
            options = dict(LLADA_STRATEGIES[strategy])
            if options.get("eos_eot_last"):
                options.update(eos_id=self.eos_id, eot_id=self.eot_id)
            return generate(self.denoiser, prompt, gen_length=settings["gen_length"], steps=settings["steps"],
                            block_length=settings["block_length"], mask_id=self.mask_id,
                            temperature=settings["temperature"], cfg_scale=settings["cfg_scale"], generator=generator,
                            record_history=True, **options)
        from minimdm.radd.sampling import ordered_sample, tau_leaping_sample

        if strategy == RADD:
            result = tau_leaping_sample(self.denoiser, steps=settings["steps"], mask_id=self.mask_id, canvas=canvas,
                                        cache=True, generator=generator)
        else:  # EXACT
            result = ordered_sample(self.denoiser, mask_id=self.mask_id, canvas=canvas, order="random",
                                    generator=generator)
        result.prompt_length = prompt.shape[1]
        return attach_proposals(result, self.denoiser)

    # ---- generate and show -------------------------------------------------------------------------------
    def run(self) -> list[SampleResult]:
        """Generate with the current controls (what the Generate button does); returns the panels' results."""
        try:
            prompt = torch.tensor([self.prompt_ids()], dtype=torch.long)
            settings = self.settings()
            if prompt.shape[1] == 0:  # no prompt: guidance's unconditional input is the conditional one, so it
                settings["cfg_scale"] = 0.0  # would change nothing but double the network calls
            if prompt.shape[1] + settings["gen_length"] > self.max_length:
                raise ValueError(f"prompt ({prompt.shape[1]} tokens) + answer length ({settings['gen_length']}) exceeds "
                                 f"the model's context of {self.max_length}: shorten one of them")
        except ValueError as error:
            self.status.value = f"<span style='color:#b00020'>{html.escape(str(error))}</span>"
            return self.results
        start = time.perf_counter()
        self.results = [self.sample(strategy, prompt, settings) for strategy in self._selected()]
        self.seconds = time.perf_counter() - start
        self.settings_used, self.strategies_used = settings, self._selected()
        last = max(len(r.frames) for r in self.results) - 1
        self.play.value = 0
        self.step_slider.max = self.play.max = max(last, 1)
        for i, column in enumerate(self.columns):  # one run takes the whole width, two share it
            column.layout.display = None if i < len(self.results) else "none"
            column.layout.width = "100%" if len(self.results) == 1 else "50%"
        for i, (result, strategy) in enumerate(zip(self.results, self.strategies_used)):
            self.columns[i].children[0].value = (f"<b>{html.escape(strategy)}</b> &nbsp; <span style='color:#555'>"
                                                 f"{result.nfe} network calls, {len(result.frames) - 1} steps</span>")
            self.heatmaps[i].value = commit_order_html(result, self.token_text, 0, self._blocks_of(strategy))
        self.runs += 1
        # the steps that ran (the exact oracle takes one per token whatever the slider says)
        steps = " and ".join(dict.fromkeys(str(len(r.frames) - 1) for r in self.results))
        self.status.value = (f"<span style='font-family:sans-serif;font-size:12px;color:#555'>run {self.runs}: generated in "
                             f"{self.seconds:.2f} s ({steps} steps, length {settings['gen_length']}, "
                             f"seed {settings['seed']})</span>")
        self._show(0)
        return self.results

    def _blocks_of(self, strategy: str) -> int | None:
        return self.settings_used["block_length"] if strategy in LLADA_STRATEGIES else None

    def frame(self, step: int, panel: int = 0) -> str:
        """HTML of one panel at one step (a panel with fewer steps shows its last frame)."""
        result = self.results[panel]
        step = min(step, len(result.frames) - 1)
        return frame_html(result, step, self.token_text, 0, self._blocks_of(self.strategies_used[panel]))

    def _show(self, step: int) -> None:
        for i in range(len(self.results)):
            self.panels[i].value = self.frame(step, i)

    def _move(self, delta: int) -> None:
        self.step_slider.value = min(max(self.step_slider.value + delta, 0), self.step_slider.max)

    @property
    def texts(self) -> list[str]:
        """The generated part of each panel, decoded."""
        return [self.tokenizer.decode(r.tokens[0, r.prompt_length:].tolist()) for r in self.results]

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
