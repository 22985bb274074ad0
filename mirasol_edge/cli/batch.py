"""`batch`: the same questions about every source of a corpus, on Ray Data (the `ray` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mirasol_edge.cli.app import ACTORS, ADDRESS, BATCH_SIZE, CPUS_PER_ACTOR, GPUS_PER_ACTOR, json_option, write_json

def batch(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `mirasol-edge export`."),
    sources: str = typer.Argument(..., help="A manifest (.jsonl), a folder, a glob pattern (quoted), or a text file "
                                  "(.txt) of paths or URLs, one per line."),
    question: list[str] = typer.Option(..., "--question", "-q", help="A question asked about every source (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Answers, one JSON line per (source, question), written as they come."),
    resume: bool = typer.Option(False, "--resume", help="Keep --out and answer only the pairs it lacks."),
    address: Optional[str] = ADDRESS,
    actors: int = ACTORS,
    cpus_per_actor: float = CPUS_PER_ACTOR,
    gpus_per_actor: float = GPUS_PER_ACTOR,
    batch_size: int = BATCH_SIZE,
    json_out: Optional[Path] = json_option(
        "pairs, written, skipped (already in --out), failed_sources, sources, ray_start_s, answer_s, sources_per_s"),
):
    """Ask every source the same questions on Ray Data: decoding in parallel tasks, a pool of runtime actors."""
    from mirasol_edge.batch import ClusterOptions, Job, answer_corpus, list_sources
    from mirasol_edge.progress import CountProgress
    from mirasol_edge.runtime.tokenizer import check_question

    options = ClusterOptions(address, actors, cpus_per_actor, gpus_per_actor, batch_size)
    options.check()
    for q in question:  # before Ray starts: a bad question would fail every source
        check_question(q)
    jobs = [Job(source, tuple(question)) for source in list_sources(sources)]
    with CountProgress("answered", unit="pairs") as progress:
        summary = answer_corpus(bundle, jobs, out, options, resume=resume, progress=progress)
    typer.echo(f"{summary['written']} answers to {out} ({summary['skipped']} already there, "
               f"{summary['failed_sources']} sources failed); Ray up in {summary['ray_start_s']:.1f} s, "
               f"{summary['sources']} sources in {summary['answer_s']:.1f} s")
    if json_out is not None:
        write_json(json_out, summary)
