"""The `mirasol-edge` command line: `app` with every command on it, and `main`, the console entry point.

app.py owns `app` and what commands share; model, train, export, runtime and bench define the
commands as plain functions; main.py registers them. Runtime commands and every --help import no torch.
"""

from mirasol_edge.cli.main import app, main

__all__ = ["app", "main"]
