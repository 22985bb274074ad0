"""A run's checkpoint: written with everything needed to continue, and read back to continue it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from mirasol_edge.checkpoint import load_checkpoint, save_checkpoint
from mirasol_edge.config import ModelConfig
from mirasol_edge.model import MirasolModel
from mirasol_edge.train.config import TrainConfig
from mirasol_edge.train.plots import plot_losses

CHECKPOINT = "checkpoint.pt"  # in the run folder: model config + weights + everything to resume
LOSS_PLOT = "loss.png"


@dataclass
class RunProgress:
    """How far a run has come; what a resumed run continues from."""

    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # seconds of training
    history: list[float] = field(default_factory=list)  # the global loss of every step

    def fraction_done(self, tcfg: TrainConfig) -> float:
        """Of the steps or the time budget, whichever ends first: the schedule's progress and the stop (>= 1)."""
        budget = tcfg.budget_seconds
        return max(self.step / tcfg.steps if tcfg.steps else 0.0, self.elapsed / budget if budget else 0.0)


def save_run(path: Path, model: MirasolModel, optimizer: torch.optim.Optimizer, tcfg: TrainConfig, progress: RunProgress) -> None:
    """The checkpoint at `path` and the loss curve beside it."""
    save_checkpoint(
        path, model, train_config=tcfg.to_dict(), optimizer=optimizer.state_dict(),
        step=progress.step, elapsed_seconds=progress.elapsed, loss_history=progress.history,
    )
    plot_losses(progress.history, path.parent / LOSS_PLOT)


def load_run(path: Path, model: MirasolModel, optimizer: torch.optim.Optimizer, cfg: ModelConfig) -> RunProgress:
    """Load the weights and optimizer state of the run at `path` into model and optimizer; ValueError if it
    is missing, of another model configuration, or weights only."""
    if not path.is_file():
        raise ValueError(f"--resume: there is no checkpoint to resume at {path}; train without --resume first.")
    loaded, ckpt = load_checkpoint(path)
    if loaded.cfg != cfg:
        raise ValueError(f"--resume: {path} holds a different model configuration than this run asks for; use the same --preset/--combiner.")
    if "optimizer" not in ckpt:
        raise ValueError(f"--resume: {path} has weights only (no optimizer state); it cannot be resumed.")
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(ckpt["optimizer"])
    return RunProgress(int(ckpt["step"]), float(ckpt["elapsed_seconds"]), list(ckpt.get("loss_history", [])))
