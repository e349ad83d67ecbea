"""minimdm: masked diffusion language models, built from scratch to be read."""
__version__ = "0.1.0"
from minimdm.pretrained import load_pretrained  # noqa: E402,F401  (one call loads a shipped model)
