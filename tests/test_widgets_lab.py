"""The unmasking lab: the sampler's history means what it says, and every control of the widget changes the run."""
import math

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
