"""Checkpoints: the config (a plain dict) and the weights in one file, loadable with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mirasol_edge.config import ModelConfig
from mirasol_edge.model import MirasolModel

# /2: the combiner's first layer splits its queries between audio and video, and the log-mel front end
# trains in fp32; /1 weights load into the same shapes but compute something else, so they are refused.
FORMAT = "mirasol-edge-checkpoint/2"


def save_checkpoint(path: str | os.PathLike, model: MirasolModel, **extra) -> None:
    """Write {format, config, model, **extra} (extra: optimizer state, step, ... plain types and tensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict(), **extra}, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[MirasolModel, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, the whole checkpoint dict).

    Raises ValueError, in one sentence naming the file, if it is missing or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; give the path of a .pt file written by mirasol-edge.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not our checkpoint"
        raise ValueError(f"{path} is not a mirasol-edge checkpoint ({type(e).__name__}); pass a file written by mirasol-edge train or init.") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == "mirasol-edge-checkpoint/1":
        raise ValueError(f"{path} was written by an older mirasol-edge (format 1) whose combiner and audio front end differ; retrain it with this version.")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a mirasol-edge checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None!r}, expected {FORMAT!r}).")
    model = MirasolModel(ModelConfig.from_dict(ckpt["config"]))
    _check_state(model, ckpt["model"], path)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def _check_state(model: MirasolModel, state: dict, path: Path) -> None:
    """Every tensor's name and shape must match before anything is copied."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}).")
