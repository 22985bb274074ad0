"""The learning-rate schedule: linear warm-up, then a cosine to a floor."""

from __future__ import annotations

import math

from mirasol_edge.train.config import TrainConfig


def learning_rate(tcfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over warmup_steps, times a cosine from lr to lr * min_lr_ratio over progress in [0, 1]."""
    warm = min(1.0, (step + 1) / max(1, tcfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return tcfg.lr * warm * (tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * cosine)
