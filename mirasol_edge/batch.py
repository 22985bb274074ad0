"""Questions over a corpus of media files on Ray Data (`mirasol-edge batch`, `eval --ray`).

Ray Data reads the list of sources; tasks decode them with PyAV (runtime.media) in parallel;
an actor pool, one Runtime per actor, steps the decoded clips of a batch together
(Runtime.push_streams) and answers all their questions at once (Runtime.ask_streams). The
driver writes one JSON line per (source, question) as results arrive and flushes it, so a run
that is killed keeps everything it finished; a source that cannot be decoded gets an "error"
line instead of an answer, and the job goes on. `--resume` answers only the pairs missing from
the output. Torch is not needed; ray is (the `ray` extra), imported only here.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

MEDIA_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".ogv", ".3gp"})
MAX_BLOCKS = 4096  # past this, decode tasks take more than a batch of sources each
DECODE_CPUS = 0.5  # logical CPUs a decode task reserves: decoding waits on I/O and leaves room to the actors


@dataclass(frozen=True)
class Job:
    """One source and the questions still to ask about it."""

    source: str
    questions: tuple[str, ...]


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None  # None: a local Ray started in this process; "auto": the running cluster
    actors: int = 2  # Runtimes answering in parallel
    cpus_per_actor: float = 1.0  # CPUs each actor reserves, and its ONNX Runtime threads (rounded up)
    gpus_per_actor: float = 0.0  # > 0: the actors run the CUDA provider
    batch_size: int = 8  # clips an actor steps together

    def check(self) -> None:
        if self.actors < 1:
            raise ValueError(f"--actors must be at least 1, got {self.actors}.")
        if not 0 < self.cpus_per_actor <= 1024:
            raise ValueError(f"--cpus-per-actor must be in (0, 1024], got {self.cpus_per_actor}.")
        if not 0 <= self.gpus_per_actor <= 64:
            raise ValueError(f"--gpus-per-actor must be in [0, 64], got {self.gpus_per_actor}.")
        if not 1 <= self.batch_size <= 1024:
            raise ValueError(f"--batch-size must be in [1, 1024], got {self.batch_size}.")


# --- what to answer ------------------------------------------------------------------------------


def list_sources(spec: str) -> list[str]:
    """The media a SOURCES argument names, in a stable order.

    A manifest (.jsonl, its "video" fields, relative to its folder), a folder (media files under
    it, by suffix), a text file (one path or URL per line; '#' comments), a glob pattern, or one
    media file or URL. ValueError if it names nothing.
    """
    path = Path(spec)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file())
        what = f"the folder {spec} has no media files ({', '.join(sorted(MEDIA_SUFFIXES))})"
    elif path.is_file() and path.suffix == ".jsonl":
        from mirasol_edge.data.manifest import load_manifest

        found = list(dict.fromkeys(str(r.video) for r in load_manifest(path, check_files=False)))
        what = f"the manifest {spec} has no rows"
    elif path.is_file() and path.suffix == ".txt":
        base = path.parent
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        found = [s if "://" in s or os.path.isabs(s) else str(base / s) for s in lines if s and not s.startswith("#")]
        what = f"the list {spec} names no sources"
    elif any(c in spec for c in "*?["):
        found = sorted(glob.glob(spec, recursive=True))
        what = f"the pattern {spec!r} matches no file"
    else:
        found = [spec] if "://" in spec or path.is_file() else []
        what = f"{spec} is not a file, folder, manifest (.jsonl), list (.txt) or pattern"
    if not found:
        raise ValueError(f"{what}; give media to answer questions about.")
    return found


def finished_pairs(out: Path) -> set[tuple[str, str]]:
    """(source, question) pairs already written to `out`, answered or failed.

    A last line cut short by a kill is not counted, and is removed, so that appending starts on a
    line of its own.
    """
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):  # the line being written when the run was killed
        data = data[: data.rfind(b"\n") + 1]
        with open(out, "r+b") as f:
            f.truncate(len(data))
    done = set()
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done.add((row["source"], row["question"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{out}:{number} is not a line of mirasol-edge batch; give another --out or delete it.") from None
    return done


def pending_jobs(jobs: Sequence[Job], done: set[tuple[str, str]]) -> list[Job]:
    """The jobs with the questions `done` does not hold; sources with none left are skipped."""
    left = [Job(j.source, tuple(q for q in j.questions if (j.source, q) not in done)) for j in jobs]
    return [j for j in left if j.questions]


# --- the Ray side ---------------------------------------------------------------------------------


def decode_job(row: dict[str, Any], chunk: dict) -> dict[str, Any]:
    """A Ray Data task: one source decoded into chunks, or the reason it could not be.

    row: {"source", "questions"}; returns it with frames (K, F, H, W, 3) uint8, waveform (K, S)
    float32 (K = 0 on failure), "complete", "reason" and "error" ("" when there is none).
    """
    from mirasol_edge.runtime.chunking import ChunkSpec
    from mirasol_edge.runtime.media import MediaWarning, iter_chunks

    spec = ChunkSpec(**chunk)
    f, s, hw = spec.frames_per_chunk, spec.samples_per_chunk, spec.frame_size
    out = dict(row, frames=np.zeros((0, f, hw, hw, 3), np.uint8), waveform=np.zeros((0, s), np.float32),
               complete=False, reason="", error="")
    try:
        with warnings.catch_warnings():  # the report says what the warnings would
            warnings.simplefilter("ignore", MediaWarning)
            chunks = iter_chunks(row["source"], spec, decoder_threads=1)  # parallel tasks, one thread each
            pieces = list(chunks)
        out["frames"] = np.stack([p[0] for p in pieces])
        out["waveform"] = np.stack([p[1] for p in pieces])
        report = chunks.report
        out["complete"], out["reason"] = report.complete, report.reason or ""
    except ValueError as e:  # MediaError and friends: the row says why, the job goes on
        out["error"] = str(e)
    return out


class Answerer:
    """A Ray Data actor: one Runtime; each batch of decoded clips is stepped together and all
    their questions are answered in one ask_streams."""

    def __init__(self, bundle: str, threads: int, provider: str):
        from mirasol_edge.runtime.session import Runtime

        self.runtime = Runtime.load(bundle, intra_op_threads=threads, provider=provider)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["source"]))]
        return _columns(answer_decoded(self.runtime, rows))


def answer_decoded(runtime, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output rows, one per (source, question), for decoded rows (decode_job's)."""
    seconds = runtime.chunk.chunk_seconds
    ok = [r for r in rows if not r["error"]]
    streams = [runtime.create_stream() for _ in ok]
    for k in range(max((len(r["frames"]) for r in ok), default=0)):  # chunk k of every clip that has one
        live = [i for i, r in enumerate(ok) if k < len(r["frames"])]
        runtime.push_streams([streams[i] for i in live], [(ok[i]["frames"][k], ok[i]["waveform"][k]) for i in live])
    requests = [(streams[i], str(q)) for i, r in enumerate(ok) for q in r["questions"]]
    answers = iter(runtime.ask_streams(requests)) if requests else iter(())
    out = []
    for r in rows:
        chunks = len(r["frames"])
        for q in r["questions"]:
            line = {"source": str(r["source"]), "question": str(q), "chunks": chunks, "seconds": chunks * seconds}
            if r["error"]:
                line["error"] = str(r["error"])
            else:
                line.update(answer=next(answers), complete=bool(r["complete"]))
                if r["reason"]:
                    line["incomplete_reason"] = str(r["reason"])
            out.append(line)
    return out


def _columns(lines: list[dict[str, Any]]) -> dict[str, list]:
    """Rows -> Ray Data columns; a line's JSON travels as one string (rows differ in their keys)."""
    return {"line": [json.dumps(line, ensure_ascii=False) for line in lines]}


def start_ray(options: ClusterOptions) -> float:
    """Connect to the cluster at options.address, or start a quiet local Ray; returns the seconds it took."""
    import logging

    import ray

    # Ray's own start-up and C++ worker lines are for cluster operators, not for this command's output
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray").setLevel(logging.ERROR)
    started = time.perf_counter()
    if not ray.is_initialized():
        if options.address is None:
            # Actors reserve their CPUs; leave room for two decode tasks beside them on a small box.
            cpus = max(os.cpu_count() or 1, math.ceil(options.actors * options.cpus_per_actor + 2 * DECODE_CPUS))
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=False)
        else:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.ERROR, configure_logging=False)
    import ray.data  # configures its loggers on import: quieten them after

    for name in ("ray", "ray.data"):  # our own progress line instead of Ray Data's bars and logs
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return time.perf_counter() - started


def run_jobs(bundle: str | os.PathLike, jobs: Sequence[Job], chunk: dict, options: ClusterOptions) -> Iterator[dict]:
    """Answer `jobs` on Ray (started with start_ray); yields output rows as actors finish them."""
    import ray

    if not jobs:
        return
    threads = max(1, math.ceil(options.cpus_per_actor))
    provider = "cuda" if options.gpus_per_actor > 0 else "cpu"
    items = [{"source": j.source, "questions": list(j.questions)} for j in jobs]
    # A block (one decode task) per batch of sources: a task per source cost 1.7x the time on 2 cores
    # (BENCHMARKS.md), and an actor's batch is then one block.
    blocks = min(MAX_BLOCKS, math.ceil(len(items) / options.batch_size))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map(decode_job, fn_kwargs={"chunk": chunk}, num_cpus=DECODE_CPUS)
    ds = ds.map_batches(
        Answerer, fn_constructor_args=(str(Path(bundle).resolve()), threads, provider), compute=ray.data.ActorPoolStrategy(size=options.actors), batch_size=options.batch_size,
        batch_format="numpy", num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
    )
    for row in ds.iter_rows():
        yield json.loads(row["line"])


def answer_corpus(
    bundle: str | os.PathLike,
    jobs: Sequence[Job],
    out: Path,
    options: ClusterOptions = ClusterOptions(),
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write one JSON line per (source, question) of `jobs` to `out`, as they come.

    resume: keep `out` and answer only the pairs it lacks (else `out` must not exist yet).
    Returns {"pairs", "written", "skipped", "failed_sources", "sources", "ray_start_s",
    "answer_s", "sources_per_s"} (answer_s and the rate count from Ray being up).
    """
    from mirasol_edge.runtime.bundle import load_bundle

    options.check()
    chunk = load_bundle(bundle).chunk.to_dict()  # the bundle is checked here, before Ray starts
    if out.exists() and not resume:
        raise ValueError(f"{out} exists; give --resume to go on from it, or another --out.")
    done = finished_pairs(out) if resume else set()
    todo = pending_jobs(jobs, done)
    total = sum(len(j.questions) for j in todo)
    ray_start_s = start_ray(options)
    started = time.perf_counter()
    written, failed = 0, set()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        for line in run_jobs(bundle, todo, chunk, options):
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()  # a kill loses at most the line being written
            written += 1
            if "error" in line:
                failed.add(line["source"])
            if progress is not None:
                progress(written, total)
    answer_s = time.perf_counter() - started
    return {"pairs": sum(len(j.questions) for j in jobs), "written": written, "skipped": len(done),
            "failed_sources": len(failed), "sources": len(todo), "ray_start_s": round(ray_start_s, 3),
            "answer_s": round(answer_s, 3), "sources_per_s": round(len(todo) / answer_s, 3) if answer_s > 0 else None}
