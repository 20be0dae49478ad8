"""ctxtag: user-aware contextual music auto-tagging in JAX/Flax."""

__version__ = "0.1.0"
