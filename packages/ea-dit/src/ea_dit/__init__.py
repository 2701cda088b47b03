"""ea_dit."""

__version__ = "0.1.0"
