"""minimdm: masked diffusion language models, built from scratch to be read."""
__version__ = "0.1.0"
