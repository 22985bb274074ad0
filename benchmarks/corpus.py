"""`batch` / `eval --ray` on Ray Data against the one-process `eval` of the same bundle and files.

    python -m mirasol_edge.benchmarks.corpus BUNDLE MANIFEST [--rounds 3] [--actors 2] [--json OUT]

Each round runs, one after the other on the same machine: `eval BUNDLE MANIFEST` (one process: a
shared ONNX Runtime pool of all cores, two decoding threads), `eval --ray` (the manifest's own
questions) and `batch` (the 12 questions of the synthetic templates asked of every clip). Clips per
second count from when Ray is up; Ray's start-up is reported apart. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = (  # twelve of the synthetic task's templates, as the data set words them
    "which colour does the first object have?", "which shape appears first?", "where is the first shape moving?",
    "what pitch is the tone?", "how many times does it beep?", "what color is the shape when the noise plays?",
    "what shape do you see while it beeps?", "where does the shape move while the tone plays?",
    "what color is the final shape?", "was the beeps or the tone first?", "how many objects appear?",
    "which colour followed the red shape?",
)


def cli(*args: str) -> tuple[float, dict]:
    """(wall seconds, the --json report) of one mirasol-edge command."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mirasol_edge", *args, "--json", str(report)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start, json.loads(report.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("manifest")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clips = len({json.loads(line)["video"] for line in Path(args.manifest).read_text().splitlines() if line.strip()})
    runs: dict[str, list[dict]] = {"eval": [], "eval --ray": [], "batch": []}
    for _ in range(args.rounds):
        wall, _ = cli("eval", args.bundle, args.manifest)
        runs["eval"].append({"wall_s": wall, "clips_per_s": clips / wall})
        wall, report = cli("eval", args.bundle, args.manifest, "--ray", "--actors", str(args.actors))
        runs["eval --ray"].append({"wall_s": wall, "ray_start_s": report["ray_start_s"],
                                   "clips_per_s": clips / (wall - report["ray_start_s"])})
        with tempfile.TemporaryDirectory() as tmp:
            questions = [a for q in QUESTIONS for a in ("-q", q)]
            wall, report = cli("batch", args.bundle, args.manifest, *questions, "--out", f"{tmp}/answers.jsonl",
                               "--actors", str(args.actors))
        runs["batch"].append({"wall_s": wall, "ray_start_s": report["ray_start_s"],
                              "clips_per_s": clips / report["answer_s"]})
    summary = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    base = summary["eval"]["clips_per_s"]
    for name in ("eval --ray", "batch"):
        summary[name]["vs_eval"] = summary[name]["clips_per_s"] / base
    result = {"clips": clips, "actors": args.actors, "rounds": args.rounds, "median": summary, "runs": runs}
    for name, s in summary.items():
        extra = f", Ray start {s['ray_start_s']:.1f} s, {s['vs_eval']:.2f}x eval" if "vs_eval" in s else ""
        print(f"{name:<11} {s['clips_per_s']:6.2f} clips/s (wall {s['wall_s']:.1f} s{extra})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
