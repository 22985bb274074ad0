"""The loss curve of a run as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_losses(history: list[float], path: Path) -> None:
    """The training loss per step (and a moving average) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        steps = np.arange(1, len(history) + 1)
        ax.plot(steps, history, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
        w = max(1, len(history) // 50)
        if w > 1:
            smooth = np.convolve(history, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1:], smooth, color="tab:blue", linewidth=1.6, label=f"mean of {w} steps")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer CE + weighted latent MSE)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
