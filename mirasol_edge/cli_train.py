"""CLI commands of the PyTorch side: data synth, train, eval, demo."""

from mirasol_edge.cli import app, user_errors  # noqa: F401  (commands register on app)
