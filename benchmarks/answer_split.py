"""Held-out answers split by where in time the event asked about lies (RESULTS.md, issue 16).

    python -m mirasol_edge.benchmarks.answer_split HELDOUT_DIR PREDICTIONS.jsonl [...] --window 64

HELDOUT_DIR is a `data synth` folder (manifest.jsonl with each clip's seed, spec.json); PREDICTIONS
are `eval --predictions` files of that set. Each clip's scene is drawn again from its seed (the
generator is deterministic), and every question about one event is scored twice over:

- by window: whether the event starts in the last `--window` seconds of the clip (what the temporal
  and cross caches hold) or before them (what only the memory past the window can answer); for
  "which sound came first", where the two sounds named lie;
- the beep count by how the chunk grid splits the beeps: the number of beeps whose middle lies in
  each chunk they touch, e.g. "2+2" for four beeps cut in half by a chunk boundary.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path


# template -> the event it asks about: the first shape, or a sound
EVENT_OF = {"video_colour": "first shape", "video_shape": "first shape", "video_motion": "first shape",
            "audio_pitch": "tone", "av_tone_motion": "tone", "audio_beeps": "beeps", "av_beep_shape": "beeps",
            "av_noise_colour": "noise"}


def beep_split(beeps, chunk_seconds: float) -> str:
    """'a+b+...': beeps per chunk they touch, each beep counted in the chunk that holds its middle."""
    from mirasol_edge.data.synth.scene import beep_chunks

    chunks = Counter(beep_chunks(beeps, chunk_seconds))
    return "+".join(str(chunks[c]) for c in sorted(chunks))


def split(heldout: Path, predictions: Path, window: float) -> dict[str, dict[str, list[int]]]:
    """{"by window": {"template, in|before": [right, asked]}, "beeps by chunk split": {"a+b": [right, asked]}}."""
    from mirasol_edge.data.synth import SOUNDS, sample_scene
    from mirasol_edge.runtime.chunking import ChunkSpec

    meta = json.loads((heldout / "spec.json").read_text())
    spec = ChunkSpec(**meta["spec"])
    seed_of = {Path(json.loads(line)["video"]).name: json.loads(line)["seed"]
               for line in (heldout / "manifest.jsonl").read_text().splitlines() if line.strip()}
    scenes: dict[int, object] = {}
    out: dict[str, dict[str, list[int]]] = {"by window": defaultdict(lambda: [0, 0]), "beeps by chunk split": defaultdict(lambda: [0, 0])}
    for line in predictions.read_text().splitlines():
        p = json.loads(line)
        event = EVENT_OF.get(p["template"])
        if event is None and p["template"] != "order_sounds":
            continue
        seed = seed_of[Path(p["clip"]).name]
        if seed not in scenes:
            scenes[seed] = sample_scene(seed, spec, meta["min_seconds"], meta["max_seconds"], bool(meta.get("off_grid")))
        scene = scenes[seed]
        right = int(p["predicted"] == p["answer"])
        side = lambda start: "in" if start >= scene.duration_seconds - window else "before"  # noqa: E731
        if event is None:  # "which came first, the A or the B?": where both sounds lie
            sides = sorted(side(scene.sound(k).start) for k in SOUNDS if k in p["question"])
            where = "both " + sides[0] if sides[0] == sides[-1] else "one before"
        else:
            where = side(scene.objects[0].start if event == "first shape" else scene.sound(event).start)
        rows = [out["by window"][f"{p['template']}, {where}"]]
        if p["template"] == "audio_beeps":
            rows.append(out["beeps by chunk split"][beep_split(scene.sound("beeps"), spec.chunk_seconds)])
        for row in rows:  # [right, asked]
            row[0] += right
            row[1] += 1
    return {table: dict(sorted(rows.items())) for table, rows in out.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heldout", type=Path, help="a `data synth` folder: manifest.jsonl and spec.json")
    parser.add_argument("predictions", type=Path, nargs="+", help="`eval --predictions` files of that set")
    parser.add_argument("--window", type=float, default=64.0, help="seconds the caches hold (temporal_window chunks)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {str(p): split(args.heldout, p, args.window) for p in args.predictions}
    for name, tables in results.items():
        print(f"== {name}")
        for table, rows in tables.items():
            print(f"  {table}")
            for key, (right, asked) in rows.items():
                print(f"    {key:28s} {100 * right / asked:6.1f} %  ({right} / {asked})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
