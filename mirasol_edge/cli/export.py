"""Commands of the exporter: export (needs torch), inspect (torch-free: manifest + hashlib)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional

import typer

from mirasol_edge.cli.app import json_option, sigterm_as_interrupt, write_json


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) written by mirasol-edge train or init."),
    out_dir: Path = typer.Argument(..., help="Bundle directory to write (docs/bundle.md)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (fp32 inputs/outputs) or int8 (quantised weights)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset, 18 to 25 (default 23)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at OUT_DIR."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check every graph against PyTorch."),
    external_data: bool = typer.Option(False, "--external-data", help="Weights in <graph>.onnx.data files even below 1.5 GiB."),
    json_out: Optional[Path] = json_option(
        "checkpoint, bundle, precision, opset, seconds, files {file: bytes}, total_bytes, "
        "validation {component: {output: {max_abs, max_rel, limit}}} (null with --no-validate)"),
):
    """Export a checkpoint to an ONNX bundle: one graph per component, validated, with manifest.json."""
    from mirasol_edge.export.bundle import PRECISIONS, check_export_args

    if precision not in PRECISIONS:  # checked before loading anything: bad options fail at once
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    opset = check_export_args(out_dir, precision, opset, force)

    from mirasol_edge.checkpoint import load_checkpoint
    from mirasol_edge.export import export_bundle
    from mirasol_edge.runtime.bundle import read_manifest

    start = time.perf_counter()
    model, _ = load_checkpoint(checkpoint)
    typer.echo(f"exporting {checkpoint} to {out_dir} ({precision}{'' if validate else ', not validated'})")
    with sigterm_as_interrupt() as stopped:  # the partial bundle is removed on SIGTERM as on Ctrl-C
        export_bundle(model, out_dir, precision=precision, opset=opset, validate=validate, force=force,
                      progress=typer.echo, external_data=external_data or None)
    if stopped:  # the interrupt fell in a finaliser and the export went on: stop as asked, without its output
        shutil.rmtree(out_dir, ignore_errors=True)
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    typer.echo(f"wrote {out_dir} in {seconds:.1f} s")
    if json_out is not None:
        manifest = read_manifest(out_dir)
        files = {name: entry["bytes"] for name, entry in manifest["files"].items()}
        validation = {name: c["validation"] for name, c in manifest["components"].items()} if validate else None
        write_json(json_out, {"checkpoint": str(checkpoint), "bundle": str(out_dir), "precision": precision, "opset": opset,
                              "seconds": round(seconds, 3), "files": files, "total_bytes": sum(files.values()),
                              "validation": validation})


def inspect(
    bundle: Path = typer.Argument(..., help="Bundle directory written by mirasol-edge export."),
    json_out: Optional[Path] = json_option(
        "bundle, format, precision, opset, producer, config, components {name: {files {file: ok or what is wrong}, "
        "bytes, inputs, outputs {name: {dtype, shape}}}}, total_bytes, bad_files; a bundle whose manifest has faults: "
        "bundle, faults"),
):
    """Components, inputs/outputs, sizes, precision and opset of a bundle; checks every file's sha256."""
    from mirasol_edge.runtime.bundle import check_files, manifest_faults, read_manifest
    from mirasol_edge.runtime.chunking import ChunkSpec

    manifest = read_manifest(bundle)
    faults = manifest_faults(manifest)
    if faults:  # every fault, one line each, and nothing of the manifest trusted
        for fault in faults:
            typer.echo(f"fault: {fault}")
        typer.echo(f"bundle {bundle}: its manifest has {len(faults)} fault(s); re-export the bundle.")
        if json_out is not None:
            write_json(json_out, {"bundle": str(bundle), "faults": faults})
        raise typer.Exit(1)
    cfg = manifest["config"]
    chunk = ChunkSpec(**cfg["chunk"])
    typer.echo(f"bundle {bundle}: {manifest['format']}, precision {manifest['precision']}, opset {manifest['opset']}")
    typer.echo(
        f"model: width {cfg['d_model']}, {cfg['n_heads']} heads, combiner {cfg['combiner']['kind']}, video backbone "
        f"{cfg['video']['backbone']}; chunk {chunk.chunk_seconds} s = {chunk.frames_per_chunk} frames of "
        f"{chunk.frame_size}px at {chunk.fps} fps + {chunk.samples_per_chunk} samples at {chunk.sample_rate} Hz"
    )
    producer = {k: v for k, v in manifest.get("producer", {}).items() if v}
    typer.echo(f"producer: {', '.join(f'{k} {v}' for k, v in producer.items())}")
    status = check_files(bundle, manifest)
    total, components = 0, {}
    for name, comp in manifest["components"].items():
        files = [comp["file"], *(e["file"] for e in comp.get("external_data", []))]
        size = sum(manifest["files"][f]["bytes"] for f in files)
        total += size
        states = {status.get(f, "not listed") for f in files}
        state = "sha256 ok" if states == {"ok"} else "sha256 " + "/".join(sorted(s.upper() for s in states - {"ok"}))
        typer.echo(f"\n{name}  ({', '.join(files)}, {size / 1e6:.2f} MB, {state})")
        for kind in ("inputs", "outputs"):
            for io_name, spec in comp[kind].items():
                arrow = "in " if kind == "inputs" else "out"
                typer.echo(f"  {arrow} {io_name:<16} {spec['dtype']:<8} [{', '.join(str(d) for d in spec['shape'])}]")
        components[name] = {"files": {f: status.get(f, "not listed") for f in files}, "bytes": size,
                            "inputs": comp["inputs"], "outputs": comp["outputs"]}
    bad = sorted(f for f, s in status.items() if s != "ok")
    typer.echo(f"\ntotal {total / 1e6:.2f} MB in {len(status)} files; "
               + ("every sha256 matches" if not bad else f"{len(bad)} file(s) missing or changed: {', '.join(bad)}"))
    if json_out is not None:
        write_json(json_out, {"bundle": str(bundle), "format": manifest["format"], "precision": manifest["precision"],
                              "opset": manifest["opset"], "producer": producer, "config": cfg,
                              "components": components, "total_bytes": total, "bad_files": bad})
    if bad:
        raise typer.Exit(1)
