"""mirasol-edge: train, export and run a Mirasol3B-style video + audio + text model.

This package's PyTorch side (config, model, data, training) imports torch lazily, in the
modules that need it, so that `mirasol_edge.runtime` and the runtime CLI work without it.
"""

__version__ = "0.1.0"
