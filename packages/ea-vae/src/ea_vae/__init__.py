"""ea_vae: the Slice VAE."""

from .config import SliceVAEConfig
from .distribution import DiagonalGaussian
from .model import SliceVAE

__version__ = "0.1.0"

__all__ = ["DiagonalGaussian", "SliceVAE", "SliceVAEConfig", "__version__"]
