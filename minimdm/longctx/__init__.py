"""Long context for a masked diffusion LM, after UltraLLaDA (He et al., arXiv 2510.10481).

* ``rope``     -- RoPE scaling: none, position interpolation, classic NTK, critical-dimension NTK (LongLLaDA) and
  UltraLLaDA's diffusion-aware NTK, behind ``rope_scaling``; ``apply_rope_scaling`` puts one on a trained model.
* ``passkey``  -- synthetic passkey documents, distractor packs, and packing by direct concatenation, with
  end-of-document separators, or with per-document attention masks.
* ``training`` -- pretraining at T_train and post-training at the target length, on ``minimdm.train.train``, with
  LLaDA's pretraining loss plus its SFT loss on the passkey answers.
* ``evaluate`` -- passkey exact match over (length x depth), NELBO against length, and the wrong-document rate.
"""
from minimdm.longctx.evaluate import (DistractorResult, PasskeyGrid, distractor_rates, exact_match, nelbo_by_length,
                                      passkey_grid, predict_keys)
from minimdm.longctx.passkey import PACKING, PasskeyBatch, PasskeyTask, document_attention_mask
from minimdm.longctx.rope import (NTK_FAMILY, VARIANTS, RopeScaling, apply_rope_scaling, critical_dimension,
                                  rope_scaling, scaling_factor)
from minimdm.longctx.training import denoiser_with_mask, passkey_loss, post_train, pretrain

__all__ = ["DistractorResult", "NTK_FAMILY", "PACKING", "PasskeyBatch", "PasskeyGrid", "PasskeyTask", "RopeScaling",
           "VARIANTS", "apply_rope_scaling", "critical_dimension", "denoiser_with_mask", "distractor_rates",
           "document_attention_mask", "exact_match", "nelbo_by_length", "passkey_grid", "passkey_loss",
           "post_train", "predict_keys", "pretrain", "rope_scaling", "scaling_factor"]
