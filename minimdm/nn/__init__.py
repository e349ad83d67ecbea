from minimdm.nn.modes import evaluation_mode
from minimdm.nn.transformer import KVCache, Transformer, TransformerConfig

__all__ = ["KVCache", "Transformer", "TransformerConfig", "evaluation_mode"]
