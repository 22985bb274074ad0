"""benchmarks/answer_split.py: held-out answers split by where the event lies in time."""

import json
from collections import Counter

from mirasol_edge.benchmarks.answer_split import split
from mirasol_edge.data.synth import sample_scene, write_dataset
from mirasol_edge.runtime.chunking import ChunkSpec

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)


def test_each_answer_lands_in_its_window_side_and_beep_split(tmp_path):
    heldout = write_dataset(tmp_path / "set", 4, seed=5, spec=SPEC, min_seconds=8, max_seconds=8, progress=False, off_grid=True).parent
    rows = [json.loads(line) for line in (heldout / "manifest.jsonl").read_text().splitlines()]
    preds = tmp_path / "preds.jsonl"
    with preds.open("w") as f:
        for r in rows:  # every answer right but the beep counts
            predicted = "?" if r["template"] == "audio_beeps" else r["answer"]
            f.write(json.dumps({**r, "clip": str(heldout / r["video"]), "predicted": predicted}) + "\n")
    tables = split(heldout, preds, window=4.0)

    scenes = [sample_scene(r["seed"], SPEC, 8, 8, off_grid=True) for r in rows if r["template"] == "audio_pitch"]
    sides = Counter("in" if s.sound("tone").start >= 4 else "before" for s in scenes)
    assert {side: tables["by window"][f"audio_pitch, {side}"] for side in sides} == {side: [n, n] for side, n in sides.items()}
    orders = {k: v for k, v in tables["by window"].items() if k.startswith("order_sounds")}
    assert sum(n for _, n in orders.values()) == 4 and set(orders) <= {f"order_sounds, {w}" for w in ("both in", "both before", "one before")}
    beeps = [v for k, v in tables["by window"].items() if k.startswith("audio_beeps")]
    assert sum(n for _, n in beeps) == 4 and all(right == 0 for right, _ in beeps)
    counts = Counter(str(s.sound("beeps").count) for s in scenes)
    by_count = Counter()
    for key, (_, n) in tables["beeps by chunk split"].items():
        by_count[str(sum(int(x) for x in key.split("+")))] += n
    assert by_count == counts
