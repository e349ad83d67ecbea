"""A Hugging Face ``transformers`` face for minimdm's Transformer (optional: the course runs without it).

    from minimdm.hf import MiniMDMModel
    hf_model = MiniMDMModel.from_native(trained_transformer, eos_token_id=tok.eos_id)
    hf_model.save_pretrained("my-mdm", tokenizer=tok, card=dict(corpus=..., nelbo=..., nelbo_se=...))

The folder then loads with the usual calls, in a process that never imports minimdm by hand:

    model = AutoModelForMaskedLM.from_pretrained("my-mdm", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained("my-mdm", trust_remote_code=True)
    out = model.generate(tokenizer(text, return_tensors="pt").input_ids, steps=32, gen_length=32)

``save_pretrained`` writes config.json (with ``auto_map``), model.safetensors, ``modeling_minimdm.py`` (the remote
code: it imports the classes below from the minimdm package, which must be installed), the tokenizer in its
``PreTrainedTokenizerFast`` form (``minimdm.data.tokenizers.hf_tokenizer``; no custom code) and a model card.

``hf_model(input_ids).logits`` has shape (B, L, K), exactly what LLaDA's remote code returns, so the sampler
(``minimdm.mdm.sampler.generate``) and the likelihood functions (``minimdm.mdm.likelihood``) take either model;
``model.generate`` is that sampler with LLaDA's argument names. ``special_token_ids`` reads the mask and EOS ids
from a config, so the same calls work on a real LLaDA checkpoint (``mask_token_id`` 126336, EOS 126081, EoT 126348
per its code) on a GPU.

``import minimdm`` never imports ``transformers`` (it costs seconds): only importing this module does.
transformers 5 renamed ``PretrainedConfig`` to ``PreTrainedConfig``; either name is accepted here.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path

import torch

try:
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PreTrainedModel
    from transformers.modeling_outputs import MaskedLMOutput
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("minimdm.hf needs the optional package `transformers`: pip install transformers safetensors") from error

from minimdm.course import COURSE_REPOSITORY
from minimdm.mdm import sampler
from minimdm.nn.transformer import RotaryEmbedding, Transformer, TransformerConfig

_PreTrainedConfig = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig

# LLaDA-8B's ids (read in LLaDA's released code, arXiv 2502.09992), in the form generate() takes: generate(model, p, **LLADA_8B_TOKEN_IDS, ...)
LLADA_8B_TOKEN_IDS = {"mask_id": 126336, "eos_id": 126081, "eot_id": 126348}
_ARCHITECTURE_FIELDS = tuple(f.name for f in fields(TransformerConfig))
INSTALL = f"pip install git+https://github.com/{COURSE_REPOSITORY}"

# The remote code that save_pretrained writes beside the weights. Its classes are subclasses, so that what
# transformers records on a remotely loaded class (its auto class) stays off minimdm's own classes.
REMOTE_CODE_FILE = "modeling_minimdm.py"
REMOTE_CODE = f'''"""Remote code of a minimdm masked diffusion model: the classes live in the minimdm package."""
try:
    from minimdm import hf as _minimdm_hf
except ModuleNotFoundError as error:
    if not (error.name or "").startswith("minimdm"):
        raise
    raise ImportError("this model's code is the minimdm package, which is not installed: {INSTALL}") from None


class MiniMDMConfig(_minimdm_hf.MiniMDMConfig):
    pass


class MiniMDMModel(_minimdm_hf.MiniMDMModel):
    config_class = MiniMDMConfig
'''
AUTO_MAP = {"AutoConfig": "modeling_minimdm.MiniMDMConfig", "AutoModel": "modeling_minimdm.MiniMDMModel",
            "AutoModelForMaskedLM": "modeling_minimdm.MiniMDMModel"}


def _rebuild_rope(rope: RotaryEmbedding) -> None:
    if rope.cos.device.type == "meta":
        return  # still a placeholder: it is rebuilt once the model is materialised
    rope._build(rope.cos.shape[0], device=rope.cos.device)


class MiniMDMConfig(_PreTrainedConfig):
    """The fields of ``TransformerConfig`` plus the special token ids the sampler needs."""

    model_type = "minimdm"

    def __init__(self, vocab_size: int = 64, n_layers: int = 4, d_model: int = 128, n_heads: int = 4,
                 max_len: int = 256, causal: bool = False, mask_token: bool = True, dropout: float = 0.0,
                 ffn_mult: float = 8 / 3, rope_base: float = 10000.0, rope_scale: float = 1.0, time_cond: bool = False,
                 autocast_residual: bool = False, mask_id: int | None = None, eos_token_id: int | None = None,
                 eot_token_id: int | None = None, pad_token_id: int | None = None, **kwargs):
        self.vocab_size, self.n_layers, self.d_model, self.n_heads, self.max_len = vocab_size, n_layers, d_model, n_heads, max_len
        self.causal, self.mask_token, self.dropout, self.ffn_mult = causal, mask_token, dropout, ffn_mult
        self.rope_base, self.rope_scale, self.time_cond = rope_base, rope_scale, time_cond
        self.autocast_residual = autocast_residual
        # minimdm's mask is the extra embedding row K = vocab_size, outside the vocabulary and never predicted.
        # (Named mask_id, not mask_token_id: transformers warns about a mask_token_id outside the vocabulary.)
        self.mask_id = vocab_size if mask_id is None and mask_token else mask_id
        self.eot_token_id = eot_token_id
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    def architecture(self) -> TransformerConfig:
        return TransformerConfig(**{name: getattr(self, name) for name in _ARCHITECTURE_FIELDS})


class MiniMDMModel(PreTrainedModel):
    """A ``PreTrainedModel`` around minimdm's ``Transformer``; forward(input_ids) -> MaskedLMOutput(logits=...).

    Registered for ``AutoModel`` and ``AutoModelForMaskedLM``: the head predicts the K real tokens at every position.
    """

    config_class = MiniMDMConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"

    def __init__(self, config: MiniMDMConfig):
        super().__init__(config)
        self.transformer = Transformer(config.architecture())
        self.post_init()

    def _init_weights(self, module):
        """Leave the weights to minimdm's own initialisation; only recompute the RoPE tables.

        transformers (v5) builds the model on the meta device before loading a checkpoint and gives the
        non-persistent buffers (the RoPE cos/sin tables, computed from the config and never saved) empty
        placeholders; they must be filled again from the config."""
        if isinstance(module, RotaryEmbedding):
            _rebuild_rope(module)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        for module in model.modules():  # whatever the transformers version did with the buffers, recompute them
            if isinstance(module, RotaryEmbedding):
                _rebuild_rope(module)
        return model

    @classmethod
    def from_native(cls, model: Transformer, **token_ids) -> "MiniMDMModel":
        """Wrap a trained native Transformer (weights shared, not copied). token_ids: eos_token_id=..., etc."""
        with torch.random.fork_rng(devices=[]):  # the throw-away initial weights must not move the global RNG
            hf_model = cls(MiniMDMConfig(**model.config.to_dict(), **token_ids))
        hf_model.transformer = model
        return hf_model

    def get_input_embeddings(self):
        return self.transformer.embed

    def _check_input_ids(self, input_ids: torch.Tensor) -> None:
        rows = self.transformer.embed.num_embeddings
        outside = (input_ids < 0) | (input_ids >= rows)
        if bool(outside.any()):
            value = int(input_ids[outside][0])
            tokens = f"tokens 0..{self.config.vocab_size - 1}"
            allowed = f"{tokens}, mask {self.config.mask_id} = config.mask_id" if self.config.mask_token else tokens
            llada = [name for name, token_id in LLADA_8B_TOKEN_IDS.items() if token_id == value]
            llada = f"; {value} is LLaDA-8B's {llada[0]}, not this model's" if llada else ""
            raise ValueError(f"input_ids contain {value}, outside this model's ids 0..{rows - 1} ({allowed}){llada}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels=None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs):
        """input_ids (B, L) -> MaskedLMOutput(logits (B, L, K), hidden_states) or, with return_dict=False, a tuple.

        No attention mask: minimdm's MDMs are trained without one (as LLaDA's were, issue #90 of ML-GSAI/LLaDA);
        a padding mask is refused rather than silently ignored, and so is any argument this model cannot honour.
        ``hidden_states`` holds n_layers + 1 tensors: each block's input, then the final normed output.
        """
        unsupported = sorted(name for name, value in kwargs.items() if value not in (None, False))
        if unsupported:
            raise ValueError(f"unsupported arguments {unsupported}: this model takes input_ids, attention_mask (all "
                             "ones), output_hidden_states and return_dict")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask with zeros is not supported: minimdm models attend to every position; "
                             "left-pad with a real token (e.g. EOS) instead")
        if labels is not None:
            raise ValueError("labels are not supported: train with minimdm.mdm.loss / minimdm.mdm.sft")
        self._check_input_ids(input_ids)
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        hidden_states = [] if output_hidden_states else None
        logits = self.transformer(input_ids, hidden_states=hidden_states)
        hidden_states = tuple(hidden_states) if output_hidden_states else None
        if not return_dict:
            return (logits,) if hidden_states is None else (logits, hidden_states)
        return MaskedLMOutput(logits=logits, hidden_states=hidden_states)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                 steps: int = 128, gen_length: int = 128, block_length: int | None = None, temperature: float = 0.0,
                 cfg_scale: float = 0.0, remasking: str = "low_confidence", **options) -> torch.Tensor:
        """LLaDA's ``generate`` arguments (arXiv 2502.09992, §2.4) -> tokens (B, P + gen_length), prompt included.

        Calls ``minimdm.mdm.sampler.generate`` with the mask, EOS and EoT ids of this model's config;
        ``options`` go to it unchanged (``generator``, ``schedule``, ``logits_eos_inf``, ...). ``block_length=None``
        is one block (LLaDA's default 128 equals its default gen_length). Call the sampler directly for its
        history (``record_history=True``).
        """
        allowed = set(inspect.signature(sampler.generate).parameters) - {"denoiser", "prompt"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"generate got {unknown}: not arguments of minimdm.mdm.sampler.generate, whose arguments "
                             f"are {sorted(allowed)} (gen_length is the number of new tokens)")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask with zeros is not supported: left-pad prompts with a real token instead")
        if input_ids is not None:
            self._check_input_ids(input_ids)
        ids = special_token_ids(self.config)
        arguments = {**ids, "vocab_size": self.config.vocab_size, "record_history": False,
                     "device": self.device, **options}
        return sampler.generate(self, input_ids, gen_length=gen_length, steps=steps, block_length=block_length,
                                temperature=temperature, cfg_scale=cfg_scale, remasking=remasking, **arguments).tokens

    def save_pretrained(self, save_directory, *args, tokenizer=None, card: dict | None = None, **kwargs):
        """transformers' save_pretrained, plus the remote code, the tokenizer (any minimdm tokenizer or its HF form)
        and the model card README.md (``card``: see ``model_card``; numbers not given are written as not recorded)."""
        directory = Path(save_directory)
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        (directory / REMOTE_CODE_FILE).write_text(REMOTE_CODE)
        if tokenizer is not None:
            from minimdm.data.tokenizers import hf_tokenizer

            if not isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
                tokenizer = hf_tokenizer(tokenizer)
            if tokenizer.mask_token_id != self.config.mask_id:
                raise ValueError(f"tokenizer's mask_token_id={tokenizer.mask_token_id} differs from the model's "
                                 f"mask_id={self.config.mask_id}")
            tokenizer.save_pretrained(save_directory)
        (directory / "README.md").write_text(model_card(self, card, folder=directory.name))


CARD_FIELDS = ("name", "summary", "corpus", "recipe", "training", "nelbo", "nelbo_se", "unit", "measured_with")


def model_card(model: MiniMDMModel, card: dict | None = None, folder: str = "path/to/folder") -> str:
    """The README.md of a saved model: what it is, how it was trained and measured, how to load it and sample.

    card: name, summary, corpus, recipe (dict or str), training (str), nelbo, nelbo_se, unit, measured_with; the
    numbers are the caller's measurements (none given: the card says so).
    """
    card = dict(card or {})
    unknown = sorted(set(card) - set(CARD_FIELDS))
    if unknown:
        raise ValueError(f"card has unknown fields {unknown}; allowed: {CARD_FIELDS}")
    config = model.config
    name = card.get("name") or folder
    recipe = card.get("recipe")
    recipe = json.dumps(recipe, sort_keys=True) if isinstance(recipe, dict) else recipe
    if card.get("nelbo") is None:
        nelbo = "not recorded"
    else:
        se = "" if card.get("nelbo_se") is None else f" ± {card['nelbo_se']:.4f}"
        how = f" ({card['measured_with']})" if card.get("measured_with") else ""
        nelbo = f"{card['nelbo']:.4f}{se} {card.get('unit', 'nats per token')}{how}"
    parameters = sum(p.numel() for p in model.parameters())
    mask = f"id {config.mask_id} (`tokenizer.mask_token`), an input only" if config.mask_token else "none"
    rows = [("corpus", card.get("corpus") or "not recorded"), ("recipe", f"`{recipe}`" if recipe else "not recorded"),
            ("training", card.get("training") or "not recorded"), ("validation NELBO ± SE", nelbo),
            ("network", f"{'causal' if config.causal else 'bidirectional'} Transformer, {config.n_layers} layers, "
                        f"d_model {config.d_model}, {config.n_heads} heads, RoPE, trained context {config.max_len}"),
            ("vocabulary", f"{config.vocab_size} tokens; mask {mask}"), ("parameters", f"{parameters:,} (float32)")]
    rows = [(key, str(value).replace("|", "\\|")) for key, value in rows]  # a bare | would end the table cell
    summary = card.get("summary") or ("A masked diffusion language model (LLaDA's objective, arXiv 2502.09992) "
                                      "trained with minimdm, a course on masked diffusion language models.")
    lines = [
        "---", "library_name: transformers", "tags: [minimdm, masked-diffusion, llada]", "---", "",
        f"# {name}", "", summary, "",
        "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows), "",
        "NELBO is an upper bound on the negative log-likelihood, ± one Monte Carlo standard error.", "",
        "## Load", "",
        f"The model's code (`{REMOTE_CODE_FILE}`, run with `trust_remote_code=True`) imports the `minimdm` package: "
        f"install it first (`{INSTALL}`). The tokenizer needs no custom code.", "",
        "```python",
        "from transformers import AutoModelForMaskedLM, AutoTokenizer",
        f"model = AutoModelForMaskedLM.from_pretrained(\"{folder}\", trust_remote_code=True).eval()",
        f"tokenizer = AutoTokenizer.from_pretrained(\"{folder}\", trust_remote_code=True)",
        "```", "",
        "`model(input_ids).logits` has shape (batch, length, vocabulary): the denoiser's prediction at every position "
        "(attention sees every position; there is no padding mask).", "",
        "## Sample", "",
        "`model.generate` is minimdm's sampler, `minimdm.mdm.sampler.generate` (LLaDA's, arXiv 2502.09992, §2.4), "
        "with LLaDA's arguments and the mask and EOS ids of `config.json`. It returns the prompt and the "
        "`gen_length` new tokens:", "",
        "```python",
        "prompt = tokenizer(text, return_tensors=\"pt\").input_ids",
        *(["# a chat model's prompt is its chat template:",
           "# prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
           "#                                         return_dict=True)[\"input_ids\"]"] if config.eot_token_id is not None else []),
        "tokens = model.generate(prompt, steps=32, gen_length=32, block_length=32, temperature=0.0,",
        "                        cfg_scale=0.0, remasking=\"low_confidence\")",
        "print(tokenizer.decode(tokens[0, prompt.shape[1]:], skip_special_tokens=True))",
        "```", "",
        "For the sampler's history (every frame and confidence), call `minimdm.mdm.sampler.generate(model, prompt, "
        "...)` directly.",
    ]
    return "\n".join(lines) + "\n"


def to_hugging_face(pretrained, directory) -> MiniMDMModel:
    """Save a shipped model (``minimdm.load_pretrained(name)``) as a Hugging Face folder; returns the wrapped model.

    The weights are float32 copies of the shipped float16 ones, so the card quotes the NELBO measured with them when
    the export recorded it."""
    tokenizer, validation = pretrained.tokenizer, pretrained.card.get("validation", {})
    ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_id", None) for name in ("eos", "eot", "pad")}
    hf_model = MiniMDMModel.from_native(pretrained.model, **ids)
    float16 = "nelbo_float16" in validation
    training = pretrained.card.get("training") or {}
    run = f"{training.get('steps')} steps" + (f" on {training['device']}" if training.get("device") else "")
    card = {"name": pretrained.name, "summary": pretrained.card.get("summary") or None,
            "corpus": pretrained.card.get("corpus"), "recipe": pretrained.card.get("recipe"),
            "training": run if training.get("steps") else None,
            "nelbo": validation.get("nelbo_float16" if float16 else "nelbo"),
            "nelbo_se": validation.get("se_float16" if float16 else "se"), "unit": validation.get("unit"),
            "measured_with": validation.get("measured_with_float16" if float16 else "measured_with")}
    hf_model.save_pretrained(directory, tokenizer=tokenizer, card={k: v for k, v in card.items() if v is not None})
    return hf_model


def special_token_ids(config) -> dict[str, int | None]:
    """{mask_id, eos_id, eot_id} read from a config (or a model), for ``generate(..., **ids)``-style calls.

    Reads minimdm's ``mask_id`` or the usual ``mask_token_id``; LLaDA-8B's are in ``LLADA_8B_TOKEN_IDS``.
    """
    config = getattr(config, "config", config)
    mask_id = getattr(config, "mask_id", None)
    mask_id = getattr(config, "mask_token_id", None) if mask_id is None else mask_id
    if mask_id is None:
        raise ValueError("the config has neither mask_id nor mask_token_id; set one (LLaDA-8B uses 126336)")
    return {"mask_id": mask_id, "eos_id": getattr(config, "eos_token_id", None),
            "eot_id": getattr(config, "eot_token_id", None)}


AutoConfig.register(MiniMDMConfig.model_type, MiniMDMConfig, exist_ok=True)
AutoModel.register(MiniMDMConfig, MiniMDMModel, exist_ok=True)
AutoModelForMaskedLM.register(MiniMDMConfig, MiniMDMModel, exist_ok=True)
