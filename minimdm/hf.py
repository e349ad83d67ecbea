"""A Hugging Face ``transformers`` face for minimdm's Transformer (optional: the course runs without it).

    from minimdm.hf import MiniMDMConfig, MiniMDMModel
    hf_model = MiniMDMModel.from_native(trained_transformer, eos_token_id=tok.eos_id)
    hf_model.save_pretrained("my-mdm")                 # config.json + model.safetensors
    AutoModel.from_pretrained("my-mdm")                 # after ``import minimdm.hf`` registers the classes

``hf_model(input_ids).logits`` has shape (B, L, K), exactly what LLaDA's remote code returns, so the sampler
(``minimdm.mdm.sampler.generate``) and the likelihood functions (``minimdm.mdm.likelihood``) take either model;
``special_token_ids`` reads the mask and EOS ids from a config, so the same calls work on a real LLaDA
checkpoint (``mask_token_id`` 126336, EOS 126081, EoT 126348 per its code) on a GPU.

``import minimdm`` never imports ``transformers`` (it costs seconds): only importing this module does.
transformers 5 renamed ``PretrainedConfig`` to ``PreTrainedConfig``; either name is accepted here.
"""
from __future__ import annotations

from dataclasses import fields

import torch

try:
    import transformers
    from transformers import AutoConfig, AutoModel, PreTrainedModel
    from transformers.modeling_outputs import MaskedLMOutput
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("minimdm.hf needs the optional package `transformers`: pip install transformers safetensors") from error

from minimdm.nn.transformer import RotaryEmbedding, Transformer, TransformerConfig

_PreTrainedConfig = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig

# LLaDA-8B's ids (read in LLaDA's released code, arXiv 2502.09992), in the form generate() takes: generate(model, p, **LLADA_8B_TOKEN_IDS, ...)
LLADA_8B_TOKEN_IDS = {"mask_id": 126336, "eos_id": 126081, "eot_id": 126348}
_ARCHITECTURE_FIELDS = tuple(f.name for f in fields(TransformerConfig))


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
                 mask_id: int | None = None, eos_token_id: int | None = None, eot_token_id: int | None = None,
                 pad_token_id: int | None = None, **kwargs):
        self.vocab_size, self.n_layers, self.d_model, self.n_heads, self.max_len = vocab_size, n_layers, d_model, n_heads, max_len
        self.causal, self.mask_token, self.dropout, self.ffn_mult = causal, mask_token, dropout, ffn_mult
        self.rope_base, self.rope_scale, self.time_cond = rope_base, rope_scale, time_cond
        # minimdm's mask is the extra embedding row K = vocab_size, outside the vocabulary and never predicted.
        # (Named mask_id, not mask_token_id: transformers warns about a mask_token_id outside the vocabulary.)
        self.mask_id = vocab_size if mask_id is None and mask_token else mask_id
        self.eot_token_id = eot_token_id
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    def architecture(self) -> TransformerConfig:
        return TransformerConfig(**{name: getattr(self, name) for name in _ARCHITECTURE_FIELDS})


class MiniMDMModel(PreTrainedModel):
    """A ``PreTrainedModel`` around minimdm's ``Transformer``; forward(input_ids) -> MaskedLMOutput(logits=...)."""

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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels=None,
                return_dict: bool | None = None, **kwargs) -> MaskedLMOutput:
        """input_ids (B, L) -> logits (B, L, K). No attention mask: minimdm's MDMs are trained without one
        (as LLaDA's were, issue #90); a padding mask is refused rather than silently ignored."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask with zeros is not supported: minimdm models attend to every position; "
                             "left-pad with a real token (e.g. EOS) instead")
        if labels is not None:
            raise ValueError("labels are not supported: train with minimdm.mdm.loss / minimdm.mdm.sft")
        return MaskedLMOutput(logits=self.transformer(input_ids))


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
