"""Exact-match evaluation of an exported bundle through the ONNX runtime, scored as evaluate.py
scores the PyTorch model: same decoded clips, same questions, same baseline."""

from __future__ import annotations

from typing import Callable, Sequence

from mirasol_edge.data.manifest import ManifestRow
from mirasol_edge.evaluate import Prediction, baseline_for, manifest_clips, summarize


def evaluate_bundle(
    bundle,
    rows: Sequence[ManifestRow],
    baseline_rows: Sequence | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, list[Prediction]]:
    """Stream every video of the manifest chunk by chunk through the bundle and ask its questions
    greedily; returns (summary, predictions) like evaluate.evaluate_manifest."""
    from mirasol_edge.runtime.session import Runtime

    if not rows:
        raise ValueError("the manifest has no rows to evaluate.")
    runtime = Runtime.load(bundle)
    predictions: list[Prediction] = []
    total = len({r.video for r in rows})
    for i, (name, frames, waveform, questions) in enumerate(manifest_clips(rows, runtime.chunk, workers)):
        stream = runtime.create_stream()
        for k in range(len(frames)):  # (K, F, H, W, 3), (K, S): one chunk at a time, as a live source
            stream.push(frames[k], waveform[k])
        for q in questions:
            predictions.append(Prediction(name, q.question, q.answer, stream.ask(q.question), q.family, q.template))
        if progress:
            progress(i + 1, total)
    return summarize(predictions, baseline_for(rows, runtime.chunk, baseline_rows)), predictions
