"""What a run reports as it goes: a record per log interval in log.jsonl and a line for people, drawn as a
progress bar on an interactive stderr and said as a plain line otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from torch import Tensor

from mirasol_edge.train.config import TrainConfig

LOG = "log.jsonl"  # in the run folder: one JSON record per log interval
LOSS_NAMES = ("loss", "answer_loss", "latent_loss", "event_loss")


def format_time(seconds: float) -> str:
    m, s = divmod(int(max(0, seconds)), 60)
    return f"{m}:{s:02d}"


class ProgressLog:
    """Every tcfg.log_every steps and at the last one: the mean losses since the last report, the learning
    rate, the gradient norm and the speed. Lines go to a progress bar on stderr when `live`, else to `say`;
    records to `log_file` unless it is None (ranks other than 0)."""

    def __init__(self, tcfg: TrainConfig, log_file: Path | None, append: bool, say: Callable[[str], None], live: bool):
        self.tcfg, self.say = tcfg, say
        self.file = open(log_file, "a" if append else "w") if log_file else None
        self.window: list[tuple[float, ...]] = []  # LOSS_NAMES of each step since the last report
        self.rate: float | None = None  # clips/s, smoothed
        self.bar = None
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn
            from rich.table import Column

            line_column = TextColumn("{task.fields[line]}", table_column=Column(overflow="fold"))  # wraps, never cut
            self.bar = Progress(BarColumn(bar_width=20), line_column, console=Console(stderr=True))
            self.task = self.bar.add_task("training", total=1.0, line="")
            self.bar.start()

    def __enter__(self) -> "ProgressLog":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()
        if self.file:
            self.file.close()

    def record(self, step: int, losses: tuple[float, ...], lr: float, grad_norm: Tensor, step_seconds: float,
               elapsed: float, fraction_done: float) -> None:
        """One optimizer step's global losses (LOSS_NAMES), taken in step_seconds; reported at intervals."""
        self.window.append(losses)
        batch = self.tcfg.batch_size
        self.rate = batch / step_seconds if self.rate is None else 0.9 * self.rate + 0.1 * batch / step_seconds
        if step % self.tcfg.log_every and fraction_done < 1.0:
            return
        mean = dict(zip(LOSS_NAMES, (sum(x) / len(self.window) for x in zip(*self.window))))
        self.window.clear()
        if self.file:
            self.file.write(json.dumps({
                "step": step, **mean, "lr": lr, "grad_norm": float(grad_norm), "clips_per_s": self.rate, "elapsed_s": elapsed,
            }) + "\n")
            self.file.flush()
        line = self._line(step, mean, lr, elapsed)
        if self.bar:
            self.bar.update(self.task, completed=min(1.0, fraction_done), line=line)
        else:
            self.say(line)

    def _line(self, step: int, mean: dict[str, float], lr: float, elapsed: float) -> str:
        tcfg, budget = self.tcfg, self.tcfg.budget_seconds
        left = []
        if tcfg.steps:
            left.append((tcfg.steps - step) * tcfg.batch_size / max(self.rate, 1e-9))
        if budget:
            left.append(budget - elapsed)
        return (f"step {step}{'/' + str(tcfg.steps) if tcfg.steps else ''}  loss {mean['loss']:.4f} "
                f"(answer {mean['answer_loss']:.4f})  lr {lr:.2e}  {self.rate:.1f} clips/s  "
                f"{format_time(elapsed)} elapsed, {format_time(min(left))} left")
