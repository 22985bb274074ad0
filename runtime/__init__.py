"""The torch-free side of mirasol-edge: media decoding, chunking, tokenizing, bundle loading,
ONNX Runtime sessions, streaming state and generation.

Nothing under this package may import torch. Heavy imports (onnxruntime, av) happen in the
modules that need them; the names below load on first use.
"""

_LAZY = {
    "Runtime": "session",
    "RuntimeOptions": "session",
    "Stream": "stream",
    "StreamState": "engine",
    "Dims": "contract",
    "Bundle": "bundle",
    "BundleError": "bundle",
    "load_bundle": "bundle",
    "GenerationOptions": "generation",
    "MediaError": "media",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
