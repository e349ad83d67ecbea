"""LLaDA end to end: SFT loss, synthetic tasks, chat template, sampler options (CFG, EOS), conditional likelihood."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.special import beta, betainc

from minimdm.chat import answer_prompts, exact_match_report, run_chat
from minimdm.data.tasks import TASKS, TaskTokenizer, make_examples, multiple_choice_items, pretraining_batch
from minimdm.mdm.elbo import exact_elbo, subset_nll_table
from minimdm.mdm.likelihood import answer_log_likelihood, corpus_nelbo, multiple_choice_accuracy, score_choices
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.mdm.sampler import generate, guided_logits
from minimdm.mdm.sft import ChatTemplate, left_pad, make_sft_batch, sft_loss
from minimdm.nn import Transformer, TransformerConfig
from minimdm.toys import MarkovChain

V = 8  # Markov-chain vocabulary; its mask id is V


def tiny_model(vocab_size: int, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(vocab_size=vocab_size, n_layers=2, d_model=32, n_heads=2, max_len=64)).eval()


@pytest.fixture(scope="module")
def chain():
    return MarkovChain(vocab_size=V, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return TaskTokenizer()


# --- SFT -------------------------------------------------------------------------------------------------

class LogitSpy(torch.nn.Module):
    """Wraps a model; keeps the input it saw and its logits (with their gradient after backward)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        self.seen_input = x.clone()
        self.logits = self.model(x)
        self.logits.retain_grad()
        return self.logits


def test_sft_loss_never_touches_the_prompt(tokenizer):
    template = ChatTemplate.from_tokenizer(tokenizer)
    examples = make_examples(16, seed=3)
    model = tiny_model(tokenizer.vocab_size)
    batch = make_sft_batch([(template.prompt([{"role": "user", "content": ex.prompt}]), template.answer(ex.answer))
                            for ex in examples], gen_length=12, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id,
                           mask_id=model.mask_id)
    spy = LogitSpy(model)
    for seed in range(5):
        torch.manual_seed(seed)
        loss = sft_loss(spy, batch.tokens, batch.prompt_mask, model.mask_id)
        loss.backward()
        assert torch.equal(spy.seen_input[batch.prompt_mask], batch.tokens[batch.prompt_mask])  # prompt never masked
        grad = spy.logits.grad  # (B, L, K)
        assert grad[batch.prompt_mask].abs().max() == 0  # no gradient reaches a prompt position's logits
        assert grad[~batch.prompt_mask].abs().amax(-1).gt(0).sum() > 0  # but masked response positions get one
        model.zero_grad()


def test_sft_loss_is_the_conditional_elbo_per_response_token(chain):
    """E[sft_loss] = mean_b ELBO(answer_b | prompt_b) / A_b (eps = 0): checks one t per sample, the 1/t weight,
    the restriction to the response and the per-row normalisation (rows have different response lengths)."""
    den = chain.oracle_denoiser()
    rows = chain.sample(2, 7, generator=torch.Generator().manual_seed(0))
    prompt_mask = torch.zeros_like(rows, dtype=torch.bool)
    prompt_mask[0, :2], prompt_mask[1, :5] = True, True  # response lengths 5 and 2
    expected = sum(exact_elbo(den, rows[b], V, ~prompt_mask[b]) / (~prompt_mask[b]).sum().item() for b in range(2)) / 2
    copies = 512
    tokens, mask = rows.repeat(copies, 1), prompt_mask.repeat(copies, 1)
    torch.manual_seed(0)
    draws = torch.stack([sft_loss(den, tokens, mask, V, eps=0.0, stratified=False) for _ in range(40)])
    stderr = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - expected) < 4 * stderr.item() + 1e-3, (draws.mean().item(), expected, stderr.item())


def test_sft_batch_layout_and_multi_turn(tokenizer):
    template = ChatTemplate.from_tokenizer(tokenizer)
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1"},
                    {"role": "assistant", "content": "2"}, {"role": "user", "content": "copy: ab"},
                    {"role": "assistant", "content": "ab"}]
    pairs = template.training_pairs(conversation)
    assert len(pairs) == 2  # one pair per assistant turn
    first_prompt, first_answer = pairs[0]
    second_prompt, second_answer = pairs[1]
    assert first_answer == tokenizer.encode("2") + [tokenizer.eos_id]
    # the earlier exchange is folded into the second prompt, its answer closed by <eot> (not EOS)
    assert second_prompt[: len(first_prompt)] == first_prompt
    assert second_prompt[len(first_prompt):] == (tokenizer.encode("2") + [tokenizer.eot_id, tokenizer.role_ids["user"]]
                                                 + tokenizer.encode("copy: ab") + [tokenizer.eot_id, tokenizer.role_ids["assistant"]])
    mask_id = tokenizer.vocab_size
    batch = make_sft_batch(pairs, gen_length=6, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, mask_id=mask_id)
    P = len(second_prompt)
    assert batch.tokens.shape == (2, P + 6) and batch.prompt_length == P
    assert batch.tokens[0, : P - len(first_prompt)].eq(tokenizer.pad_id).all()  # left padding
    assert batch.tokens[1, P:].tolist() == tokenizer.encode("ab") + [tokenizer.eos_id] * 4  # EOS padding to the canvas
    assert tokenizer.decode(batch.tokens[1, P:]) == "ab"


def test_bad_input_errors(tokenizer):
    template = ChatTemplate.from_tokenizer(tokenizer)
    mask_id = tokenizer.vocab_size
    pair = (template.prompt([{"role": "user", "content": "copy: abc"}]), template.answer("abc"))
    with pytest.raises(ValueError, match="pad_id"):
        make_sft_batch([pair], gen_length=8, pad_id=mask_id, eos_id=tokenizer.eos_id, mask_id=mask_id)
    with pytest.raises(ValueError, match="eos_id"):
        make_sft_batch([pair], gen_length=8, pad_id=tokenizer.pad_id, eos_id=mask_id, mask_id=mask_id)
    with pytest.raises(ValueError, match="prompt_length"):
        make_sft_batch([pair], gen_length=8, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, mask_id=mask_id,
                       prompt_length=4)
    with pytest.raises(ValueError, match="gen_length"):
        make_sft_batch([pair], gen_length=3, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, mask_id=mask_id)
    with pytest.raises(ValueError, match="role.*allowed roles"):
        template.prompt([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="allowed"):
        tokenizer.encode("Hello!")
    with pytest.raises(ValueError, match="allowed values"):
        make_examples(3, tasks=("poetry",))
    model = tiny_model(tokenizer.vocab_size)
    inside = torch.zeros(2, 6, dtype=torch.long)  # a mask id inside the vocabulary would be read as a real token
    for call in (lambda: mdm_pretrain_loss(model, inside, 2), lambda: corpus_nelbo(model, inside, 2),
                 lambda: MarkovChain(4).oracle_denoiser(mask_id=1)):
        with pytest.raises(ValueError, match="mask_id=.* lies inside the vocabulary"):
            call()
    with pytest.raises(ValueError, match="prompt_length"):  # a prompt longer than the canvas when answering
        answer_prompts(model, tokenizer, ["copy: abcdefgh"], gen_length=4, steps=4, prompt_length=5)
    with pytest.raises(ValueError, match="pad_id"):
        left_pad([[1, 2]], pad_id=7, mask_id=7)
    tokens = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="no response"):
        sft_loss(model, tokens, torch.ones(2, 5, dtype=torch.bool), mask_id)
    with pytest.raises(ValueError, match="estimator"):
        answer_log_likelihood(model, [1, 2], [3], mask_id, estimator="k", mc_num=32, batch_size=16)
    with pytest.raises(ValueError, match="mc_num"):
        answer_log_likelihood(model, [1, 2], [3], mask_id, mc_num=10, batch_size=16)


# --- synthetic tasks ----------------------------------------------------------------------------------------

def test_tasks_have_exact_answers(tokenizer):
    examples = make_examples(600, seed=1)
    assert {ex.task for ex in examples} == set(TASKS)
    assert make_examples(50, seed=1) == examples[:50]  # deterministic under a seed
    for ex in examples:
        if ex.task == "add":
            a, b = ex.prompt.split("+")
            assert int(ex.answer) == int(a) + int(b)
        elif ex.task in ("reverse", "copy", "sort"):
            word = ex.prompt.split(": ")[1]
            assert ex.answer == {"reverse": word[::-1], "copy": word, "sort": "".join(sorted(word))}[ex.task]
        elif ex.task == "lookup":
            table, key = ex.prompt.split(" ?")
            assert dict(kv.split("=") for kv in table.split())[key] == ex.answer
        else:  # choice: the lettered option named by the answer is the correct answer of its question
            question, *options = ex.prompt.split(" |")
            chosen = dict(option.split(" ", 1) for option in options)[ex.answer]
            task = "add" if "+" in question else question.split(":")[0]
            assert chosen == make_answer(task, question)
        assert tokenizer.decode(tokenizer.encode(ex.prompt + ex.answer)) == ex.prompt + ex.answer
    assert len({len(ex.answer) for ex in examples}) >= 6  # answers of varying length: EOS padding matters
    for item in multiple_choice_items(100, num_choices=4, seed=2):
        assert len(set(item.choices)) == 4
        assert item.choices[item.answer_index] == make_answer(item.task, item.prompt)
    batch = pretraining_batch(tokenizer, 4, 32, seed=0)
    assert batch.shape == (4, 32) and int(batch.max()) < tokenizer.vocab_size


def test_task_subset_and_word_length(tokenizer):
    examples = make_examples(300, tasks=("copy", "reverse", "sort"), seed=4, max_word_length=5)
    assert {ex.task for ex in examples} == {"copy", "reverse", "sort"}
    assert {len(ex.answer) for ex in examples} == {1, 2, 3, 4, 5}  # still varying: EOS padding matters
    for item in multiple_choice_items(30, tasks=("copy", "reverse"), seed=4, max_word_length=5):
        assert item.task in ("copy", "reverse") and item.choices[item.answer_index] == make_answer(item.task, item.prompt)
    text = tokenizer.decode(pretraining_batch(tokenizer, 2, 64, seed=0, tasks=("copy",), max_word_length=3).flatten())
    assert all(line.startswith("copy: ") for line in text.split("\n")[1:-1])
    with pytest.raises(ValueError, match="max_word_length"):
        make_examples(3, max_word_length=0)


def make_answer(task: str, prompt: str) -> str:
    if task == "add":
        return str(sum(int(v) for v in prompt.split("+")))
    if task == "lookup":
        table, key = prompt.split(" ?")
        return dict(kv.split("=") for kv in table.split())[key]
    word = prompt.split(": ")[1]
    return {"reverse": word[::-1], "copy": word, "sort": "".join(sorted(word))}[task]


# --- sampler: CFG and the EOS options ----------------------------------------------------------------------

def test_cfg_zero_is_the_unguided_model_and_guided_logprobs_follow_the_formula():
    model = tiny_model(10, seed=1)
    mask_id = model.mask_id
    x = torch.randint(0, 10, (3, 12))
    x[:, 8:] = mask_id
    prompt_mask = torch.zeros_like(x, dtype=torch.bool)
    prompt_mask[:, :5] = True
    with torch.no_grad():
        plain = model(x)
        unguided, nfe = guided_logits(model, x, prompt_mask, mask_id, 0.0)
        assert nfe == 1 and torch.equal(unguided, plain)  # w = 0: exactly the conditional model
        w = 1.5
        guided, nfe = guided_logits(model, x, prompt_mask, mask_id, w)
        log_p_c = torch.log_softmax(plain.double(), -1)
        log_p_u = torch.log_softmax(model(x.masked_fill(prompt_mask, mask_id)).double(), -1)  # prompt -> M, in place
    # SMDM's unsupervised CFG (arXiv 2410.18514): log p~ = (1 + w) log p_c - w log p_u - log Z, per position
    expected = torch.log_softmax((1 + w) * log_p_c - w * log_p_u, -1)
    assert nfe == 2
    torch.testing.assert_close(torch.log_softmax(guided.double(), -1), expected, atol=1e-5, rtol=0)
    assert (torch.log_softmax(guided.double(), -1) - log_p_c).abs().max() > 1e-3  # and guidance does change them


def test_cfg_in_the_likelihood_uses_the_guided_model():
    """With a one-token answer the l-estimator is exact: it must equal the guided log-probability."""
    model = tiny_model(10, seed=2)
    prompt, answer = torch.tensor([1, 4, 2, 7]), torch.tensor([3])
    w = 0.8
    estimate = answer_log_likelihood(model, prompt, answer, model.mask_id, mc_num=32, batch_size=16, cfg_scale=w)
    canvas = torch.cat([prompt, torch.tensor([model.mask_id])])[None]
    with torch.no_grad():
        log_p_c = torch.log_softmax(model(canvas)[0, -1].double(), -1)
        log_p_u = torch.log_softmax(model(torch.full_like(canvas, model.mask_id))[0, -1].double(), -1)
    expected = torch.log_softmax((1 + w) * log_p_c - w * log_p_u, -1)[3].item()
    assert estimate.mean == pytest.approx(expected, abs=1e-5) and estimate.stderr == pytest.approx(0, abs=1e-9)
    plain = answer_log_likelihood(model, prompt, answer, model.mask_id, mc_num=32, batch_size=16)
    assert plain.mean == pytest.approx(log_p_c[3].item(), abs=1e-5)


class TableDenoiser(torch.nn.Module):
    """Fixed per-position probabilities over 8 tokens for a 6-token canvas (no prompt)."""
    EOS, EOT, MASK = 6, 7, 8

    def __init__(self):
        super().__init__()
        probs = torch.full((6, 8), 0.4 / 7)
        probs[:, 0] = 0.6  # ordinary positions: token 0 with probability 0.6
        probs[1] = torch.full((8,), 0.01 / 7)
        probs[1, self.EOS] = 0.99  # position 1: EOS, very confident
        probs[3] = torch.full((8,), 0.02 / 7)
        probs[3, self.EOT] = 0.98  # position 3: EoT, confident
        self.register_buffer("logits", probs.log())

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1, -1).clone()


def commit_order(result) -> list[int]:
    """The step at which each canvas position was committed."""
    frames = torch.stack(result.frames)[:, 0]  # (steps+1, L)
    return [int((frames[:, i] != TableDenoiser.MASK).float().argmax()) for i in range(frames.shape[1])]


def test_eos_options_of_the_sampler():
    den = TableDenoiser()
    common = dict(gen_length=6, steps=6, mask_id=TableDenoiser.MASK, batch_size=1)
    plain = generate(den, **common)
    order = commit_order(plain)
    assert order[1] == 1 and order[3] == 2  # low confidence commits the sure EOS and EoT first
    fixed = generate(den, eos_id=TableDenoiser.EOS, eot_id=TableDenoiser.EOT, confidence_eos_eot_inf=True, **common)
    order = commit_order(fixed)
    # at temperature 0 both EOS and EoT go last (LLaDA sets both logits to -inf before the confidence softmax) ...
    assert sorted([order[1], order[3]]) == [5, 6]
    # ... but they are still sampled normally
    assert fixed.tokens[0, 1] == TableDenoiser.EOS and fixed.tokens[0, 3] == TableDenoiser.EOT
    no_eos = generate(den, eos_id=TableDenoiser.EOS, logits_eos_inf=True, temperature=1.0,
                      generator=torch.Generator().manual_seed(0), **{**common, "batch_size": 64})
    assert not (no_eos.tokens == TableDenoiser.EOS).any()  # an EOS logit of -inf is never proposed


def test_sampler_cfg_masks_only_the_prompt():
    seen = []

    def spy(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], x.shape[1], 5)

    prompt = torch.tensor([[1, 2, 3]])
    generate(spy, prompt, gen_length=4, steps=4, mask_id=5, cfg_scale=1.0, temperature=1.0,
             generator=torch.Generator().manual_seed(0))
    last = seen[-1]  # (2, 7): conditional row, then the unconditional one
    assert torch.equal(last[0, :3], prompt[0]) and last[1, :3].eq(5).all()
    assert torch.equal(last[0, 3:], last[1, 3:])  # generated tokens kept in both branches


# --- likelihood ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conditional_case(chain):
    den = chain.oracle_denoiser()
    x = chain.sample(1, 10, generator=torch.Generator().manual_seed(1))[0]
    prompt, answer = x[:4], x[4:]
    exact = exact_elbo(den, x, V, torch.arange(10) >= 4)
    return den, prompt, answer, exact


@pytest.mark.parametrize("estimator,stratified", [("l", True), ("l", False), ("t", True), ("t", False)])
def test_conditional_likelihood_is_unbiased(conditional_case, estimator, stratified):
    den, prompt, answer, exact = conditional_case
    estimate = answer_log_likelihood(den, prompt, answer, V, estimator=estimator, stratified=stratified,
                                     mc_num=2048, batch_size=16, generator=torch.Generator().manual_seed(7))
    assert abs(estimate.mean + exact) < 4 * estimate.stderr, (estimate, -exact)


def test_a_suffix_is_visible_context_and_the_bound_is_exact_in_the_mean(chain):
    den = chain.oracle_denoiser()
    x = chain.sample(1, 10, generator=torch.Generator().manual_seed(2))[0]
    prompt, answer, suffix = x[:3], x[3:7], x[7:]
    exact = exact_elbo(den, x, V, (torch.arange(10) >= 3) & (torch.arange(10) < 7))  # answer masked, suffix visible
    estimate = answer_log_likelihood(den, prompt, answer, V, suffix=suffix, mc_num=2048, batch_size=16,
                                     generator=torch.Generator().manual_seed(7))
    assert abs(estimate.mean + exact) < 4 * estimate.stderr, (estimate, -exact)
    without = exact_elbo(den, x[:7], V, torch.arange(7) >= 3)
    assert abs(exact - without) > 8 * estimate.stderr  # the suffix informs the answer: a test that can fail
    with pytest.raises(ValueError, match="suffix must not contain"):
        answer_log_likelihood(den, prompt, answer, V, suffix=[V], mc_num=32, batch_size=16)


def test_standard_error_shrinks_as_one_over_sqrt_n_and_l_beats_t(conditional_case):
    den, prompt, answer, exact = conditional_case

    def stderr(estimator, mc_num, stratified=False, seed=0):
        return answer_log_likelihood(den, prompt, answer, V, estimator=estimator, stratified=stratified, mc_num=mc_num,
                                     batch_size=16, generator=torch.Generator().manual_seed(seed)).stderr

    small, large = stderr("l", 256), stderr("l", 4096)
    assert 16**0.5 / 1.5 < small / large < 16**0.5 * 1.5  # 16x the draws, 4x smaller error
    # the reported error is the real spread of repeated estimates
    repeats = torch.tensor([answer_log_likelihood(den, prompt, answer, V, mc_num=64, batch_size=16, stratified=False,
                                                  generator=torch.Generator().manual_seed(100 + r)).mean
                            for r in range(40)])
    assert 0.6 < repeats.std().item() / stderr("l", 64) < 1.6
    assert stderr("l", 4096) < 0.85 * stderr("t", 4096)  # the l-estimator beats the t-estimator
    assert stderr("l", 4096, stratified=True) < 0.9 * stderr("l", 4096)  # and stratifying helps further


def test_multiple_choice_with_common_random_numbers(chain):
    """The oracle ranks the truly likeliest continuation first. With common random numbers two different choices of
    one length are scored under the same masks, call by call (a spy reads them off the denoiser's inputs); with
    independent streams the masks differ. (Whether CRN reduces the noise of score differences depends on the model:
    with this peaky chain the draws of two choices are negatively correlated, so it does not; notebook 05 measures
    it on a trained model.)"""
    den = chain.oracle_denoiser()
    gen = torch.Generator().manual_seed(3)
    items = []
    for _ in range(6):
        x = chain.sample(1, 9, generator=gen)[0]
        prompt = x[:5]
        choices = [x[5:]] + [torch.randint(0, V, (4,), generator=gen) for _ in range(2)]
        best = max(range(3), key=lambda i: chain.log_prob(torch.cat([prompt, choices[i]])[None]).item())
        items.append((prompt, choices, best))
    accuracy, _ = multiple_choice_accuracy(den, items, V, mc_num=256, batch_size=16)
    assert accuracy.mean == 1.0

    prompt, choices, _ = items[0]
    assert not torch.equal(choices[0], choices[1])

    def inputs_per_choice(common_random_numbers):  # the denoiser's inputs: 2 calls (32 draws / 16) per choice
        seen = []

        def spy(xt):
            seen.append(xt.clone())
            return den(xt)

        score_choices(spy, prompt, choices[:2], V, common_random_numbers=common_random_numbers, mc_num=32,
                      batch_size=16)
        assert len(seen) == 4
        return seen[:2], seen[2:]

    first, second = inputs_per_choice(True)
    assert all(torch.equal(a == V, b == V) for a, b in zip(first, second))  # the same masked positions
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # of different answers
    first, second = inputs_per_choice(False)
    assert not any(torch.equal(a == V, b == V) for a, b in zip(first, second))


def test_corpus_nelbo_matches_the_entropy_rate(chain):
    """For the oracle the ELBO is exact: the corpus NELBO per token is the true NLL per token, within error."""
    den = chain.oracle_denoiser()
    sequences = chain.sample(256, 8, generator=torch.Generator().manual_seed(5))
    estimate = corpus_nelbo(den, sequences, V, num_draws=4, batch_size=128, generator=torch.Generator().manual_seed(0))
    true_nll = -chain.log_prob(sequences).mean().item() / 8
    assert abs(estimate.mean - true_nll) < 4 * estimate.stderr


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_pretraining_loss_averages_to_the_enumerated_bound_over_its_masking_range(chain, eps):
    """LLaDA's loss masks with p = (1 - eps) t + eps, t ~ U(0, 1), and weights by 1/p, so its mean is
    (1/(1 - eps)) sum_S g(S) int_eps^1 p^(|S|-1) (1 - p)^(L-|S|) dp / L, g(S) the oracle's summed NLL over the
    masked set S: by enumerating S (the integral is a regularised incomplete beta). At eps = 0 that is the exact
    ELBO, which for the oracle is -log p(x0) / L."""
    den, length = chain.oracle_denoiser(), 5
    x0 = chain.sample(1, length, generator=torch.Generator().manual_seed(1))[0]
    subsets, nll = subset_nll_table(den, x0, V)
    k, g = subsets.sum(1).double().numpy(), nll.sum(1).double().numpy()
    k, g = k[k > 0], g[k > 0]  # the empty mask contributes nothing
    integral = beta(k, length - k + 1) * (1 - betainc(k, length - k + 1, eps))
    exact = float((g * integral).sum()) / (1 - eps) / length
    if eps == 0.0:
        assert exact == pytest.approx(-chain.log_prob(x0[None]).item() / length, rel=1e-10)
    else:
        # the loss averages the integrand over [eps, 1] only, leaving out its small-p end (the smallest values here):
        # a different number from the ELBO, by far more than the error below
        assert exact > exact_elbo(den, x0, V) / length + 0.05
    torch.manual_seed(0)
    batches = torch.tensor([mdm_pretrain_loss(den, x0.expand(500, -1), V, eps=eps).item() for _ in range(40)])
    stderr = batches.std().item() / math.sqrt(len(batches))
    assert abs(batches.mean().item() - exact) < 4 * stderr and stderr < 0.01


# --- answering and chat -------------------------------------------------------------------------------------

class AnswerModel(torch.nn.Module):
    """A fake fine-tuned model that always writes ``answer`` then EOS on the response canvas."""

    def __init__(self, tokenizer, answer: str, gen_length: int):
        super().__init__()
        self.mask_id, self.gen_length = tokenizer.vocab_size, gen_length
        target = tokenizer.encode(answer) + [tokenizer.eos_id] * (gen_length - len(answer))
        logits = torch.full((gen_length, tokenizer.vocab_size), -5.0)
        logits[torch.arange(gen_length), torch.tensor(target)] = 5.0
        self.register_buffer("canvas_logits", logits)

    def forward(self, x):
        out = torch.zeros(x.shape[0], x.shape[1], self.canvas_logits.shape[1])
        out[:, -self.gen_length:] = self.canvas_logits
        return out


def test_exact_match_report_and_chat(tokenizer):
    examples = [ex for ex in make_examples(200, tasks=("copy",), seed=0) if ex.answer == "abc"][:1]
    examples = examples or make_examples(1, tasks=("copy",), seed=0)
    right = AnswerModel(tokenizer, examples[0].answer, gen_length=8)
    report = exact_match_report(right, tokenizer, examples, gen_length=8, steps=8)
    assert report["accuracy"] == 1 and report["truncated"] == 0
    assert report["eos_fraction"] == pytest.approx(report["eos_fraction_reference"])
    short = AnswerModel(tokenizer, examples[0].answer[:-1], gen_length=8)
    report = exact_match_report(short, tokenizer, examples, gen_length=8, steps=8)
    assert report["accuracy"] == 0 and report["truncated"] == 1 and report["overlong"] == 0
    long = AnswerModel(tokenizer, examples[0].answer + "a", gen_length=8)
    report = exact_match_report(long, tokenizer, examples, gen_length=8, steps=8)
    assert report["accuracy"] == 0 and report["truncated"] == 0 and report["overlong"] == 1
    lines = iter(["copy: ab", "sort: ba", "/quit"])
    outputs = []
    messages = run_chat(AnswerModel(tokenizer, "ab", gen_length=6), tokenizer, gen_length=6,
                        read=lambda _: next(lines), write=outputs.append)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1]["content"] == "ab" and outputs[-1] == "mdm> ab"
