"""torch -> ONNX: one exporter per component, the bundle writer, validation against PyTorch.

    from mirasol_edge.export import export_bundle, verify_manifest
    export_bundle(model, "bundle/", precision="int8")   # see docs/bundle.md
    verify_manifest("bundle/")                           # sha256 of every file; torch-free

Names load on first use: `verify_manifest` and `read_manifest` need neither torch nor onnx.
"""

_LAZY = {
    "export_bundle": "bundle",
    "PRECISIONS": "bundle",
    "ValidationError": "validate",
    "TOLERANCES": "validate",
    "verify_manifest": "manifest",
    "read_manifest": "manifest",
    "check_files": "manifest",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
