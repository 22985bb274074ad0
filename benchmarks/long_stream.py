"""Per-chunk latency and memory over a long stream, bundles side by side (BENCHMARKS.md, "Memory past the window").

    python -m mirasol_edge.benchmarks.long_stream WINDOW_ONLY_BUNDLE MEMORY_BUNDLE --chunks 600 --json OUT.json

One stream per bundle, in one process, fed the same synthetic chunks in turn (chunk k goes to every
bundle before chunk k + 1 goes to any), one thread each: so machine noise hits all of them alike.
Reports the median push latency of each bundle, the ratio to the first, and the process's resident
memory (VmRSS) every `--every` chunks: flat means the state does not grow with the stream.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv=None) -> None:
    from mirasol_edge.data.synth import render_clip
    from mirasol_edge.runtime.chunking import chunk_clip
    from mirasol_edge.runtime.session import Runtime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--every", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runtimes = [Runtime.load(b, intra_op_threads=args.threads) for b in args.bundles]
    clip = render_clip(5, runtimes[0].chunk, 60, 60)  # one minute of synthetic media, looped
    frames, waveform = chunk_clip(clip.frames, clip.waveform, runtimes[0].chunk)
    streams = [rt.create_stream() for rt in runtimes]
    latency = [[] for _ in runtimes]
    rss = []
    for k in range(args.chunks):
        for i, stream in enumerate(streams):
            start = time.perf_counter()
            stream.push(frames[k % len(frames)], waveform[k % len(frames)])
            latency[i].append(time.perf_counter() - start)
        if (k + 1) % args.every == 0:
            rss.append((k + 1, round(rss_mib(), 1)))
    answers = [s.ask("what colour is the first shape?") for s in streams]
    report = {
        "chunks": args.chunks, "threads": args.threads, "rss_mib": rss,
        "bundles": [{"bundle": str(b), "median_ms": round(1e3 * float(np.median(lat[10:])), 3),
                     "p90_ms": round(1e3 * float(np.percentile(lat[10:], 90)), 3),
                     "state_bytes": rt.engine.state_bytes(), "answer": a}
                    for b, lat, rt, a in zip(args.bundles, latency, runtimes, answers)],
    }
    base = report["bundles"][0]["median_ms"]
    for b in report["bundles"]:
        b["ratio"] = round(b["median_ms"] / base, 3)
        print(f"{b['bundle']}: median {b['median_ms']:.2f} ms/chunk (x{b['ratio']:.3f}), p90 {b['p90_ms']:.2f} ms, "
              f"state {b['state_bytes'] / 1024:.0f} KiB")
    print("RSS MiB by chunk: " + ", ".join(f"{k}: {r}" for k, r in rss))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
