"""Media decoding time per chunk, each runtime.media option side by side in one run.

`python -m mirasol_edge.benchmarks.decode_bench [SOURCE]` (a test source is written when no
SOURCE is given). Options timed, per chunk (`next()` on the chunk iterator):
  baseline                 today's defaults: FFmpeg's threads, every frame decoded
  threads_off              decoder_threads=1
  skip_nonref              skip_nonref=True
  skip_nonref_threads_off  both
and, with a simulated model stage of `model_ms` after each chunk (the wall time per chunk):
  model_only               the model stage alone (the floor for the next two)
  serial+model             decode, then model, on one thread
  prefetch+model           prefetch(): decoding on a background thread, overlapped with the model
  prefetch+skip_nonref+model

Wall time shows what a consumer waits; CPU time (this process, all its threads) shows the work,
and moves less when other processes load the machine. The model stage is a loop of numpy
ufuncs: it holds one core and releases the GIL, as an ONNX Runtime run does (a BLAS matmul
would not do: OpenBLAS's own threads stall for tens of ms when another process holds a core).
Options run round-robin, `repeats` times, so machine noise hits all of them alike; the first
chunk of each run (decoder start-up) is reported apart from the warm ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mirasol_edge.runtime.chunking import ChunkSpec
from mirasol_edge.runtime.media import iter_chunks, prefetch, probe

DECODE_OPTIONS = {
    "baseline": {},
    "threads_off": {"decoder_threads": 1},
    "skip_nonref": {"skip_nonref": True},
    "skip_nonref_threads_off": {"skip_nonref": True, "decoder_threads": 1},
}
MODEL_OPTIONS = {  # name: (decode options, prefetched)
    "serial+model": ({}, False),
    "prefetch+model": ({}, True),
    "prefetch+skip_nonref+model": ({"skip_nonref": True}, True),
}
WORK_SIZE = 16_384  # floats per ufunc call: ~0.05 ms, so the stage ends that close to its target


def simulated_model(ms: float, x: np.ndarray) -> None:
    """Keep one core busy for `ms` milliseconds in numpy (GIL released), like a model stage."""
    out = np.empty_like(x)
    deadline = time.perf_counter() + ms / 1e3
    while time.perf_counter() < deadline:
        np.sin(x, out=out)


def _work() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(WORK_SIZE, dtype=np.float32)


def time_chunks(source, spec: ChunkSpec, options: dict, model_ms: float = 0.0, prefetched: bool = False,
                max_chunks: int | None = None) -> tuple[list[float], float]:
    """Wall seconds per chunk (`next()` alone, or with the model stage from chunk to chunk), and
    the process's CPU seconds for the whole run."""
    x = _work()
    cpu = time.process_time()
    chunks = iter_chunks(source, spec, **options)
    if prefetched:
        chunks = prefetch(chunks)
    times = []
    start = time.perf_counter()
    for _ in chunks:
        if model_ms:
            simulated_model(model_ms, x)
        now = time.perf_counter()
        times.append(now - start)
        if max_chunks is not None and len(times) >= max_chunks:
            break
        start = time.perf_counter()
    chunks.close()
    return times, time.process_time() - cpu


def time_model(model_ms: float, n: int) -> tuple[list[float], float]:
    x = _work()
    times = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        simulated_model(model_ms, x)
        times.append(time.perf_counter() - start)
    return times, time.process_time() - cpu


def bench_decoding(source, spec: ChunkSpec, model_ms: float = 3.0, repeats: int = 3,
                   max_chunks: int | None = None) -> dict:
    """Time every option `repeats` times, round-robin, on `source`.

    Returns {"source", "video", "spec", "model_ms", "repeats", "options": {name: {"p50_ms",
    "p95_ms" (over the warm chunks of every repeat), "mean_ms" (median over repeats of the
    mean warm chunk: throughput), "first_ms" (median first chunk), "cpu_ms" (median over
    repeats of the run's CPU time per chunk), "chunks"}}}.
    """
    runs = {name: [] for name in ["model_only", *DECODE_OPTIONS, *MODEL_OPTIONS]}
    names = list(runs)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate: no option always first
            if name == "model_only":
                runs[name].append(time_model(model_ms, 20))
            elif name in DECODE_OPTIONS:
                runs[name].append(time_chunks(source, spec, DECODE_OPTIONS[name], max_chunks=max_chunks))
            else:
                options, prefetched = MODEL_OPTIONS[name]
                runs[name].append(time_chunks(source, spec, options, model_ms, prefetched, max_chunks))
    info = probe(source)
    return {
        "source": str(source),
        "video": {k: info[k] for k in ("video_codec", "width", "height", "fps", "duration")},
        "spec": spec.to_dict(),
        "model_ms": model_ms,
        "repeats": repeats,
        "options": {name: _summary(times) for name, times in runs.items()},
    }


def _summary(runs: list[tuple[list[float], float]]) -> dict:
    warm = np.concatenate([np.asarray(times[1:]) for times, _ in runs]) * 1e3  # seconds -> ms
    return {
        "p50_ms": float(np.median(warm)),
        "p95_ms": float(np.percentile(warm, 95)),
        "mean_ms": float(np.median([np.mean(times[1:]) * 1e3 for times, _ in runs])),
        "first_ms": float(np.median([times[0] * 1e3 for times, _ in runs])),
        "cpu_ms": float(np.median([cpu / len(times) * 1e3 for times, cpu in runs])),
        "chunks": len(runs[0][0]),
    }


def format_table(result: dict) -> str:
    v = result["video"]
    lines = [
        f"{v['video_codec']} {v['width']}x{v['height']} {v['fps']:g} fps, {v['duration']:.0f} s; "
        f"spec {result['spec']}; model stage {result['model_ms']:g} ms; {result['repeats']} repeats",
        f"{'option':<28} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'first ms':>9} {'cpu ms':>8} {'chunks':>7}",
    ]
    for name, s in result["options"].items():
        lines.append(
            f"{name:<28} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['mean_ms']:8.1f} {s['first_ms']:9.1f}"
            f" {s['cpu_ms']:8.1f} {s['chunks']:7d}"
        )
    return "\n".join(lines)


def main() -> None:
    from mirasol_edge.benchmarks.sources import write_test_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=None, help="media file (default: a written testsrc2 H.264 .mp4)")
    parser.add_argument("--width", type=int, default=1280, help="of the written test source")
    parser.add_argument("--height", type=int, default=720, help="of the written test source")
    parser.add_argument("--source-fps", type=int, default=30, help="of the written test source")
    parser.add_argument("--seconds", type=float, default=20.0, help="of the written test source")
    parser.add_argument("--chunk-seconds", type=float, default=1.0)
    parser.add_argument("--fps", type=int, default=4, help="sampled frames per second (the small preset: 4)")
    parser.add_argument("--frame-size", type=int, default=64, help="(the small preset: 64)")
    parser.add_argument("--model-ms", type=float, default=3.0, help="simulated model stage per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-chunks", type=int, default=None, help="stop each run after this many chunks")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()

    spec = ChunkSpec(chunk_seconds=args.chunk_seconds, fps=args.fps, frame_size=args.frame_size)
    with tempfile.TemporaryDirectory(prefix="mirasol-decode-") as tmp:
        source = args.source
        if source is None:
            source = Path(tmp) / "testsrc.mp4"
            write_test_source(source, args.width, args.height, args.source_fps, args.seconds)
        result = bench_decoding(source, spec, args.model_ms, args.repeats, args.max_chunks)
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
