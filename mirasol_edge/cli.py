"""The `mirasol-edge` command line.

Runtime-side commands (and every --help) import no torch: heavy imports live inside commands.
Errors a user can cause are printed as one sentence with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="mirasol-edge",
    help="Train, export and run a Mirasol3B-style video + audio + text model at the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def user_errors(fn):
    """Turn the errors a user can cause (ValueError, OSError) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a service manager, `kill`, a CI timeout) unwinds like Ctrl-C, so cleanups run:
    by default it ends the process where it stands, leaving half-written output behind."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _config(preset_name: Optional[str], checkpoint: Optional[Path], combiner: Optional[str] = None):
    from dataclasses import replace

    from mirasol_edge.config import preset

    if checkpoint is not None:
        from mirasol_edge.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint)[0].cfg
    cfg = preset(preset_name or "small")
    if combiner is not None:
        if combiner not in ("transformer", "ttm"):
            raise ValueError(f"--combiner must be transformer or ttm, got {combiner!r}.")
        cfg = replace(cfg, combiner=replace(cfg.combiner, kind=combiner))
    return cfg


@app.command()
@user_errors
def info(
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="tiny, small (default), base or mirasol3b."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Describe a checkpoint's model instead."),
    combiner: Optional[str] = typer.Option(None, help="Override the preset's combiner: transformer or ttm."),
):
    """Config, parameter counts and FLOPs per chunk of a preset (built on the meta device: no memory)."""
    from mirasol_edge.info import build_meta, flops_per_chunk, parameter_counts

    cfg = _config(preset, checkpoint, combiner)
    model = build_meta(cfg)
    spec = cfg.chunk
    typer.echo(f"model: {checkpoint or (preset or 'small')}  width {cfg.d_model}, {cfg.n_heads} heads, combiner {cfg.combiner.kind}")
    typer.echo(
        f"chunk: {spec.chunk_seconds} s = {spec.frames_per_chunk} frames of {spec.frame_size}x{spec.frame_size} at {spec.fps} fps"
        f" + {spec.samples_per_chunk} samples at {spec.sample_rate} Hz"
    )
    typer.echo(
        f"tokens per chunk: audio {cfg.audio_tokens}, video {cfg.video_tokens} -> {cfg.combiner.latents} latents;"
        f" temporal window {cfg.temporal_window} chunks; text context {cfg.max_text_len} tokens"
    )
    counts = parameter_counts(model)
    flops = flops_per_chunk(model)
    typer.echo(f"\n{'component':<18}{'parameters':>16}{'GFLOPs/chunk':>15}")
    for name, n in counts.items():
        if name == "total":
            continue
        f = flops[name] if name != "context_decoder" else flops["context_cross_kv"]
        typer.echo(f"{name:<18}{n:>16,}{f / 1e9:>15.3f}")
    typer.echo(f"{'total':<18}{counts['total']:>16,}{flops['chunk_total'] / 1e9:>15.3f}")
    typer.echo(f"\nparameters: {counts['total'] / 1e9:.3f} B")
    typer.echo(f"generated token (full window): {flops['context_token'] / 1e9:.4f} GFLOPs")


@app.command()
@user_errors
def init(
    out: Path = typer.Argument(..., help="Checkpoint to write (.pt)."),
    preset: str = typer.Option("small", "--preset", "-p", help="tiny, small, base (mirasol3b is too large to allocate here)."),
    combiner: Optional[str] = typer.Option(None, help="transformer or ttm."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
):
    """Write a randomly initialised checkpoint of a preset (config inside)."""
    import torch

    from mirasol_edge.checkpoint import save_checkpoint
    from mirasol_edge.model import MirasolModel

    cfg = _config(preset, None, combiner)
    torch.manual_seed(seed)
    save_checkpoint(out, MirasolModel(cfg))
    typer.echo(f"wrote {out}")


# Each area registers its commands on `app`; none of these modules imports torch at import time.
from mirasol_edge import cli_bench, cli_export, cli_runtime, cli_train  # noqa: E402, F401


def main():  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # python -m mirasol_edge.cli: run the imported module's app, where commands registered
    from mirasol_edge.cli import main as _main

    sys.exit(_main())
