"""Every command registered on `app`, each behind user_errors: the one module that knows them all."""

from __future__ import annotations

import typer

from mirasol_edge.cli import batch, bench, export, model, runtime, train
from mirasol_edge.cli.app import app, user_errors

data_app = typer.Typer(help="Datasets: write the synthetic audio-visual QA set as .mp4 files + manifest.jsonl.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

for group, name, command in (
    (app, "info", model.info),
    (app, "init", model.init),
    (data_app, "synth", train.data_synth),
    (app, "train", train.train),
    (app, "train-memory", train.train_memory),
    (app, "eval", train.eval_command),
    (app, "demo", train.demo),
    (app, "export", export.export),
    (app, "inspect", export.inspect),
    (app, "ask", runtime.ask),
    (app, "stream", runtime.stream),
    (app, "bench", bench.bench),
    (app, "batch", batch.batch),
):
    group.command(name)(user_errors(command, name if group is app else f"data {name}"))


def main():  # pragma: no cover - console entry point
    app()
