"""Progress of a count (clips written, clips evaluated): a rich bar on a terminal, a plain line every 5 % otherwise.

Both go to stderr, so that stdout keeps only results (tables, JSON) for pipes.
"""

from __future__ import annotations

import sys
import time


class CountProgress:
    """Called with (done, total) as work goes; a context manager that closes the bar."""

    def __init__(self, label: str, unit: str = "clips"):
        self.label, self.unit = label, unit
        self._start = time.perf_counter()
        self._bar = None
        self._task = None

    def __call__(self, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if self._bar is None:
                from rich.console import Console
                from rich.progress import Progress

                self._bar = Progress(console=Console(stderr=True))
                self._task = self._bar.add_task(self.label, total=total)
                self._bar.start()
            self._bar.update(self._task, completed=done, total=total)
            if done >= total:
                self.close()
        elif done == total or done % max(1, total // 20) == 0:
            rate = done / max(1e-9, time.perf_counter() - self._start)
            print(f"{self.label} {done}/{total} {self.unit} ({rate:.1f} {self.unit}/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "CountProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
