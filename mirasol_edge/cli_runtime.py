"""CLI commands of the runtime: ask, stream (no torch, ever)."""

from mirasol_edge.cli import app, user_errors  # noqa: F401  (commands register on app)
