"""Checkpoints: the config (a plain dict) and the weights in one file, loadable with weights_only=True."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from mirasol_edge.config import ModelConfig
from mirasol_edge.model import MirasolModel
from mirasol_edge.runtime.contract import config_faults

# /2: the combiner's first layer splits its queries between audio and video, and the log-mel front end
# trains in fp32; /1 weights load into the same shapes but compute something else, so they are refused.
FORMAT = "mirasol-edge-checkpoint/2"


def save_checkpoint(path: str | os.PathLike, model: MirasolModel, **extra) -> None:
    """Write {format, config, model, weights_sha256, **extra} (extra: optimizer state, step, ... plain
    types and tensors). The digest lets a load tell weights damaged on disk from trained ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = model.state_dict()
    torch.save({"format": FORMAT, "config": model.cfg.to_dict(), "model": state, "weights_sha256": weights_digest(state),
                **extra}, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[MirasolModel, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, the whole checkpoint dict).

    Raises ValueError, in one sentence naming the file, if it is missing, not a checkpoint, holds an
    invalid config, weights that do not match it, weights changed since they were saved (their
    digest differs) or non-finite weights.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; give the path of a .pt file written by mirasol-edge (a bundle directory only runs through eval and ask).")
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
    faults = config_faults(ckpt.get("config"))
    if faults:
        raise ValueError(f"checkpoint {path} has an invalid model config ({faults[0]}); it was edited or damaged: use the file training wrote.")
    state = ckpt.get("model")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} holds no weights (its 'model' is not a dict of tensors); use the file training wrote.")
    model = MirasolModel(ModelConfig.from_dict(ckpt["config"]))
    _check_state(model, state, path)
    digest = ckpt.get("weights_sha256")  # checkpoints written before digests have none
    if digest is not None and digest != weights_digest(state):
        raise ValueError(f"checkpoint {path} has weights that changed since it was saved (their sha256 differs); the file is damaged: use another copy.")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ValueError(f"checkpoint {path} has non-finite weights ({bad}); training diverged or the file is damaged: use an earlier checkpoint.")
    model.load_state_dict(state)
    return model.eval(), ckpt


def weights_digest(state: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _check_state(model: MirasolModel, state: dict, path: Path) -> None:
    """Every tensor's name and shape must match before anything is copied."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}).")
