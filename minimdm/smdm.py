"""SMDM's experiments beyond scaling (Nie et al. 2024, arXiv 2410.18514: unsupervised classifier-free guidance, the
reverse curse, temporal shift, speed versus quality), on the ARM/MDM harness of ``minimdm.arm``.

* **Unsupervised CFG for likelihood**: multiple choice scored by the conditional ELBO with guidance
  (``minimdm.mdm.likelihood``; the unconditional branch is the prompt replaced by masks).
* **Reverse curse**: greedy decoding of "A is" (forward), "[M...] is B." (reverse infill) and "B is" (reverse
  query), exact match as in SMDM (the reference is a substring of the generation).
* **Temporal shift**: a Markov source whose transition matrix drifts; relative degradation of ARM and MDM.
* **Speed vs quality**: ARM + KV cache against the MDM at several step counts, with LLaDA's sampler and with
  RADD's cached sampler; quality is the true chain's NLL of the samples.

The data sources here are duck-typed "streams" (``batch(batch_size)`` and ``windows("val", n)``), so the shared
``train_kind`` and ``validation_loss`` train and score both kinds on them unchanged.
"""
from __future__ import annotations

import copy
import math
import time

import torch

from minimdm.arm import check_kind, sample_arm, validation_loss
from minimdm.data.facts import KEY_LETTERS, LOOKUP_LINE_END
from minimdm.mdm.denoiser import check_mask_id, check_model_mask_id, check_token_ids, device_of, logits_of, token_limits
from minimdm.mdm.likelihood import multiple_choice_accuracy
from minimdm.mdm.sampler import check_cfg_scale, generate, guided_logits
from minimdm.radd.sampling import tau_leaping_sample
from minimdm.toys.enumerable import posterior_marginals

# --- data sources the shared trainer understands ---------------------------------------------------------------


class LineSet:
    """Equal-length lines as rows of a (N, L) tensor; ``batch`` draws rows with replacement (global RNG)."""

    def __init__(self, rows: torch.Tensor):
        if rows.dim() != 2:
            raise ValueError(f"rows must have shape (num_lines, length), got {tuple(rows.shape)}")
        self.rows = rows

    @classmethod
    def from_lines(cls, tokenizer, lines: list[str]) -> "LineSet":
        encoded = [tokenizer.encode(line) for line in lines]
        lengths = sorted({len(ids) for ids in encoded})
        if len(lengths) != 1:
            raise ValueError(f"lines must all have the same length in tokens, got lengths {lengths}")
        return cls(torch.tensor(encoded))

    def batch(self, batch_size: int, split: str = "train") -> torch.Tensor:
        return self.rows[torch.randint(0, len(self.rows), (batch_size,))]

    def windows(self, split: str = "val", max_windows: int | None = None) -> torch.Tensor:
        return self.rows[:max_windows]


class MarkovSource:
    """Fresh sequences of a ``MarkovChain`` for training; a fixed seeded sample for validation."""

    def __init__(self, chain, length: int, val_size: int = 256, seed: int = 12345):
        self.chain, self.length = chain, length
        self.val = chain.sample(val_size, length, generator=torch.Generator().manual_seed(seed))

    def batch(self, batch_size: int, split: str = "train") -> torch.Tensor:
        return self.chain.sample(batch_size, self.length)

    def windows(self, split: str = "val", max_windows: int | None = None) -> torch.Tensor:
        return self.val[:max_windows]


# --- decoding --------------------------------------------------------------------------------------------------

@torch.no_grad()
def greedy_infill(denoiser, canvas: torch.Tensor, mask_id: int, cfg_scale: float = 0.0) -> torch.Tensor:
    """Greedy decoding by confidence (SMDM's ``greddy`` rule) with one token per step: fill every mask of
    ``canvas`` (B, L). SMDM's reverse-curse script runs the same rule on a 32-step schedule, several tokens a step.

    At each step predict all masked positions, commit the single most confident one (max probability) to its
    argmax. Masks may sit anywhere (before, between or after the visible tokens), which LLaDA's ``generate``
    (prompt first, then the answer) does not cover. With ``cfg_scale`` the visible tokens of the starting
    canvas are the condition that the unconditional branch replaces by masks (SMDM's unsupervised CFG).
    """
    check_cfg_scale(cfg_scale)
    check_model_mask_id(denoiser, mask_id)
    check_token_ids(canvas, "canvas", mask_id, token_limits(denoiser)[0], masks_allowed=True)
    x = canvas.clone()
    condition = x != mask_id  # the prompt of CFG: what was given, not what we fill in
    num_masked = (~condition).sum(1)
    if bool((num_masked != num_masked[0]).any()):
        raise ValueError("every row of canvas must have the same number of masks")
    rows = torch.arange(x.shape[0], device=x.device)
    for _ in range(int(num_masked[0])):
        logits, _ = guided_logits(denoiser, x, condition, mask_id, cfg_scale)
        confidence, proposal = torch.softmax(logits.double(), -1).max(-1)  # (B, L) each
        confidence = confidence.masked_fill(x != mask_id, -1.0)
        position = confidence.argmax(1)  # (B,)
        x[rows, position] = proposal[rows, position]
    return x


def complete(kind: str, model, prompts: torch.Tensor, num_tokens: int, cfg_scale: float = 0.0) -> torch.Tensor:
    """Greedy continuation of ``prompts`` (B, P) by ``num_tokens`` tokens: (B, num_tokens)."""
    if check_kind(kind) == "arm":
        return sample_arm(model, prompts, num_tokens=num_tokens, temperature=0.0).tokens[:, prompts.shape[1]:]
    masks = torch.full((prompts.shape[0], num_tokens), model.mask_id, dtype=torch.long, device=prompts.device)
    canvas = torch.cat([prompts, masks], 1)
    return greedy_infill(model, canvas, model.mask_id, cfg_scale)[:, prompts.shape[1]:]


def exact_match(generations: list[str], references: list[str]) -> float:
    """SMDM's metric: the fraction of generations that contain their lower-cased reference."""
    hits = [ref.lower() in gen.lower() for gen, ref in zip(generations, references, strict=True)]
    return sum(hits) / len(hits)


# --- reverse curse ---------------------------------------------------------------------------------------------

def reverse_curse_scores(kind: str, model, facts, tokenizer, cfg_scale: float = 0.0) -> dict[str, float | None]:
    """Exact match on ``facts`` (a list of ``Fact``) in three directions; None where the kind cannot do it.

    * forward:          "A is " -> B
    * reverse_infill:   "[M..M] is B." -> A   (the training format read backwards; a left-to-right ARM cannot)
    * reverse_query:    "B is " -> A          (the real reversal test)
    """
    check_kind(kind)
    device = device_of(model)
    encode = lambda texts: torch.tensor([tokenizer.encode(t) for t in texts], device=device)  # noqa: E731
    decode = lambda rows: [tokenizer.decode(r) for r in rows.tolist()]  # noqa: E731
    names, descriptions = [f.name for f in facts], [f.description for f in facts]
    guidance = cfg_scale if kind == "mdm" else 0.0
    forward = complete(kind, model, encode([f"{a} is " for a in names]), len(descriptions[0]) + 1, guidance)
    query = complete(kind, model, encode([f"{b} is " for b in descriptions]), len(names[0]) + 1, guidance)
    scores = {"forward": exact_match(decode(forward), descriptions),
              "reverse_infill": None,
              "reverse_query": exact_match(decode(query), names)}
    if kind == "mdm":
        canvas = encode([f"{b} is {b}." for b in descriptions])  # placeholder of the right shape, then mask A
        canvas[:, : len(names[0])] = model.mask_id
        filled = greedy_infill(model, canvas, model.mask_id, cfg_scale)
        scores["reverse_infill"] = exact_match(decode(filled[:, : len(names[0])]), names)
    return scores


# --- guidance --------------------------------------------------------------------------------------------------

def guidance_sweep(model, items, tokenizer, scales, mc_num: int = 32, batch_size: int = 16,
                   whole_lines: bool = True, mask_id: int | None = None, device=None) -> list[dict]:
    """Multiple-choice accuracy (ELBO scoring, common random numbers) at each guidance scale w.

    With ``whole_lines`` each choice is scored inside a whole line ``key=answer.``: the closing "." is context, never
    masked, so the model reads lines of the length it was trained on, and with the prompt masked (the unconditional
    branch) the "." still tells it where each position lies. It follows every answer, so it changes no answer's exact
    probability. ``whole_lines=False`` cuts the line after the answer, a length the model never saw (for comparison).
    ``mask_id`` defaults to the model's; give it for a denoiser that is a plain function (``lookup_oracle_denoiser``),
    and ``device`` too where it should draw the same masks as a model on another device (default: where the
    denoiser's parameters live, the CPU for a function).
    """
    suffix = tokenizer.encode(LOOKUP_LINE_END) if whole_lines else []
    encoded = [(tokenizer.encode(item.prompt), [tokenizer.encode(c) for c in item.choices], item.answer_index)
               for item in items]
    mask_id = model.mask_id if mask_id is None else mask_id
    rows = []
    for w in scales:
        accuracy, _ = multiple_choice_accuracy(model, encoded, mask_id, cfg_scale=w, mc_num=mc_num,
                                               batch_size=batch_size, suffix=suffix, device=device)
        rows.append({"cfg_scale": w, "accuracy": accuracy.mean, "stderr": accuracy.stderr})
    return rows


def oracle_guidance_sweep(lookup, items, scales) -> list[dict]:
    """The Bayes oracle's multiple-choice accuracy at each guidance scale w.

    The oracle knows the task's exact law (``SkewedLookup.answer_probabilities``) and scores every choice with the
    exact guided distribution p_w(a | c) ∝ p(a | c)^(1+w) p(a)^(-w), i.e. by (1 + w) log p(a | c) - w log p(a) (the
    normaliser is shared by the choices of an item). w = 0 is maximum likelihood; w -> infinity ranks by the pointwise
    mutual information log p(a | c) - log p(a). Ties go to the first choice, as in ``multiple_choice_accuracy``.
    """
    marginal = lookup.answer_probabilities()
    conditionals = [lookup.answer_probabilities(item.key) for item in items]  # exact laws: computed once, not per w
    rows = []
    for w in scales:
        correct = []
        for item, conditional in zip(items, conditionals):
            scores = [(1 + w) * math.log(conditional[c]) - w * math.log(marginal[c]) for c in item.choices]
            predicted = max(range(len(scores)), key=scores.__getitem__)
            correct.append(float(predicted == item.answer_index))
        accuracy = torch.tensor(correct, dtype=torch.float64)
        stderr = accuracy.std().item() / math.sqrt(len(correct)) if len(correct) > 1 else float("nan")
        rows.append({"cfg_scale": w, "accuracy": accuracy.mean().item(), "stderr": stderr})
    return rows


def lookup_oracle_denoiser(lookup, tokenizer, mask_id: int):
    """The exact denoiser of the lookup's lines: log p(x^i = v | visible tokens) for every position, (B, L) -> (B, L, V).

    A line "k1 k2 k3 = a1 a2 a3 a4 ." has probability p(k1) p(k2) p(k3) p(a | k3): the first two key letters are
    independent and uniform, and only the last one (k3, next to "=") sets the answer's law. So every conditional is a
    sum over the 26 x |pool| pairs (k3, answer) that agree with the visible tokens, and positions 0 and 1 are uniform
    over the letters; a state that no line agrees with gets uniform outputs. L = 9 is a whole line, L = 8 the line
    cut after the answer. Put in place of a trained MDM, it shows what the guided ELBO scoring of ``guidance_sweep``
    gives with a perfect network: what is left of the gap to ``oracle_guidance_sweep`` is the estimator's, not the
    training's.
    """
    vocab_size = tokenizer.vocab_size
    check_mask_id(mask_id, vocab_size)
    pairs = [(letter, answer) for letter in KEY_LETTERS for answer in lookup.answers]
    weight = torch.tensor([lookup.answer_probabilities(letter)[answer] / len(KEY_LETTERS) for letter, answer in pairs],
                          dtype=torch.float64)  # p(k3, a); answer_probabilities reads only the key's last letter
    tails = torch.tensor([tokenizer.encode(f"{letter}={answer}{LOOKUP_LINE_END}") for letter, answer in pairs])
    letter_ids = torch.tensor(tokenizer.encode(KEY_LETTERS))
    full_length = tails.shape[1] + 2

    def denoiser(xt: torch.Tensor) -> torch.Tensor:
        if xt.dim() != 2 or xt.shape[1] not in (full_length - 1, full_length):
            raise ValueError(f"xt must have shape (batch, {full_length}) (a whole line) or (batch, {full_length - 1}) "
                             f"(cut after the answer), got {tuple(xt.shape)}")
        probs = torch.zeros(*xt.shape, vocab_size, dtype=torch.float64, device=xt.device)
        # from k3 on, the law is the list of (k3, answer) pairs' tokens with their probabilities
        probs[:, 2:] = posterior_marginals(tails[:, : xt.shape[1] - 2], weight, xt[:, 2:], mask_id, vocab_size)
        probs[:, :2, letter_ids.to(xt.device)] = 1 / len(KEY_LETTERS)  # k1, k2: uniform when masked, else seen
        head, head_shown = xt[:, :2], xt[:, :2] != mask_id
        probs[:, :2][head_shown] = torch.nn.functional.one_hot(head[head_shown], vocab_size).double()
        # A floor instead of log 0: guidance subtracts two branches' logits, and -inf - (-inf) would be NaN.
        return probs.clamp_min(1e-300).log()

    return denoiser


def branch_denoiser(conditional, unconditional, prompt_length: int, mask_id: int):
    """One denoiser per branch of guidance: rows whose prompt is all masks (the unconditional branch of
    ``guided_logits``) go to ``unconditional``, every other row to ``conditional``; outputs are log-probabilities.

    With a trained model in one branch and the exact denoiser in the other, it shows which branch of the trained
    model costs the guided score its accuracy.
    """
    if prompt_length < 1:
        raise ValueError(f"prompt_length={prompt_length} must be >= 1: the rows are told apart by their masked prompt")

    def denoiser(xt: torch.Tensor) -> torch.Tensor:
        unconditional_rows = (xt[:, :prompt_length] == mask_id).all(1)
        out = None
        for rows, branch in ((~unconditional_rows, conditional), (unconditional_rows, unconditional)):
            if bool(rows.any()):
                log_probs = torch.log_softmax(logits_of(branch, xt[rows]).double(), -1)
                if out is None:
                    out = log_probs.new_empty(*xt.shape, log_probs.shape[-1])
                out[rows] = log_probs
        return out

    return denoiser


# --- temporal shift --------------------------------------------------------------------------------------------

def drifted_chain(chain, delta: float, seed: int = 1):
    """A copy of ``chain`` with T_1 = normalize(T_0 + delta * noise), noise ~ U(0,1) entries (our toy temporal shift).

    delta = 0 returns the same law. The drifted chain starts from its own stationary law.
    """
    if delta < 0:
        raise ValueError(f"delta={delta} must be >= 0")
    noise = torch.rand(chain.transition.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    drifted = copy.copy(chain)
    transition = chain.transition + delta * noise
    drifted.transition = transition / transition.sum(1, keepdim=True)
    drifted.initial = drifted.stationary()
    drifted._powers = None  # the oracle's cache of matrix powers belongs to the old T
    return drifted


class LossSnapshots:
    """An ``eval_fn`` for the trainer that keeps a copy of the weights with their validation loss at every evaluation,
    so that a run can afterwards be cut back to the point where its loss matches another model's. SMDM's temporal
    shift example pairs an ARM with an MDM given ~16x its compute, i.e. roughly loss-matched.
    """

    def __init__(self, kind: str, source, num_windows: int = 256, draws: int = 8):
        self.kind, self.source, self.num_windows, self.draws = check_kind(kind), source, num_windows, draws
        self.losses, self.states = [], []

    def __call__(self, model) -> dict:
        loss = validation_loss(self.kind, model, self.source, self.num_windows, self.draws).mean
        self.losses.append(loss)
        self.states.append({name: value.detach().clone() for name, value in model.state_dict().items()})
        return {"val": loss}

    def load_closest(self, model, target: float) -> int:
        """Load into ``model`` the kept weights whose loss is nearest ``target``; return their index among the looks.
        That is the index in the run's ``TrainResult.evals``, unless the trainer averaged the weights
        (``ema_decay > 0``): then it looks twice per evaluation, the trained weights and then the averaged ones, and
        look i belongs to evaluation i // 2."""
        if not self.losses:
            raise ValueError("no snapshots yet: pass this object as eval_fn (with eval_every > 0) to the trainer")
        index = min(range(len(self.losses)), key=lambda i: abs(self.losses[i] - target))
        model.load_state_dict(self.states[index])
        return index


def shift_degradation(models: dict, before, after, num_windows: int = 256, draws: int = 8) -> dict:
    """Loss (nats/token) of each kind on the training law and on the drifted law, and the relative increase."""
    table = {}
    for kind, model in models.items():
        loss_before = validation_loss(kind, model, before, num_windows, draws)
        loss_after = validation_loss(kind, model, after, num_windows, draws)
        table[kind] = {"before": loss_before.mean, "before_se": loss_before.stderr, "after": loss_after.mean,
                       "after_se": loss_after.stderr, "relative_increase": loss_after.mean / loss_before.mean - 1}
    return table


# --- speed vs quality ------------------------------------------------------------------------------------------

def _timed(fn, device):
    """(result, seconds) of fn(), after one untimed warm-up call (first-call allocations, kernel choices)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


@torch.no_grad()
def speed_quality(arm, mdm, chain, length: int, mdm_steps, batch_size: int = 64, seed: int = 0) -> list[dict]:
    """Tokens/s, network calls per sequence and the true chain's NLL per token of samples (temperature 1) for

    * the ARM with its KV cache: one call per token;
    * the MDM with LLaDA's reverse process (random remasking): one call per step;
    * the MDM with RADD's cached tau-leaping (linear schedule): a call only at steps where the sequence reveals
      something, valid because LLaDA's MDM is time-free.

    Every sampler starts from the same seed; the data's entropy rate is the floor of the NLL.
    """
    device = device_of(arm)
    no_prompt = torch.empty(batch_size, 0, dtype=torch.long, device=device)  # puts the MDM's canvas on the device

    def arm_sampler(generator, steps):
        return sample_arm(arm, num_tokens=length, batch_size=batch_size, generator=generator).tokens, float(length)

    def llada_sampler(generator, steps):
        result = generate(mdm, no_prompt, gen_length=length, steps=steps, mask_id=mdm.mask_id, remasking="random",
                          temperature=1.0, generator=generator, record_history=False)
        return result.tokens, float(steps)

    def radd_cached_sampler(generator, steps):
        result = tau_leaping_sample(mdm, steps=steps, mask_id=mdm.mask_id, length=length, batch_size=batch_size,
                                    schedule="linear", cache=True, generator=generator, record_history=False)
        return result.tokens, result.mean_nfe

    def row(name, sampler, steps):
        (tokens, nfe), seconds = _timed(lambda: sampler(torch.Generator(device=device).manual_seed(seed), steps), device)
        nll = -chain.log_prob(tokens.cpu()).double() / length  # (B,) per sequence
        return {"sampler": name, "steps": steps, "nfe": nfe, "seconds": seconds,
                "tokens_per_s": batch_size * length / seconds,
                "nll_per_token": float(nll.mean()), "nll_stderr": float(nll.std() / len(nll) ** 0.5)}

    rows = [row("ARM + KV cache", arm_sampler, length)]
    for steps in mdm_steps:
        rows += [row("MDM", llada_sampler, steps), row("MDM + RADD cache", radd_cached_sampler, steps)]
    return rows


def fewest_matching_steps(rows: list[dict], sampler: str, tolerance: float = 0.02) -> dict | None:
    """The row of ``sampler`` with the fewest steps whose sample NLL is within ``tolerance`` nats of the ARM's
    (SMDM's S*), or None if no step count gets there."""
    names = sorted({r["sampler"] for r in rows})
    if sampler not in names or "ARM + KV cache" not in names:
        raise ValueError(f"sampler={sampler!r}: the rows hold {names}, and need the 'ARM + KV cache' row too")
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0 nats")
    arm = next(r for r in rows if r["sampler"] == "ARM + KV cache")
    matching = [r for r in rows if r["sampler"] == sampler and r["nll_per_token"] <= arm["nll_per_token"] + tolerance]
    return min(matching, key=lambda r: r["steps"]) if matching else None


__all__ = ["LineSet", "LossSnapshots", "MarkovSource", "complete", "drifted_chain", "exact_match",
           "fewest_matching_steps", "greedy_infill", "guidance_sweep", "oracle_guidance_sweep", "reverse_curse_scores", "shift_degradation",
           "speed_quality"]
