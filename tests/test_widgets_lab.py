"""The unmasking lab: the sampler's history means what it says, and every control of the widget changes the run."""
import re

import pytest
import torch

from conftest import tiny_transformer
from minimdm.mdm.sampler import generate, guided_logits

STRATEGIES = {
    "random": dict(remasking="random"),
    "low_confidence": dict(remasking="low_confidence"),
    "low_confidence, EOS last": dict(remasking="low_confidence", confidence_eos_eot_inf=True, eos_id=0, eot_id=1),
    "random, EOS last": dict(remasking="random", confidence_eos_eot_inf=True, eos_id=0),
    "low_confidence, EOS suppressed": dict(remasking="low_confidence", logits_eos_inf=True, eos_id=0),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("temperature,cfg_scale,block_length", [(0.0, 0.0, 12), (1.0, 1.5, 4)])
def test_recorded_probabilities_equal_a_recomputation(name, temperature, cfg_scale, block_length):
    """confidences[k] at the tokens committed at step k = softmax(step k's logits)[token]; proposals[k] = argmax."""
    options = STRATEGIES[name]
    model = tiny_transformer(vocab_size=5, length=16)
    prompt = torch.randint(0, 5, (2, 4))
    result = generate(model, prompt, gen_length=12, steps=6, block_length=block_length, mask_id=5,
                      temperature=temperature, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(0), **options)
    assert len(result.frames) == len(result.confidences) == len(result.proposals) == len(result.proposal_probs) == 7
    prompt_mask = torch.zeros(2, 16, dtype=torch.bool)
    prompt_mask[:, :4] = True
    checked = 0
    for k in range(1, 7):
        before, after = result.frames[k - 1], result.frames[k]
        logits, _ = guided_logits(model, before, prompt_mask, 5, cfg_scale)
        if options.get("logits_eos_inf"):
            logits[..., 0] = -torch.inf
        probs = torch.softmax(logits.double(), -1)
        new = (before == 5) & (after != 5)
        expected = probs.gather(-1, after.clamp_max(4)[..., None]).squeeze(-1)
        assert torch.allclose(result.confidences[k][new].double(), expected[new], rtol=1e-6)
        assert torch.equal(result.confidences[k][~new & (before != 5)].isnan(), result.confidences[k - 1][~new & (before != 5)].isnan())
        masked = before == 5  # the proposal shown on frame k-1 is what step k's logits say
        top_probability, top_token = probs.max(-1)
        assert torch.equal(result.proposals[k - 1][masked], top_token[masked])
        assert torch.allclose(result.proposal_probs[k - 1][masked].double(), top_probability[masked], rtol=1e-6)
        assert bool((result.proposals[k - 1][~masked] == -1).all()) and bool(result.proposal_probs[k - 1][~masked].isnan().all())
        checked += int(new.sum())
    assert checked == 24  # every generated token of both rows was checked once
    assert bool((result.proposals[-1] == -1).all())  # nothing is masked in the last frame


def test_random_remasking_records_the_model_probability_not_the_draw():
    """A denoiser sure of token 0 with probability 0.8 everywhere: greedy random remasking commits token 0 at every
    position, and every recorded value must be 0.8 (uniform draws would spread over (0, 1))."""
    log_p = torch.log(torch.tensor([0.8, 0.1, 0.1]))

    def denoiser(x):
        return log_p.expand(*x.shape, 3).clone()

    result = generate(denoiser, None, gen_length=32, steps=8, mask_id=3, remasking="random", temperature=0.0,
                      batch_size=2, generator=torch.Generator().manual_seed(0))
    assert bool((result.tokens == 0).all())
    assert torch.allclose(result.confidences[-1], torch.full((2, 32), 0.8))
    assert torch.allclose(result.proposal_probs[0], torch.full((2, 32), 0.8))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_recording_the_history_changes_no_token(name):
    model = tiny_transformer(vocab_size=5, length=16)
    prompt = torch.randint(0, 5, (3, 4))
    runs = [generate(model, prompt, gen_length=12, steps=6, block_length=6, mask_id=5, temperature=1.0,
                     generator=torch.Generator().manual_seed(3), record_history=record, **STRATEGIES[name])
            for record in (True, False)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert runs[1].frames == runs[1].confidences == runs[1].proposals == runs[1].proposal_probs == []


# ---- the lab, driven from Python ---------------------------------------------------------------------------------

from minimdm.data.tokenizers import CharTokenizer  # noqa: E402
from minimdm.toys import MarkovChain  # noqa: E402
from minimdm.widgets import UnmaskingLab, commit_steps, plot_unmasking  # noqa: E402
from minimdm.widgets.lab import EXACT, RADD  # noqa: E402


def make_lab(**overrides):
    tokenizer = CharTokenizer(list("abcde"))
    settings = dict(prompt="abc", gen_length=16, steps=8, temperature=0.0, eos_id=0)
    settings.update(overrides)
    return UnmaskingLab(tiny_transformer(vocab_size=5, length=32), tokenizer, **settings)


def frames_of(lab, panel=0):
    return torch.stack(lab.results[panel].frames)


def run_with(lab, widget, value):
    widget.value = value
    lab.generate_button.click()  # what pressing the button does
    return frames_of(lab)


CONTROLS = {  # control -> a new value that must change the frames (from the defaults of make_lab)
    "prompt_box": "eeddc",
    "steps_slider": 4,
    "length_slider": 8,
    "block_menu": 4,
    "temperature_slider": 1.5,
    "guidance_slider": 3.0,
}


@pytest.mark.parametrize("control", list(CONTROLS))
def test_every_control_changes_what_is_generated(control):
    lab = make_lab()
    before = frames_of(lab)
    after = run_with(lab, getattr(lab, control), CONTROLS[control])
    assert before.shape != after.shape or not torch.equal(before, after)


@pytest.mark.parametrize("strategy", ["random", "low-confidence, EOS/EoT last", RADD])
def test_every_strategy_changes_what_is_generated(strategy):
    lab = make_lab(temperature=1.0)
    before = frames_of(lab)
    after = run_with(lab, lab.strategy_menu, strategy)
    assert not torch.equal(before, after)
    assert not bool((lab.results[0].tokens == lab.mask_id).any())


def test_the_seed_changes_a_random_run_and_repeats_it():
    lab = make_lab(temperature=1.0, strategy="random")
    first = frames_of(lab)
    assert not torch.equal(first, run_with(lab, lab.seed_box, 1))
    assert torch.equal(first, run_with(lab, lab.seed_box, 0))  # same seed, same run


def test_two_strategies_side_by_side_share_the_seed():
    lab = make_lab(temperature=1.0)
    alone = frames_of(lab)
    run_with(lab, lab.compare_menu, "random")
    assert len(lab.results) == 2 and torch.equal(frames_of(lab, 0), alone)
    random_alone = make_lab(temperature=1.0, strategy="random")
    assert torch.equal(frames_of(lab, 1), frames_of(random_alone))
    assert lab.panels[1].value == lab.frame(0, 1) and len(lab.texts) == 2


def test_play_and_the_step_buttons_move_through_the_frames():
    lab = make_lab()
    shown = [lab.panels[0].value]
    lab.forward_button.click()
    shown.append(lab.panels[0].value)
    assert lab.step_slider.value == 1 and shown[1] == lab.frame(1) != shown[0]
    lab.back_button.click()
    assert lab.step_slider.value == 0 and lab.panels[0].value == shown[0]
    lab.play.value = 5  # what the Play widget does in the browser, one value at a time
    assert lab.step_slider.value == 5 and lab.panels[0].value == lab.frame(5)
    lab.back_button.click()
    assert lab.step_slider.value == 4


def test_masked_cells_show_the_top_proposal_and_blocks_show_their_boundary():
    lab = make_lab(block_length=8)
    first = lab.frame(0)
    assert first.count('class="mdm-mask"') == 16 and "top proposal" in first
    assert first.count("mdm-block-edge") == 1  # 16 tokens in blocks of 8: one boundary
    assert lab.frame(8).count('class="mdm-mask"') == 0
    assert "background:#d9d9d9" not in lab.frame(8)  # CSS boxes, not a glyph: none left at the end


def test_commit_order_heat_map_counts_each_step():
    lab = make_lab(steps=8)
    steps = commit_steps(lab.results[0])
    P = lab.results[0].prompt_length
    assert bool((steps[:P] == 0).all())
    assert sorted(steps[P:].tolist()) == [k for k in range(1, 9) for _ in range(2)]  # two tokens per step
    assert "mdm-heatmap" in lab.heatmaps[0].value


def test_radd_panel_reuses_the_cache_and_greys_out_blocks_and_guidance():
    lab = make_lab(strategy=RADD, steps=16)
    result = lab.results[0]
    assert len(result.frames) == 17
    revealing = sum(bool((before != after).any()) for before, after in zip(result.frames, result.frames[1:]))
    assert result.nfe == revealing < 16  # the cache skips the steps that reveal nothing
    assert lab.block_menu.disabled and lab.guidance_slider.disabled and not lab.steps_slider.disabled
    masked = result.frames[0] == lab.mask_id
    assert torch.equal(result.proposals[0][masked] >= 0, masked[masked])  # proposals attached after the run


def test_the_exact_oracle_is_offered_for_a_toy_and_fills_one_token_per_step():
    chain = MarkovChain(vocab_size=6, seed=0)
    with pytest.raises(ValueError, match="allowed values"):
        make_lab(strategy=EXACT)  # a trained model has no exact oracle
    lab = UnmaskingLab(chain, prompt="ab", gen_length=10, strategy=EXACT, compare="random", temperature=1.0)
    exact = lab.results[0]
    assert len(exact.frames) == 11 and exact.nfe == 10 and lab.steps_slider.disabled is False
    assert not bool((exact.tokens == 6).any()) and lab.texts[0] and set(lab.texts[0]) <= set("abcdef")


def test_bad_input_is_reported_in_the_status_line_not_raised():
    lab = make_lab()
    previous = lab.results
    run_with(lab, lab.prompt_box, "xyz")
    assert "not in this tokenizer" in lab.status.value and lab.results is previous
    run_with(lab, lab.prompt_box, "a" * 20)
    assert "exceeds the model" in lab.status.value and "context of 32" in lab.status.value
    with pytest.raises(ValueError, match="gen_length"):
        make_lab(gen_length=40)


def test_the_static_figure_has_the_legend_and_the_proposals():
    lab = make_lab(block_length=8)
    fig = plot_unmasking(lab.results[0], lab.token_text, width=16, block_length=8)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("masked" in t for t in labels) and any("block boundary" in t for t in labels)
    faint = [t for t in fig.axes[0].texts if t.get_color() != "black"]
    assert len(faint) == 16  # step 0: every masked cell shows the model's top proposal


def test_a_greyed_out_block_length_changes_no_step_count():
    """16 tokens in blocks of 4: LLaDA rounds 6 steps to 8 (a multiple of 4 blocks); RADD has no blocks and runs 6."""
    lab = make_lab(block_length=4, steps=6)
    assert len(lab.results[0].frames) == 9
    run_with(lab, lab.strategy_menu, RADD)
    assert lab.block_menu.disabled and len(lab.results[0].frames) == 7
    assert torch.equal(frames_of(lab), frames_of(make_lab(strategy=RADD, steps=6)))  # the block length plays no part


def test_the_status_line_reports_the_steps_the_exact_oracle_ran():
    lab = UnmaskingLab(MarkovChain(vocab_size=6, seed=0), prompt="ab", gen_length=10, steps=4, strategy=EXACT)
    assert lab.steps_slider.disabled and "(10 steps," in lab.status.value  # one step per token, not the slider's 4


def test_constructor_values_outside_the_controls_are_refused():
    for bad, match in ((dict(block_length=0), r"block_length=0 must be one of \[1, 2, 4, 8, 16\]"),
                       (dict(block_length=-4), r"block_length=-4"), (dict(block_length=3), r"block_length=3"),
                       (dict(temperature=2.5), r"temperature=2.5 must lie in 0.0\.\.2.0"),
                       (dict(cfg_scale=5.0), r"cfg_scale=5.0 must lie in 0.0\.\.4.0"),
                       (dict(cfg_scale=-1.0), r"cfg_scale=-1.0"), (dict(steps=0), r"steps=0")):
        with pytest.raises(ValueError, match=match):
            make_lab(**bad)
    # more steps than tokens: one token per step (the notebooks and the toy test above rely on it)
    assert make_lab(steps=40).steps_slider.value == 16


def test_guidance_without_a_prompt_costs_no_network_call():
    """No prompt: the unconditional input is the conditional one, so guidance is skipped (it would only double the
    network calls)."""
    plain, guided = make_lab(prompt=""), make_lab(prompt="", cfg_scale=2.0)
    assert guided.results[0].nfe == plain.results[0].nfe == 8 and torch.equal(frames_of(guided), frames_of(plain))
    assert guided.settings_used["cfg_scale"] == 0.0
    assert make_lab(cfg_scale=2.0).results[0].nfe == 16  # with a prompt, guidance runs (two inputs a step)


@pytest.mark.parametrize("strategy", [RADD, EXACT])
def test_attached_proposals_are_the_models_top_token_and_its_probability(strategy):
    """Samplers that record no proposals get them after the run: at every frame k and masked cell, proposals[k] =
    argmax of the model's softmax on frame k and proposal_probs[k] = its maximum (1e-6); elsewhere -1 and NaN."""
    if strategy == RADD:
        lab = make_lab(strategy=RADD, steps=8)
    else:
        lab = UnmaskingLab(MarkovChain(vocab_size=6, seed=0), prompt="ab", gen_length=10, strategy=EXACT)
    result = lab.results[0]
    assert len(result.proposals) == len(result.proposal_probs) == len(result.frames)
    for k, frame in enumerate(result.frames):
        with torch.no_grad():
            probs = torch.softmax(lab.denoiser(frame).double(), -1)
        top_probability, top_token = probs.max(-1)
        masked = frame == lab.mask_id
        assert torch.equal(result.proposals[k][masked], top_token[masked]), k
        assert torch.allclose(result.proposal_probs[k][masked].double(), top_probability[masked], rtol=0, atol=1e-6)
        assert bool((result.proposals[k][~masked] == -1).all())
        assert bool(result.proposal_probs[k][~masked].isnan().all())
    assert bool((result.frames[0][:, result.prompt_length:] == lab.mask_id).all())  # frame 0 has proposals to check


def test_colour_intensity_grows_with_the_probability():
    """A committed token's blue has opacity 0.12 + 0.5 p and a proposal's ink 0.2 + 0.4 p (p as shown in its title):
    darker when the model is surer."""
    lab = make_lab(temperature=1.0, strategy="random")
    committed = [(float(p), float(a)) for step in range(9) for p, a in re.findall(
        r'title="model probability ([0-9.]+)" style="background:rgba\(33,110,220,([0-9.]+)\)', lab.frame(step))]
    proposed = [(float(p), float(a)) for step in range(9) for p, a in re.findall(
        r'\(p = ([0-9.]+)\)" style="[^"]*color:rgba\(0,0,0,([0-9.]+)\)', lab.frame(step))]
    for pairs, low, span in ((committed, 0.12, 0.5), (proposed, 0.2, 0.4)):
        assert len(pairs) > 10 and max(abs(p - 0.5) for p, _ in pairs) > 0.1  # reversed would differ somewhere
        for p, alpha in pairs:
            assert alpha == pytest.approx(low + span * p, abs=0.011), (p, alpha)
