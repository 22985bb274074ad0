"""What a bundle states beside its graphs (docs/bundle.md): manifest.json, and the metadata of every graph.

Writing only: bundles are read, and checked, by the runtime (`mirasol_edge.runtime.bundle`).
"""

from __future__ import annotations

import json
from pathlib import Path

from mirasol_edge.runtime.bundle import MANIFEST, media_rules, sha256_of, tokenizer_spec
from mirasol_edge.runtime.contract import FORMAT, GraphSpec, bundle_config

MAX_NEW_TOKENS = 16  # the runtime's default answer length


def stated(cfg) -> dict:
    """The sections a bundle states once, in its manifest, and again inside every graph (its metadata)."""
    return {
        "config": bundle_config(cfg.to_dict()),
        "tokenizer": tokenizer_spec(),
        "media": media_rules(),
        "runtime_defaults": {"max_new_tokens": MAX_NEW_TOKENS},
    }


def graph_metadata(cfg, spec: GraphSpec, precision: str) -> dict[str, str]:
    """What a client in any language needs from one graph alone (ONNX metadata_props are strings)."""
    return {
        "format": FORMAT,
        "component": spec.name,
        "precision": precision,
        **{key: json.dumps(value, sort_keys=True) for key, value in stated(cfg).items()},
        "inputs": json.dumps({n: s.to_dict() for n, s in spec.inputs.items()}),
        "outputs": json.dumps({n: s.to_dict() for n, s in spec.outputs.items()}),
    }


def build_manifest(cfg, bundle: Path, graphs: dict, precision: str, opset: int, tolerance: dict | None) -> dict:
    """The manifest of the graphs written to `bundle`.

    graphs: name -> {"spec": GraphSpec, "files": [graph file, external data files...], "kept_fp32_nodes": int,
    "validation": {output: {max_abs, max_rel, limit}} or None}; tolerance: {atol, rtol} validated against, or None.
    """
    files, components = {}, {}
    for name, g in graphs.items():
        files.update({f: {"sha256": sha256_of(bundle / f), "bytes": (bundle / f).stat().st_size} for f in g["files"]})
        spec: GraphSpec = g["spec"]
        components[name] = {
            "file": spec.file,
            "external_data": [{"file": f} for f in g["files"][1:]],
            "inputs": {n: s.to_dict() for n, s in spec.inputs.items()},
            "outputs": {n: s.to_dict() for n, s in spec.outputs.items()},
            "kept_fp32_nodes": g["kept_fp32_nodes"],
            "validation": g["validation"],
        }
    return {
        "format": FORMAT,
        **stated(cfg),
        "precision": precision,
        "opset": opset,
        "producer": _versions(),
        "tolerance": tolerance,
        "components": components,
        "files": files,  # every file of the bundle but the manifest, once: its sha256 and size
    }


def write_manifest(bundle: Path, manifest: dict) -> Path:
    path = Path(bundle) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("mirasol-edge", "torch", "torchaudio", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out
