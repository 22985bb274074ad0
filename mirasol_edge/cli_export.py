"""CLI commands of the exporter: export, inspect."""

from mirasol_edge.cli import app, user_errors  # noqa: F401  (commands register on app)
