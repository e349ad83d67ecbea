"""The autoregressive baseline (ARM) on the course's backbone, and one harness that trains and scores both kinds.

SMDM compares masked diffusion with autoregression on equal terms (Nie et al. 2024, arXiv 2410.18514, its
scaling study): the *same*
Transformer with the causal mask on or off, the same data, the same optimiser, the same FLOP count. Here:

* the ARM is ``Transformer(causal=True)`` trained with next-token cross-entropy;
* its likelihood is **exact**:  -log p(x) = -sum_{i=0}^{T-1} log p_theta(x^i | x^{<i})  (chain rule);
* the MDM's is an **upper bound**, the NELBO (docs/derivations.md), estimated by Monte Carlo with a standard error.

**Start token.** To score the *whole* window x^0..x^{T-1} (the same quantity the MDM bounds), the first
character needs something to be predicted from. The ARM never masks anything, so we reuse the embedding row
that the MDM keeps for its mask (id K = ``model.mask_id``) as a start-of-window token: the ARM reads
[S, x^0, ..., x^{T-2}] and predicts x^0, ..., x^{T-1}. Both kinds then see windows of the same length T,
cost the same FLOPs per token, and report nats per token of the same windows.

The sampler decodes left to right with a KV cache (one new position per network call) or, as the reference
the cache is tested against, by recomputing the full prefix at every step; both use the MDM sampler's
float64 Gumbel-max so that one seed gives the same tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minimdm.data import TokenStream
from minimdm.mdm.denoiser import device_of
from minimdm.mdm.elbo import Estimate
from minimdm.mdm.loss import mdm_pretrain_loss
from minimdm.mdm.sampler import SampleResult, gumbel_argmax
from minimdm.nn import KVCache
from minimdm.recipes import TextRecipe, build_model, validation_nelbo
from minimdm.train import TrainConfig, TrainResult, train

KINDS = ("arm", "mdm")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: allowed values are {KINDS}")
    return kind


def start_token_id(model) -> int:
    """The id the ARM reads before the first token: the extra embedding row (the MDM's mask row)."""
    if not model.config.causal:
        raise ValueError("start_token_id is for the ARM: build the model with causal=True")
    if model.mask_id is None:
        raise ValueError("the ARM needs the extra embedding row as its start token: build it with mask_token=True")
    return model.mask_id


def shifted_inputs(x: torch.Tensor, start_id: int) -> torch.Tensor:
    """[S, x^0, ..., x^{T-2}]: the ARM's input for predicting x^0..x^{T-1}. (B, T) -> (B, T)."""
    start = torch.full_like(x[:, :1], start_id)
    return torch.cat([start, x[:, :-1]], dim=1)


def arm_loss(model, x: torch.Tensor, start_id: int) -> torch.Tensor:
    """Next-token cross-entropy, mean over all B*T tokens: (1/BT) sum_b sum_i -log p_theta(x_b^i | x_b^{<i})."""
    logits = model(shifted_inputs(x, start_id))  # (B, T, K)
    return F.cross_entropy(logits.float().flatten(0, 1), x.flatten())


@torch.no_grad()
def token_nll(model, x: torch.Tensor) -> torch.Tensor:
    """Exact per-token -log p_theta(x^i | x^{<i}) of windows x (B, T), in float64: (B, T). Summed over i it is
    -log p_theta(x), the ARM's exact negative log-likelihood of the window."""
    logits = model(shifted_inputs(x, start_token_id(model)))
    log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, T, K)
    return -log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def validation_nll(model, stream: TokenStream, num_windows: int, batch_size: int = 64) -> Estimate:
    """Exact NLL in nats per token on the held-out windows ``validation_nelbo`` uses (same windows, same unit).

    One observation per window (its mean NLL per token); the standard error is over windows, i.e. it is the
    spread of the data alone (there is no Monte Carlo noise in an exact likelihood).
    """
    device = device_of(model)
    windows = stream.windows("val", num_windows).to(device)
    per_window = [token_nll(model, chunk).mean(1) for chunk in windows.split(batch_size)]
    return Estimate.from_draws(torch.cat(per_window))


# --- sampling --------------------------------------------------------------------------------------------------

def filter_top_k(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf (top_k=None keeps all). (..., K) -> (..., K)."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive integer or None")
    kth_largest = logits.topk(top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, -torch.inf)


@torch.no_grad()
def sample_arm(model, prompt: torch.Tensor | None = None, *, num_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, batch_size: int = 1, use_cache: bool = True, generator=None,
               record_history: bool = False) -> SampleResult:
    """Generate ``num_tokens`` tokens after ``prompt`` (B, P) (or from nothing, ``batch_size`` rows).

    x^i ~ softmax(top_k(logits_theta(x^{<i})) / temperature), one token per network call. With ``use_cache`` the
    keys and values of the prefix are kept (``KVCache``), so each call processes one new position; without it
    the whole prefix is recomputed (the reference path: L calls of growing length). ``tokens`` excludes the
    start token; ``frames`` (if recorded) show the canvas filling from the left, unwritten positions as mask.
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens} must be a positive integer")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    start_id = start_token_id(model)
    device = device_of(model)
    if prompt is None:
        prompt = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    if prompt.dim() != 2:
        raise ValueError(f"prompt must have shape (batch, prompt_length), got {tuple(prompt.shape)}")
    B, P = prompt.shape
    sequence = torch.cat([torch.full((B, 1), start_id, dtype=torch.long, device=device), prompt.to(device)], dim=1)
    result = SampleResult(tokens=prompt, prompt_length=P, mask_id=start_id)
    if record_history:
        canvas = torch.cat([prompt.cpu(), torch.full((B, num_tokens), start_id, dtype=torch.long)], dim=1)
        result.frames.append(canvas.clone())
    cache = KVCache() if use_cache else None
    new_input = sequence  # the positions the next call has not seen yet
    for step in range(num_tokens):
        logits = model(new_input, kv_cache=cache) if use_cache else model(sequence)
        result.nfe += 1
        next_logits = filter_top_k(logits[:, -1], top_k)  # (B, K)
        next_token = gumbel_argmax(next_logits, temperature, generator)  # (B,)
        sequence = torch.cat([sequence, next_token[:, None]], dim=1)
        new_input = next_token[:, None]
        if record_history:
            canvas[:, P + step] = next_token.cpu()
            result.frames.append(canvas.clone())
    result.tokens = sequence[:, 1:]
    return result


# --- one harness for both kinds --------------------------------------------------------------------------------

def loss_function(kind: str, model):
    """loss_fn(model, x0) for the trainer: next-token CE for the ARM, LLaDA's pretraining loss for the MDM."""
    if check_kind(kind) == "arm":
        start_id = start_token_id(model)
        return lambda m, x: arm_loss(m, x, start_id)
    mask_id = model.mask_id
    return lambda m, x: mdm_pretrain_loss(m, x, mask_id)


def validation_loss(kind: str, model, stream: TokenStream, num_windows: int, draws: int = 8,
                    batch_size: int = 64, seed: int = 0) -> Estimate:
    """Nats per token on the same held-out windows: exact NLL (ARM) or the l-estimator NELBO (MDM), with SE."""
    if check_kind(kind) == "arm":
        return validation_nll(model, stream, num_windows, batch_size)
    return validation_nelbo(model, stream, num_windows, draws, batch_size, seed)


def train_kind(recipe: TextRecipe, kind: str, stream: TokenStream, vocab_size: int, device="cpu", *,
               progress: bool = True, compile: bool = False, max_seconds: float | None = None, eval_fn=None,
               eval_every: int = 0, checkpoint_dir=None, model=None, loss_fn=None, **train_overrides):
    """Train the recipe's network as ``kind`` on ``stream`` with the shared trainer. Returns (model, TrainResult).

    ``model``: an already built (or ``torch.compile``-wrapped) network of this recipe and kind; by default a
    fresh one. ``loss_fn``: the trainer's loss (default ``loss_function(kind, model)``; e.g. RADD's k-DCE for an
    MDM). ``train_overrides`` go to ``TrainConfig`` (e.g. betas=(0.9, 0.99) for nanoGPT's optimiser).
    """
    if model is None:
        model = build_model(recipe, vocab_size, causal=check_kind(kind) == "arm")
    config = TrainConfig(**{**dict(steps=recipe.steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                                   seed=recipe.seed, device=str(device), progress=progress, compile=compile,
                                   log_every=max(1, recipe.steps // 20), max_seconds=max_seconds,
                                   eval_every=eval_every, checkpoint_dir=checkpoint_dir), **train_overrides})
    loss_fn = loss_fn or loss_function(kind, model)
    result: TrainResult = train(model, loss_fn, lambda step: stream.batch(recipe.batch_size), config, eval_fn=eval_fn)
    return model.eval(), result


__all__ = ["KINDS", "arm_loss", "filter_top_k", "loss_function", "sample_arm", "shifted_inputs", "start_token_id",
           "token_nll", "train_kind", "validation_loss", "validation_nll"]
