"""SMDM experiments: CFG w = 0 is the identity for likelihood scoring, the guided formula, the fact generator's
train/test separation, greedy infilling, the drifted chain, the speed/quality table, bad input; the lookup's exact
denoiser against enumeration (and its unbiased ELBO at w = 0), and the router of guidance's two branches."""
import math
import os

import pytest
import torch

from conftest import tiny_transformer
from minimdm.data.facts import make_facts, make_skewed_lookup
from minimdm.data.tasks import TaskTokenizer
from minimdm.mdm.likelihood import answer_log_likelihood
from minimdm.mdm.sampler import guided_logits
from minimdm.smdm import (LineSet, LossSnapshots, MarkovSource, complete, drifted_chain, exact_match, fewest_matching_steps,
                          greedy_infill, speed_quality)
from minimdm.toys.markov import MarkovChain


def test_cfg_scale_zero_is_the_identity_for_likelihood_scoring():
    model = tiny_transformer(vocab_size=6, length=8)
    prompt, answer = torch.tensor([1, 2, 3]), torch.tensor([4, 0, 5, 1])
    kwargs = dict(mc_num=32, batch_size=8)
    plain = answer_log_likelihood(model, prompt, answer, model.mask_id, generator=torch.Generator().manual_seed(0), **kwargs)
    guided = answer_log_likelihood(model, prompt, answer, model.mask_id, cfg_scale=0.0,
                                   generator=torch.Generator().manual_seed(0), **kwargs)
    assert guided.mean == plain.mean and guided.stderr == plain.stderr
    # and the two-branch formula itself reduces to the conditional logits as w -> 0
    x = torch.cat([prompt, answer]).expand(2, -1).clone()
    x[:, 4:6] = model.mask_id
    prompt_mask = torch.zeros_like(x, dtype=torch.bool)
    prompt_mask[:, :3] = True
    tiny_w, _ = guided_logits(model, x, prompt_mask, model.mask_id, 1e-12)
    assert torch.allclose(tiny_w, model(x), atol=1e-9)
    with_guidance = answer_log_likelihood(model, prompt, answer, model.mask_id, cfg_scale=0.8,
                                          generator=torch.Generator().manual_seed(0), **kwargs)
    assert with_guidance.mean != plain.mean  # guidance does change the score


def test_guided_log_probs_are_the_power_combination():
    """log softmax(guided) = (1+w) log p_c - w log p_u - log Z, per position (SMDM's unsupervised CFG, arXiv 2410.18514)."""
    model = tiny_transformer(vocab_size=6, length=8)
    x = torch.tensor([[1, 2, 3, 6, 6, 0, 6, 4]])  # 6 = mask
    prompt_mask = torch.zeros_like(x, dtype=torch.bool)
    prompt_mask[:, :3] = True
    w = 0.7
    guided, nfe = guided_logits(model, x, prompt_mask, model.mask_id, w)
    log_c = torch.log_softmax(model(x), -1)
    log_u = torch.log_softmax(model(x.masked_fill(prompt_mask, model.mask_id)), -1)
    combined = (1 + w) * log_c - w * log_u
    assert nfe == 2
    assert torch.allclose(torch.log_softmax(guided, -1), torch.log_softmax(combined, -1), atol=1e-10)


def test_no_test_fact_is_ever_trained_in_reverse():
    split = make_facts(num_facts=200, num_both_ways=80, seed=3)
    lines = set(split.training_lines())
    assert len(lines) == 200 + 80  # all forward, S reversed, nothing repeated
    for fact in split.forward_only:
        assert fact.forward in lines
        assert fact.reverse not in lines
        # nor does any training line start from the test fact's description (the reverse query's prompt)
        assert not any(line.startswith(fact.description) for line in lines)
    for fact in split.both_ways:
        assert fact.reverse in lines
    names = [f.name for f in split.both_ways + split.forward_only]
    assert len(set(names)) == len(names)
    assert len({len(line) for line in lines}) == 1  # equal lengths: no padding needed


def test_facts_are_reproducible_and_fit_the_task_alphabet():
    assert make_facts(20, 5, seed=1).training_lines() == make_facts(20, 5, seed=1).training_lines()
    tokenizer = TaskTokenizer()
    rows = LineSet.from_lines(tokenizer, make_facts(20, 5).training_lines()).rows
    assert rows.shape == (25, len("bado kegi is rusa tope."))


def test_facts_do_not_depend_on_string_hashing():
    """Python randomises str hashes per process: the same seed must still give the same facts and lookup."""
    import subprocess
    import sys

    code = ("from minimdm.data.facts import make_facts, make_skewed_lookup; "
            "print(make_facts(8, 4, seed=0).training_lines(), make_skewed_lookup(seed=0).answers)")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(hash_seed)}).stdout for hash_seed in (1, 2, 3)}
    assert len(outputs) == 1


def test_skewed_lookup_distractors_follow_the_prior():
    lookup = make_skewed_lookup(num_answers=8, zipf_exponent=1.5, noise=0.7, seed=0)
    items = lookup.items(num_items=400, num_choices=3, seed=0)
    assert all(item.choices[item.answer_index] == lookup.answer_for(item.key) for item in items)
    assert all(len(set(item.choices)) == 3 for item in items)
    def offered_as_distractor(answer):
        return sum(answer in item.choices and item.choices[item.answer_index] != answer for item in items)
    assert offered_as_distractor(lookup.answers[0]) > 3 * offered_as_distractor(lookup.answers[-1])
    lines = lookup.training_lines(2000)
    follows_rule = sum(line[4:8] == lookup.answer_for(line[:3]) for line in lines) / len(lines)
    assert 0.3 < follows_rule < 0.45  # 1 - noise, plus noise that happens to hit the rule answer


def test_greedy_infill_fills_every_mask_and_keeps_the_rest():
    model = tiny_transformer(vocab_size=6, length=8)
    canvas = torch.tensor([[6, 6, 2, 3, 6, 1, 6, 6], [6, 0, 6, 6, 4, 6, 5, 6]])
    filled = greedy_infill(model, canvas, model.mask_id, cfg_scale=0.5)
    visible = canvas != 6
    assert not bool((filled == 6).any())
    assert torch.equal(filled[visible], canvas[visible])


def test_exact_match_is_substring_and_case_blind():
    assert exact_match(["The answer: RUSA tope.", "no"], ["rusa tope", "rusa"]) == 0.5


def test_drifted_chain():
    chain = MarkovChain(vocab_size=8, seed=0)
    original = chain.transition.clone()
    same = drifted_chain(chain, 0.0)
    assert torch.allclose(same.transition, chain.transition)
    moved = drifted_chain(chain, 0.5)
    assert torch.allclose(moved.transition.sum(1), torch.ones(8, dtype=moved.transition.dtype))
    assert (moved.transition - chain.transition).abs().max() > 0.01
    assert torch.allclose(moved.initial @ moved.transition, moved.initial, atol=1e-10)
    assert torch.equal(chain.transition, original)  # the original is untouched


def test_loss_snapshots_cut_a_run_back_to_a_matched_loss():
    from minimdm.arm import train_kind, validation_loss
    from minimdm.recipes import TextRecipe

    chain = MarkovChain(vocab_size=5, seed=0)
    source = MarkovSource(chain, length=12, val_size=32)
    snapshots = LossSnapshots("arm", source, num_windows=32)
    with pytest.raises(ValueError, match="kind='gpt'"):
        LossSnapshots("gpt", source)
    with pytest.raises(ValueError, match="no snapshots yet"):
        snapshots.load_closest(tiny_transformer(vocab_size=5, length=12, causal=True), 1.0)
    recipe = TextRecipe(seq_len=12, n_layers=1, d_model=16, n_heads=2, batch_size=16, steps=30, lr=1e-2, warmup_steps=2)
    model, result = train_kind(recipe, "arm", source, 5, progress=False, eval_fn=snapshots, eval_every=5)
    assert [e["val"] for e in result.evals] == snapshots.losses and len(snapshots.losses) == 6
    assert snapshots.losses[0] > snapshots.losses[-1] + 0.05  # the run learned, so the early snapshot differs
    index = snapshots.load_closest(model, snapshots.losses[1] + 1e-4)
    assert index == 1 and validation_loss("arm", model, source, 32).mean == pytest.approx(snapshots.losses[1], abs=1e-6)


def test_speed_quality_rows_count_calls_and_score_real_samples():
    chain = MarkovChain(vocab_size=5, seed=0)
    arm, mdm = tiny_transformer(vocab_size=5, length=16, causal=True), tiny_transformer(vocab_size=5, length=16)
    rows = speed_quality(arm.float(), mdm.float(), chain, 16, mdm_steps=[4, 16], batch_size=6)
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ARM + KV cache", 16), ("MDM", 4), ("MDM + RADD cache", 4),
                                                          ("MDM", 16), ("MDM + RADD cache", 16)]
    assert [r["nfe"] for r in rows[:2]] == [16.0, 4.0] and rows[3]["nfe"] == 16.0
    assert rows[4]["nfe"] < 16.0  # 16 steps, 16 tokens: some steps reveal nothing, and the cache skips them
    assert all(r["seconds"] > 0 for r in rows)
    # Zero heads sample uniform tokens, whose true NLL under the chain is known: every row must score its own samples.
    for model in (arm, mdm):
        torch.nn.init.zeros_(model.head.weight)
    uniform = (-chain.initial.log().mean() - 15 * chain.transition.log().mean()).item() / 16
    rows = speed_quality(arm.float(), mdm.float(), chain, 16, mdm_steps=[4, 16], batch_size=256)
    for r in rows:
        assert abs(r["nll_per_token"] - uniform) < 4 * r["nll_stderr"], (r, uniform)


def test_fewest_matching_steps_is_the_smallest_step_count_within_tolerance():
    rows = [{"sampler": "ARM + KV cache", "steps": 32, "nll_per_token": 2.00},
            {"sampler": "MDM", "steps": 8, "nll_per_token": 2.30}, {"sampler": "MDM", "steps": 16, "nll_per_token": 2.015},
            {"sampler": "MDM", "steps": 32, "nll_per_token": 2.001}, {"sampler": "MDM + RADD cache", "steps": 8, "nll_per_token": 2.5}]
    assert fewest_matching_steps(rows, "MDM")["steps"] == 16
    assert fewest_matching_steps(rows, "MDM", tolerance=0.01)["steps"] == 32
    assert fewest_matching_steps(rows, "MDM + RADD cache") is None
    with pytest.raises(ValueError, match="sampler='LLaDA'"):
        fewest_matching_steps(rows, "LLaDA")
    with pytest.raises(ValueError, match="tolerance=-0.1"):
        fewest_matching_steps(rows, "MDM", tolerance=-0.1)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"num_both_ways=10 must lie in \[0, num_facts\)"):
        make_facts(num_facts=10, num_both_ways=10)
    with pytest.raises(ValueError, match="zipf_exponent=-1"):
        make_skewed_lookup(zipf_exponent=-1)
    with pytest.raises(ValueError, match=r"noise=1.0 must lie in \[0, 1\)"):
        make_skewed_lookup(noise=1.0)
    with pytest.raises(ValueError, match=r"num_choices=9 must lie in \[2, 4\]"):
        make_skewed_lookup(num_answers=4).items(10, num_choices=9)
    with pytest.raises(ValueError, match="delta=-0.1"):
        drifted_chain(MarkovChain(4), -0.1)
    with pytest.raises(ValueError, match="same length"):
        LineSet.from_lines(TaskTokenizer(), ["ab", "abc"])
    with pytest.raises(ValueError, match="kind='ARM'"):
        complete("ARM", None, torch.zeros(1, 2, dtype=torch.long), 3)


def _brute_force_law(lookup):
    """The joint law of (key, answer) by enumerating the generative process of ``training_lines``: every
    three-letter key (uniform), then the noise coin, then the answer."""
    from itertools import product

    from minimdm.data.facts import KEY_LETTERS

    joint = {}
    p_key = 1 / len(KEY_LETTERS) ** 3
    for letters in product(KEY_LETTERS, repeat=3):
        key = "".join(letters)
        row = {a: 0.0 for a in lookup.answers}
        row[lookup.answer_for(key)] += (1 - lookup.noise) * p_key
        for a, w in zip(lookup.answers, lookup.weights):
            row[a] += lookup.noise * w * p_key
        joint[key] = row
    marginal = {a: sum(row[a] for row in joint.values()) for a in lookup.answers}
    return joint, marginal, p_key


def test_oracle_guidance_matches_brute_force_enumeration():
    from minimdm.smdm import oracle_guidance_sweep

    lookup = make_skewed_lookup(num_answers=3, zipf_exponent=1.5, noise=0.7, seed=0)
    joint, marginal, p_key = _brute_force_law(lookup)
    exact_marginal = lookup.answer_probabilities()
    assert sum(exact_marginal.values()) == pytest.approx(1.0, abs=1e-12)
    for a in lookup.answers:
        assert exact_marginal[a] == pytest.approx(marginal[a], abs=1e-12)
    items = lookup.items(40, num_choices=2, seed=3)
    for item in items[:10]:
        conditional = lookup.answer_probabilities(item.key)
        for a in lookup.answers:
            assert conditional[a] == pytest.approx(joint[item.key][a] / p_key, abs=1e-12)
    scales = [0, 0.1, 0.5, 1, 4, 32]
    rows = oracle_guidance_sweep(lookup, items, scales)
    for w, row in zip(scales, rows):
        correct = 0
        for item in items:  # the guided distribution over the whole pool, normalised, then the best choice
            unnormalised = {a: (joint[item.key][a] / p_key) ** (1 + w) * marginal[a] ** (-w) for a in lookup.answers}
            z = sum(unnormalised.values())
            guided = [unnormalised[c] / z for c in item.choices]
            correct += max(range(len(guided)), key=guided.__getitem__) == item.answer_index
        assert row["cfg_scale"] == w
        assert row["accuracy"] == pytest.approx(correct / len(items), abs=1e-12)


def test_guidance_sweep_scores_whole_lines_of_the_training_length(monkeypatch):
    import minimdm.smdm as smdm

    lookup = make_skewed_lookup(num_answers=4, seed=0)
    tokenizer = TaskTokenizer()
    line_length = len(tokenizer.encode(lookup.training_lines(1)[0]))
    seen = []

    def record(model, encoded, mask_id, suffix, **kwargs):  # stands in for the ELBO scoring: keeps what it was given
        seen.extend((prompt, choices, suffix) for prompt, choices, _ in encoded)
        return type("Accuracy", (), {"mean": 0.0, "stderr": 0.0})(), None

    monkeypatch.setattr(smdm, "multiple_choice_accuracy", record)
    model = type("Model", (), {"mask_id": 0})()
    smdm.guidance_sweep(model, lookup.items(3, num_choices=2, seed=0), tokenizer, scales=[0])
    assert seen and all(len(prompt) + len(choice) + len(suffix) == line_length and suffix == tokenizer.encode(".")
                        for prompt, choices, suffix in seen for choice in choices)
    seen.clear()
    smdm.guidance_sweep(model, lookup.items(3, num_choices=2, seed=0), tokenizer, scales=[0], whole_lines=False)
    assert all(len(prompt) + len(choice) == line_length - 1 and not suffix for prompt, choices, suffix in seen
               for choice in choices)


def test_oracle_guidance_prior_wins_unguided_and_guidance_recovers_the_rule():
    from minimdm.smdm import oracle_guidance_sweep

    lookup = make_skewed_lookup(num_answers=10, zipf_exponent=1.5, noise=0.8, seed=0)
    items = lookup.items(200, num_choices=4, seed=1)
    rows = oracle_guidance_sweep(lookup, items, [0, 8])
    assert rows[0]["accuracy"] < 0.25  # maximum likelihood picks the frequent distractor: below chance
    assert rows[1]["accuracy"] == 1.0  # pointwise mutual information picks the rule answer


def test_lookup_oracle_denoiser_matches_brute_force_enumeration_of_lines():
    """Every conditional of the exact denoiser against a sum over all 26^3 x |pool| lines of the lookup's law."""
    from minimdm.smdm import lookup_oracle_denoiser

    lookup = make_skewed_lookup(num_answers=3, zipf_exponent=1.5, noise=0.7, seed=0)
    tokenizer = TaskTokenizer()
    mask_id = tokenizer.vocab_size
    joint, _, _ = _brute_force_law(lookup)
    lines = torch.tensor([tokenizer.encode(f"{key}={a}.") for key in joint for a in lookup.answers])  # (N, 9)
    probs = torch.tensor([joint[key][a] for key in joint for a in lookup.answers], dtype=torch.float64)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-12)
    denoiser = lookup_oracle_denoiser(lookup, tokenizer, mask_id)
    generator = torch.Generator().manual_seed(0)
    for length in (9, 8):  # a whole line and the line cut after the answer
        truth = lines[torch.randint(len(lines), (64,), generator=generator), :length]
        masked = torch.rand(truth.shape, generator=generator) < torch.rand(64, 1, generator=generator)
        xt = truth.masked_fill(masked, mask_id)
        xt[0] = mask_id  # everything masked, the unconditional branch's hardest input
        logits = denoiser(xt)
        assert logits.shape == (64, length, tokenizer.vocab_size)
        for row in range(64):
            visible = xt[row] != mask_id
            agree = (lines[:, :length][:, visible] == xt[row][visible]).all(1)
            weight = probs * agree
            for position in range(length):
                expected = torch.zeros(tokenizer.vocab_size, dtype=torch.float64)
                expected.index_add_(0, lines[:, position], weight)
                expected /= expected.sum()
                assert torch.allclose(logits[row, position].exp(), expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(batch, 9\)"):
        denoiser(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="mask_id"):
        lookup_oracle_denoiser(lookup, tokenizer, mask_id=0)


def test_guided_elbo_with_the_exact_denoiser_is_unbiased_at_w0_and_tracks_the_oracle():
    """With exact conditionals the ELBO is tight (every decoding order's chain rule gives the exact likelihood), so
    at w = 0 the Monte Carlo score estimates log p(a | key) without bias. Guidance then tilts each token separately,
    not the whole answer; on this law the two rank the choices alike far from the oracle's thresholds."""
    from minimdm.mdm.likelihood import answer_log_likelihood
    from minimdm.smdm import guidance_sweep, lookup_oracle_denoiser, oracle_guidance_sweep

    lookup = make_skewed_lookup(num_answers=4, zipf_exponent=1.5, noise=0.7, seed=0)
    tokenizer = TaskTokenizer()
    mask_id = tokenizer.vocab_size
    denoiser = lookup_oracle_denoiser(lookup, tokenizer, mask_id)
    item = lookup.items(1, num_choices=4, seed=2)[0]
    for choice in item.choices:
        estimate = answer_log_likelihood(denoiser, tokenizer.encode(item.prompt), tokenizer.encode(choice), mask_id,
                                         mc_num=1024, batch_size=64, suffix=tokenizer.encode("."),
                                         generator=torch.Generator().manual_seed(1))
        exact = math.log(lookup.answer_probabilities(item.key)[choice])
        assert abs(estimate.mean - exact) < 4 * estimate.stderr + 1e-9, (choice, estimate, exact)
    items = lookup.items(40, num_choices=4, seed=3)
    scales = [0, 8]
    exact_rows = guidance_sweep(denoiser, items, tokenizer, scales, mc_num=64, mask_id=mask_id)
    oracle_rows = oracle_guidance_sweep(lookup, items, scales)
    for exact_row, oracle_row in zip(exact_rows, oracle_rows):
        assert exact_row["accuracy"] == pytest.approx(oracle_row["accuracy"], abs=0.05)


def test_branch_denoiser_sends_rows_with_a_masked_prompt_to_the_unconditional_denoiser():
    from minimdm.smdm import branch_denoiser, lookup_oracle_denoiser

    lookup = make_skewed_lookup(num_answers=4, seed=0)
    tokenizer = TaskTokenizer()
    mask_id = tokenizer.vocab_size
    exact = lookup_oracle_denoiser(lookup, tokenizer, mask_id)
    flat = lambda xt: torch.zeros(*xt.shape, tokenizer.vocab_size)  # noqa: E731  (uniform: logits all equal)
    line = torch.tensor(tokenizer.encode(lookup.training_lines(1)[0]))
    xt = line.repeat(4, 1)
    xt[:, 4:6] = mask_id  # two answer tokens masked in every row
    xt[1, :4] = mask_id  # rows 1 and 3: the prompt "key=" masked, as guided_logits' unconditional branch has it
    xt[3, :4] = mask_id
    xt[2, 0] = mask_id  # a partly masked prompt is still the conditional branch
    out = branch_denoiser(exact, flat, prompt_length=4, mask_id=mask_id)(xt)
    assert torch.allclose(out[[0, 2]], exact(xt[[0, 2]]).log_softmax(-1), atol=1e-12)
    assert torch.allclose(out[[1, 3]], torch.full((2, xt.shape[1], tokenizer.vocab_size),
                                                  -math.log(tokenizer.vocab_size), dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="prompt_length=0"):
        branch_denoiser(exact, flat, prompt_length=0, mask_id=mask_id)


class _TableDenoiser:
    """A stub denoiser: each row's output is log table[that row's state] (L, V), a fixed table of probabilities
    keyed by the whole state (an unlisted state raises KeyError). Records the batches it is called on."""

    def __init__(self, table):
        self.table, self.seen = table, []

    def __call__(self, x):
        self.seen.append([tuple(row) for row in x.tolist()])
        return torch.tensor([self.table[tuple(row)] for row in x.tolist()], dtype=torch.float64).log()


def test_greedy_infill_commits_the_most_confident_mask_each_step_from_fresh_predictions():
    """V = 3, mask 3. Row A: confidences (.5, .7, .6) put position 2 first (token 1); the next call makes position 0
    the most confident (.8 > .55, token 2), though the first call ranked it last; then position 3 gets token 0,
    not the first call's argmax 2. Row B in parallel: position 3 (.8, token 2), 0 (.7, token 0), 1 (.5, token 1).
    Visible positions are ignored even at probability .98. One call per step, on the current states."""
    M, high = 3, [0.98, 0.01, 0.01]
    a, b = [(M, 2, M, M), (M, 2, 1, M), (2, 2, 1, M)], [(M, M, 0, M), (M, M, 0, 2), (0, M, 0, 2)]
    table = {a[0]: [[.5, .3, .2], high, [.1, .7, .2], [.2, .2, .6]],
             a[1]: [[.1, .1, .8], high, high, [.4, .55, .05]],
             a[2]: [high, high, high, [.9, .05, .05]],
             b[0]: [[.3, .3, .4], [.2, .6, .2], high, [.1, .1, .8]],
             b[1]: [[.7, .2, .1], [.05, .35, .6], high, high],
             b[2]: [high, [.2, .5, .3], high, high]}
    denoiser = _TableDenoiser(table)
    filled = greedy_infill(denoiser, torch.tensor([a[0], b[0]]), mask_id=M)
    assert denoiser.seen == [[a[0], b[0]], [a[1], b[1]], [a[2], b[2]]]
    assert filled.tolist() == [[2, 2, 1, 0], [0, 1, 0, 2]]


def test_greedy_infill_with_guidance_ranks_by_the_guided_probabilities():
    """w = 1: guided logits 2 log p_c - log p_u, the unconditional row masking only the starting canvas's visible
    token. State (1, M, M): at position 1 p_c = p_u = (.6, .2, .2), so guided = (.6, .2, .2); at position 2
    p_c = (.2, .7, .1), p_u = (.1, .8, .1), guided ∝ (.4, .6125, .1), top .6125 / 1.1125 = .55 < .6: position 1
    goes first (token 0), though unguided confidence .7 would pick position 2. Then the unconditional row keeps
    that filled 0: (M, 0, M). Position 2: p_c = (.45, .5, .05), p_u = (.2, .7, .1), guided ∝ (1.0125, .357, .025):
    token 0, where the conditional argmax is 1."""
    M, high = 3, [0.98, 0.01, 0.01]
    table = {(1, M, M): [high, [.6, .2, .2], [.2, .7, .1]], (M, M, M): [high, [.6, .2, .2], [.1, .8, .1]],
             (1, 0, M): [high, high, [.45, .5, .05]], (M, 0, M): [high, high, [.2, .7, .1]]}
    denoiser = _TableDenoiser(table)
    filled = greedy_infill(denoiser, torch.tensor([[1, M, M]]), mask_id=M, cfg_scale=1.0)
    assert denoiser.seen == [[(1, M, M), (M, M, M)], [(1, 0, M), (M, 0, M)]]
    assert filled.tolist() == [[1, 0, 0]]


def _first_agreeing_line(lines: torch.Tensor, row: torch.Tensor, visible: torch.Tensor) -> int | None:
    """Index of the first of ``lines`` (N, L) equal to ``row`` at its visible positions, None if there is none."""
    agree = (lines[:, : len(row)][:, visible] == row[visible]).all(1).nonzero().flatten()
    return int(agree[0]) if len(agree) else None


class _LineMemory:
    """A stub that knows a list of lines and nothing else: at each position it puts probability 0.9 on the token of
    the first known line agreeing with what it can see (else on '.', which matches no fact). As an MDM it sees the
    visible tokens of the canvas; as an ARM (``causal``) the prefix, kept on the KV cache object."""

    def __init__(self, tokenizer, lines, causal=False):
        self.lines = torch.tensor([tokenizer.encode(line) for line in lines])
        self.vocab_size, self.filler = tokenizer.vocab_size, tokenizer.encode(".")[0]
        self.mask_id = self.vocab_size
        self.config = type("Config", (), {"causal": causal})()

    def _log_probs(self, tokens):  # (L,) -> the stub's (V,) probabilities for each position, logged
        probs = torch.full((len(tokens), self.vocab_size), 0.1 / (self.vocab_size - 1), dtype=torch.float64)
        index = _first_agreeing_line(self.lines, tokens, tokens != self.mask_id)
        targets = self.lines[index, : len(tokens)] if index is not None else torch.full_like(tokens, self.filler)
        probs[torch.arange(len(tokens)), targets] = 0.9
        return probs.log()

    def __call__(self, x, kv_cache=None):
        if not self.config.causal:
            return torch.stack([self._log_probs(row) for row in x])
        kv_cache.seen = torch.cat([kv_cache.seen, x], 1) if hasattr(kv_cache, "seen") else x
        prefix = kv_cache.seen[:, 1:]  # after the start token; predict the next position from the known lines
        masked = torch.cat([prefix, torch.full_like(prefix[:, :1], self.mask_id)], 1)
        next_log_probs = torch.stack([self._log_probs(row)[-1] for row in masked])  # (B, V)
        return next_log_probs[:, None].expand(-1, x.shape[1], -1)


def test_reverse_curse_scores_of_stubs_that_memorise_known_lines():
    """Four facts A_i is B_i; the stub knows the lines [A0 is B0., A1 is B1., A0 is B3., A3 is B3., B1 is A1.].
    forward "A_i is _": facts 0, 1, 3 have a line (3/4). reverse_infill "_ is B_i.": fact 0 and 1 find theirs, fact 3
    finds "A0 is B3." first and writes A0, fact 2 nothing (2/4). reverse_query "B_i is _": only "B1 is A1." (1/4).
    The same memory read left to right (an ARM) scores 3/4 and 1/4, and cannot infill (None)."""
    from minimdm.data.facts import Fact
    from minimdm.smdm import reverse_curse_scores

    facts = [Fact("kobi moki", "tine notu"), Fact("kime mege", "sana pola"), Fact("bugu vudi", "nose lila"),
             Fact("bavi kubi", "rure ruta")]
    lines = [facts[0].forward, facts[1].forward, f"{facts[0].name} is {facts[3].description}.", facts[3].forward,
             facts[1].reverse]
    tokenizer = TaskTokenizer()
    mdm, arm = _LineMemory(tokenizer, lines), _LineMemory(tokenizer, lines, causal=True)
    assert reverse_curse_scores("mdm", mdm, facts, tokenizer) == {"forward": 0.75, "reverse_infill": 0.5,
                                                                  "reverse_query": 0.25}
    assert reverse_curse_scores("arm", arm, facts, tokenizer) == {"forward": 0.75, "reverse_infill": None,
                                                                  "reverse_query": 0.25}


def _cross_entropy_per_token(truth: MarkovChain, model: MarkovChain, length: int) -> float:
    """E_truth[-log p_model(x)] / L for windows of a chain started at its own initial law pi_q, which is stationary
    for ``truth`` here, so every position has marginal pi_q: (H(pi_q, pi_p) + (L - 1) sum_a pi_q(a) H(Q_a, T_a)) / L.
    With truth = model it is the entropy of a window per token."""
    first = -(truth.initial * model.initial.log()).sum()
    step = -(truth.initial[:, None] * truth.transition * model.transition.log()).sum()
    return float(first + (length - 1) * step) / length


class _ExactArm:
    """An ARM stub with the chain's exact next-token law: log pi_0 after the start token (id V), log T[x, :] after
    token x."""

    def __init__(self, chain):
        self.chain, self.mask_id = chain, chain.vocab_size
        self.config = type("Config", (), {"causal": True})()

    def __call__(self, x):
        after_start = self.chain.initial.log().expand(*x.shape, -1)
        return torch.where((x == self.mask_id)[..., None], after_start,
                           self.chain.transition.log()[x.clamp(max=self.mask_id - 1)])


def test_shift_degradation_of_exact_models_is_the_windows_nll_under_the_training_chain():
    """Models that know the training chain p exactly, scored on held-out windows of p (before) and of a drifted q
    (after). The ARM's loss is then the windows' mean -log p(x) / L, summed here by a loop over tokens, and
    relative_increase = after / before - 1. The MDM with the oracle denoiser has an unbiased ELBO (tight for exact
    conditionals), so it matches the same means within 4 of its standard errors; both sit near the closed forms
    E_p[-log p] / L and E_q[-log p] / L (window entropy and cross-entropy per token, not the entropy rate: the
    first token has the marginal's entropy)."""
    from minimdm.smdm import MarkovSource, shift_degradation

    length, n = 8, 512
    chain = MarkovChain(vocab_size=6, seed=0)
    drifted = drifted_chain(chain, 1.0)
    before, after = MarkovSource(chain, length, val_size=n), MarkovSource(drifted, length, val_size=n)
    oracle = chain.oracle_denoiser()
    mdm = type("OracleMDM", (), {"mask_id": chain.vocab_size, "__call__": lambda self, x: oracle(x)})()
    table = shift_degradation({"arm": _ExactArm(chain), "mdm": mdm}, before, after, num_windows=n, draws=8)

    def window_nll(windows):  # one value per window: -log p(x) / L by the chain's definition
        values = []
        for x in windows.tolist():
            log_p = math.log(chain.initial[x[0]]) + sum(math.log(chain.transition[u, v]) for u, v in zip(x, x[1:]))
            values.append(-log_p / length)
        return torch.tensor(values, dtype=torch.float64)

    exact = {"before": window_nll(before.val), "after": window_nll(after.val)}
    closed_form = {"before": _cross_entropy_per_token(chain, chain, length),
                   "after": _cross_entropy_per_token(drifted, chain, length)}
    arm, mdm_row = table["arm"], table["mdm"]
    for split in ("before", "after"):
        assert arm[split] == pytest.approx(float(exact[split].mean()), rel=1e-12)
        assert arm[f"{split}_se"] == pytest.approx(float(exact[split].std() / math.sqrt(n)), rel=1e-9)
        assert abs(mdm_row[split] - float(exact[split].mean())) < 4 * mdm_row[f"{split}_se"]
        assert abs(arm[split] - closed_form[split]) < 4 * arm[f"{split}_se"]
    for row in (arm, mdm_row):
        assert row["relative_increase"] == pytest.approx(row["after"] / row["before"] - 1, rel=1e-12)
    assert closed_form["after"] - closed_form["before"] > 10 * max(arm["after_se"], mdm_row["after_se"])
