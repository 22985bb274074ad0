"""The `mirasol-edge` app and what its commands share: error handling, signals, JSON reports, options.

Command modules import from here; mirasol_edge.cli.main registers their functions on `app`. This
module imports none of them, and no torch: runtime commands and every --help work without it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import threading
from pathlib import Path
from typing import Callable, Optional

import typer

app = typer.Typer(
    name="mirasol-edge",
    help="Train, export and run a Mirasol3B-style video + audio + text model at the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# A module a command imports that the base install lacks -> (what it is, how to install it).
_TRAIN = "pip install 'mirasol-edge[train]'"
MISSING_MODULE_HINTS = {
    "torch": ("PyTorch", _TRAIN),
    "torchvision": ("PyTorch", _TRAIN),
    "torchaudio": ("PyTorch", _TRAIN),
    "onnx": ("the ONNX exporter", _TRAIN),
    "onnxscript": ("the ONNX exporter", _TRAIN),
    "matplotlib": ("matplotlib", _TRAIN),
    "onnxruntime": ("ONNX Runtime", "pip install 'mirasol-edge[cpu]' (or 'mirasol-edge[gpu]' for CUDA)"),
    "ray": ("Ray", "pip install 'mirasol-edge[ray]'"),
}

VIDEO_BACKBONES = ("tubelet", "r3d_18", "r2plus1d_18", "mc3_18")  # tubelet: the ViT-style default; the rest: torchvision

COMBINER = typer.Option(None, "--combiner", help="Override the preset's combiner: transformer or ttm.")
VIDEO_BACKBONE = typer.Option(
    None, "--video-backbone", help="Override the preset's video extractor: tubelet (ViT-style) or a torchvision video "
    "ResNet, r3d_18, r2plus1d_18 or mc3_18 (its 512 channels projected to the model width). Checkpoints keep the choice.")
VIDEO_BACKBONE_WEIGHTS = typer.Option(
    None, "--video-backbone-weights", help="Start the torchvision --video-backbone from this local state dict (.pth of "
    "torchvision's r3d_18, r2plus1d_18 or mc3_18; never downloaded). The checkpoint then holds them.")
# Ray: `batch` and `eval --ray`
ADDRESS = typer.Option(None, "--address", help="A running Ray cluster (`auto`: the one this node joined); "
                       "default: a local Ray started with this machine's CPUs.")
ACTORS = typer.Option(2, "--actors", help="Runtimes answering in parallel (Ray actors).")
CPUS_PER_ACTOR = typer.Option(1.0, "--cpus-per-actor", help="CPUs each actor reserves, and its ONNX Runtime threads.")
GPUS_PER_ACTOR = typer.Option(0.0, "--gpus-per-actor", help="GPUs each actor reserves; above 0 the actors run the CUDA provider.")
BATCH_SIZE = typer.Option(8, "--batch-size", help="Clips an actor steps together (one push per chunk for all).")


def user_errors(fn: Callable, command: str) -> Callable:
    """Run `fn`, the function of `mirasol-edge COMMAND`, turning the errors a user can cause into one
    line on stderr and exit code 2: ValueError and OSError as they say, and a missing optional
    dependency (the train or cpu extra not installed) as the extra to install."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as e:
            module = (e.name or "").partition(".")[0]
            if module not in MISSING_MODULE_HINTS:
                raise  # not an optional dependency: a bug, worth its traceback
            what, install = MISSING_MODULE_HINTS[module]
            typer.echo(f"error: `mirasol-edge {command}` needs {what} ({module} is not installed): {install}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a service manager, `kill`, a CI timeout) unwinds like Ctrl-C, so cleanups run:
    by default it ends the process where it stands, leaving half-written output behind.

    Yields a list that holds the signal once one came: a KeyboardInterrupt raised while Python runs a
    finaliser (__del__, a weakref callback) is printed and dropped, so the body can finish anyway, and
    the caller must then undo what it wrote and stop."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def json_option(what: str):
    """The --json PATH option of a command that reports something; `what` names the keys."""
    return typer.Option(None, "--json", help=f"Also write a JSON report to this file: {what}.")


def write_json(path: Path, report: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise ValueError(f"cannot write the JSON report {path} ({e.strerror}); give --json a writable file path.") from None
    typer.echo(f"wrote {path}")


def model_config(preset_name: str, combiner: Optional[str] = None, video_backbone: Optional[str] = None):
    """A preset's ModelConfig with the --combiner and --video-backbone overrides applied."""
    from dataclasses import replace

    from mirasol_edge.config import preset

    cfg = preset(preset_name)
    if combiner is not None:
        if combiner not in ("transformer", "ttm"):
            raise ValueError(f"--combiner must be transformer or ttm, got {combiner!r}.")
        cfg = replace(cfg, combiner=replace(cfg.combiner, kind=combiner))
    return with_video_backbone(cfg, video_backbone)


def with_video_backbone(cfg, backbone: Optional[str]):
    """cfg with the video extractor --video-backbone names (None: cfg as it is)."""
    from dataclasses import replace

    if backbone is None:
        return cfg
    if backbone not in VIDEO_BACKBONES:
        raise ValueError(f"--video-backbone must be one of {', '.join(VIDEO_BACKBONES)}, got {backbone!r}.")
    return replace(cfg, video=replace(cfg.video, backbone=backbone))
