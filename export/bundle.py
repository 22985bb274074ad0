"""export_bundle: every component to ONNX, validated, with its manifest, written atomically.

The bundle is assembled in a hidden sibling directory and renamed into place at the end, so an
interrupted or failed export never leaves a directory that looks like a bundle.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable

from mirasol_edge.export.components import build_components, export_component
from mirasol_edge.export.manifest import build_manifest, graph_metadata, write_manifest
from mirasol_edge.model import MirasolModel
from mirasol_edge.runtime.bundle import MANIFEST

PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET = 18  # the dynamo exporter's own opset; older ones lack ops it emits
MAX_OPSET = 25  # the newest the exporter converts to and onnxruntime (1.32) loads
DEFAULT_OPSET = 23  # ONNX's fused Attention op: 1.2-1.7x faster attention steps in onnxruntime >= 1.23 (BENCHMARKS.md)


def export_bundle(
    model: MirasolModel,
    out_dir: str | os.PathLike,
    precision: str = "fp32",
    opset: int | None = None,
    validate: bool = True,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    external_data: bool | None = None,
) -> Path:
    """Export every component of `model` to `out_dir` as a bundle (docs/bundle.md); returns its path.

    precision: fp32, fp16 (fp32 inputs/outputs) or int8 (dynamically quantised weights).
    opset: ONNX opset, MIN_OPSET..MAX_OPSET (default DEFAULT_OPSET).
    validate: check each graph against PyTorch on fresh shapes (raises ValidationError).
    force: replace an existing bundle (or empty directory) at out_dir.
    progress: called with one line per component (and per validated output).
    external_data: weights in <file>.onnx.data next to each graph; None: only from 1.5 GiB.
    Raises ValueError, in one sentence, for bad arguments or an out_dir it may not replace.
    """
    opset = check_export_args(out_dir, precision, opset, force)
    out = Path(out_dir)
    say = progress or (lambda line: None)
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    was_training = model.training
    model.eval()

    # Both named before they exist, so an interrupt that lands just after a mkdir still finds what to remove
    # (tempfile.mkdtemp hands the name back only after making the directory; a helper returning what it made, likewise).
    created = _missing_parents(out.parent)
    staging: Path | None = out.parent / f".{out.name}.partial-{secrets.token_hex(8)}"
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            staging = None
            raise ValueError(f"cannot create {out.parent} ({e.strerror}); choose a writable output directory.") from None
        try:
            staging.mkdir()  # 0o777 less the umask: a bundle is as readable as any new directory
        except OSError as e:
            staging = None  # not made here (a name taken is someone else's): nothing to remove
            raise ValueError(f"cannot write to {out.parent} ({e.strerror}); choose a writable output directory.") from None
        graphs = _export_all(model, staging, precision, opset, validate, external_data, say)
        tolerance = _tolerance(precision) if validate else None
        write_manifest(staging, build_manifest(model.cfg, staging, graphs, precision, opset, tolerance))
        _swap_into_place(staging, out)
    except BaseException:  # KeyboardInterrupt included: never leave a partial bundle behind
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_dirs(created)
        raise
    finally:
        model.train(was_training)
    return out


def check_export_args(out_dir: str | os.PathLike, precision: str, opset: int | None, force: bool) -> int:
    """ValueError, in one sentence, for arguments export_bundle would refuse; returns the opset to use."""
    opset = DEFAULT_OPSET if opset is None else opset
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} is not supported; choose one from {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}).")
    _check_out_dir(Path(out_dir), force)
    return opset


def _tolerance(precision: str) -> dict:
    from mirasol_edge.export.validate import TOLERANCES

    return vars(TOLERANCES[precision])


def _export_all(model, staging: Path, precision: str, opset: int, validate: bool, external_data, say) -> dict:
    """Every graph exported (converted, validated) into `staging`: name -> what build_manifest takes."""
    from mirasol_edge.export import precision as variants
    from mirasol_edge.export.validate import validate_component

    work = staging / ".fp32" if precision != "fp32" else staging
    work.mkdir(exist_ok=True)
    graphs = {}
    for component in build_components(model):
        start = time.perf_counter()
        fp32_path, path = work / component.file, staging / component.file
        metadata = graph_metadata(model.cfg, component.spec, precision)
        external = export_component(component, fp32_path, opset, metadata, external_data)
        kept = 0
        if precision == "fp16":
            kept = variants.to_fp16(fp32_path, path, external)
        elif precision == "int8":
            kept = variants.to_int8(fp32_path, path, external)
        if precision != "fp32":
            _stamp_metadata(path, metadata)
            for f in _graph_files(fp32_path):
                f.unlink()
        checks = validate_component(component, path, precision) if validate else []
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in _graph_files(path))
        note = f", {kept} nodes kept fp32" if kept else ""
        say(f"{component.name:<18} {seconds:6.1f} s  {size / 1e6:9.2f} MB{note}" + ("  validated" if validate else ""))
        for c in checks:
            say(f"  {c.line()}")
        graphs[component.name] = {
            "spec": component.spec,
            "files": [f.name for f in _graph_files(path)],
            "kept_fp32_nodes": kept,
            "validation": {c.output: {"max_abs": c.max_abs, "max_rel": c.max_rel, "limit": c.limit} for c in checks} if validate else None,
        }
    if work != staging:
        shutil.rmtree(work)
    return graphs


def _graph_files(path: Path) -> list[Path]:
    """The graph file and the external-data files its initializers point to."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path, *(path.parent / loc for loc in sorted(locations))]


def _stamp_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set metadata_props of a graph written by a converter (its external weights stay where they are)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save_model(model, str(path))


# -- the output directory ------------------------------------------------------------------------


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is a file; choose a directory for the bundle.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ValueError(f"{out} exists and is not empty; pass --force to replace it, or choose another directory.")
        if not _is_bundle(out):
            raise ValueError(f"{out} is not empty and is not a bundle; --force only replaces a bundle, so choose another directory.")
    parent = _existing_ancestor(out.parent)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to {parent}; choose a writable output directory.")


def _is_bundle(path: Path) -> bool:
    """A directory written by `mirasol-edge export`, of this format or an older one (so --force can replace it)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("mirasol-edge-bundle/")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _missing_parents(parent: Path) -> list[Path]:
    """The directories `mkdir -p parent` would create, deepest first."""
    missing = []
    p = parent.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    return missing


def _remove_dirs(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first; only if still empty
        try:
            d.rmdir()
        except OSError:
            pass


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename the finished bundle to `out`; an existing one is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
