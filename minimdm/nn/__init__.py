from minimdm.nn.transformer import KVCache, Transformer, TransformerConfig

__all__ = ["KVCache", "Transformer", "TransformerConfig"]
