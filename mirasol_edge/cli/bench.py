"""Command `bench`: latency per chunk and per token (torch only with --torch)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mirasol_edge.cli.app import json_option, write_json


def bench(
    bundles: List[Path] = typer.Argument(..., help="One or more bundles (e.g. fp32 and int8 exports of the same checkpoint)."),
    chunks: int = typer.Option(500, help="Chunks pushed through every engine."),
    tokens: int = typer.Option(32, help="Tokens generated per question (eos ignored)."),
    provider: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int = typer.Option(0, help="ONNX Runtime intra-op threads (0: all cores)."),
    torch_checkpoint: Optional[Path] = typer.Option(None, "--torch", help="Also run this checkpoint in PyTorch eager."),
    compile: bool = typer.Option(False, "--compile", help="Also run the checkpoint under torch.compile (compile time reported apart)."),
    streams: int = typer.Option(32, "--streams", help="Streams (and questions) stepped together, against the same one at a time."),
    sources: List[Path] = typer.Option([], "--source", help="A real media file: decode + every model stage end to end (repeat for several)."),
    shared_threads: bool = typer.Option(True, "--shared-threads/--graph-threads", help="ONNX Runtime engines share one thread pool, or have a pool per graph."),
    json_out: Optional[Path] = json_option("the full report, per-chunk series included (keys: benchmarks/bench.py)"),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: latency per stage against chunk index."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Benchmark stages per chunk (decode, extractors, combiner, temporal step, cross K/V), tokens, and batched streams."""
    from mirasol_edge.benchmarks.bench import format_table, plot, run

    report = run(bundles, torch_checkpoint, chunks=chunks, tokens=tokens, provider=provider, threads=threads,
                 progress=not quiet, compile=compile, streams=streams, sources=sources,
                 thread_pool="shared" if shared_threads else "per_session")
    typer.echo(format_table(report))
    if json_out is not None:
        write_json(json_out, report)
    if plot_out is not None:
        plot(report, plot_out)
        typer.echo(f"wrote {plot_out}")
