"""torch -> ONNX: one exporter per component, the bundle writer, validation against PyTorch.

    from mirasol_edge.export import export_bundle
    export_bundle(model, "bundle/", precision="int8")   # see docs/bundle.md

Bundles are read (and their files checked) by mirasol_edge.runtime.bundle, torch-free.
"""

from mirasol_edge.export.bundle import PRECISIONS, export_bundle
from mirasol_edge.export.validate import TOLERANCES, ValidationError

__all__ = ["PRECISIONS", "TOLERANCES", "ValidationError", "export_bundle"]
