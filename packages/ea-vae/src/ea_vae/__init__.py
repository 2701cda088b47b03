"""ea_vae: the Slice VAE."""

__version__ = "0.1.0"
