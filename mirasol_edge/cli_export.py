"""CLI commands of the exporter: export (needs torch), inspect (torch-free: manifest + hashlib)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from mirasol_edge.cli import app, sigterm_as_interrupt, user_errors


@app.command()
@user_errors
def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) written by mirasol-edge train or init."),
    out_dir: Path = typer.Argument(..., help="Bundle directory to write (docs/bundle.md)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (fp32 inputs/outputs) or int8 (quantised weights)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset, 18 to 25 (default 23)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at OUT_DIR."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check every graph against PyTorch."),
    external_data: bool = typer.Option(False, "--external-data", help="Weights in <graph>.onnx.data files even below 1.5 GiB."),
):
    """Export a checkpoint to an ONNX bundle: one graph per component, validated, with manifest.json."""
    from mirasol_edge.export.bundle import PRECISIONS, check_export_args

    if precision not in PRECISIONS:  # checked before loading anything: bad options fail at once
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    check_export_args(out_dir, precision, opset, force)

    from mirasol_edge.checkpoint import load_checkpoint
    from mirasol_edge.export import export_bundle

    start = time.perf_counter()
    model, _ = load_checkpoint(checkpoint)
    typer.echo(f"exporting {checkpoint} to {out_dir} ({precision}{'' if validate else ', not validated'})")
    with sigterm_as_interrupt():  # the partial bundle is removed on SIGTERM as on Ctrl-C
        export_bundle(model, out_dir, precision=precision, opset=opset, validate=validate, force=force,
                      progress=typer.echo, external_data=external_data or None)
    typer.echo(f"wrote {out_dir} in {time.perf_counter() - start:.1f} s")


@app.command()
@user_errors
def inspect(bundle: Path = typer.Argument(..., help="Bundle directory written by mirasol-edge export.")):
    """Components, inputs/outputs, sizes, precision and opset of a bundle; checks every file's sha256."""
    from mirasol_edge.export.manifest import check_files, read_manifest
    from mirasol_edge.runtime.bundle import manifest_faults

    manifest = read_manifest(bundle)
    faults = manifest_faults(manifest)
    if faults:  # every fault, one line each, and nothing of the manifest trusted
        for fault in faults:
            typer.echo(f"fault: {fault}")
        typer.echo(f"bundle {bundle}: its manifest has {len(faults)} fault(s); re-export the bundle.")
        raise typer.Exit(1)
    cfg, chunk = manifest["config"], manifest["chunk"]
    typer.echo(f"bundle {bundle}: {manifest['format']}, precision {manifest['precision']}, opset {manifest['opset']}")
    typer.echo(
        f"model: width {cfg['d_model']}, {cfg['n_heads']} heads, combiner {cfg['combiner']['kind']}; chunk "
        f"{chunk['chunk_seconds']} s = {chunk.get('frames_per_chunk', '?')} frames of {chunk['frame_size']}px at "
        f"{chunk['fps']} fps + {chunk.get('samples_per_chunk', '?')} samples at {chunk['sample_rate']} Hz"
    )
    producer = ", ".join(f"{k} {v}" for k, v in manifest.get("producer", {}).items() if v)
    typer.echo(f"producer: {producer}")
    status = check_files(bundle, manifest)
    total = 0
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
    bad = sorted(f for f, s in status.items() if s != "ok")
    typer.echo(f"\ntotal {total / 1e6:.2f} MB in {len(status)} files; "
               + ("every sha256 matches" if not bad else f"{len(bad)} file(s) missing or changed: {', '.join(bad)}"))
    if bad:
        raise typer.Exit(1)
