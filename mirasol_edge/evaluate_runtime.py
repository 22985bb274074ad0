"""Exact-match evaluation of an exported bundle through the ONNX runtime (no torch), scored by
scoring.py as the PyTorch model is: same decoded clips, same questions, same baseline."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from mirasol_edge.data.manifest import ManifestRow
from mirasol_edge.scoring import Clip, Prediction, baseline_for, manifest_clips, summarize


STREAMS = 32  # clips streamed together: one push_streams per chunk step, one ask_streams per few finished clips


def evaluate_bundle(
    bundle,
    rows: Sequence[ManifestRow],
    baseline_rows: Sequence | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    streams: int = STREAMS,
    thread_pool: str = "per_session",
) -> tuple[dict, list[Prediction]]:
    """Stream every video of the manifest chunk by chunk through the bundle and ask its questions
    greedily; returns (summary, predictions) like evaluate.evaluate_manifest.

    Up to `streams` clips are stepped together (a clip joins as another one ends), and the questions
    of finished clips are answered together: the answers are those of one clip at a time.
    """
    from mirasol_edge.runtime.session import Runtime

    if not rows:
        raise ValueError("the manifest has no rows to evaluate.")
    if streams < 1:
        raise ValueError(f"streams must be at least 1, got {streams}.")
    runtime = Runtime.load(bundle, thread_pool=thread_pool)
    total = len({r.video for r in rows})
    predictions = answer_clips(runtime, manifest_clips(rows, runtime.chunk, workers), streams,
                               progress and (lambda done: progress(done, total)))
    return summarize(predictions, baseline_for(rows, runtime.chunk, baseline_rows)), predictions


def answer_clips(runtime, clips: Iterable[Clip], streams: int = STREAMS,
                 progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """Greedy answers to every question of every clip through `runtime` (any provider): up to `streams`
    clips stepped together (a clip joins as another one ends), the questions of finished clips answered
    together; the answers are those of one clip at a time. progress(clips done)."""
    clips = iter(clips)
    predictions: list[Prediction] = []
    active: list = []  # (clip, stream)
    finished: list = []
    done, more = 0, True
    while more or active:
        while more and len(active) < streams:  # clips join as others end
            clip = next(clips, None)
            if clip is None:
                more = False
            else:
                active.append((clip, runtime.create_stream()))
        if active:
            # (K, F, H, W, 3), (K, S): the next chunk of every active clip, as live sources
            runtime.push_streams([s for _, s in active], [(c[1][s.chunks], c[2][s.chunks]) for c, s in active])
            finished += [(c, s) for c, s in active if s.chunks == len(c[1])]
            active = [(c, s) for c, s in active if s.chunks < len(c[1])]
        if finished and (len(finished) >= streams // 4 or not (more or active)):
            requests = [(s, q.question) for c, s in finished for q in c[3]]
            answers = iter(runtime.ask_streams(requests))
            for (name, _, _, questions), _ in finished:
                for q in questions:
                    predictions.append(Prediction(name, q.question, q.answer, next(answers), q.family, q.template))
            done += len(finished)
            if progress:
                progress(done)
            finished = []
    return predictions


def evaluate_bundle_on_ray(
    bundle,
    rows: Sequence[ManifestRow],
    options,
    baseline_rows: Sequence | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, list[Prediction]]:
    """evaluate_bundle's scores and answers, computed by `mirasol-edge batch`'s Ray Data pipeline
    (options: a batch.ClusterOptions), with "ray_start_s" in the summary; ValueError naming the first
    source that failed to decode."""
    from mirasol_edge.batch import Job, run_jobs, start_ray
    from mirasol_edge.runtime.bundle import load_bundle

    if not rows:
        raise ValueError("the manifest has no rows to evaluate.")
    options.check()
    chunk = load_bundle(bundle).chunk
    by_video: dict[str, list[ManifestRow]] = {}
    for r in rows:
        by_video.setdefault(str(r.video), []).append(r)
    jobs = [Job(video, tuple(dict.fromkeys(r.question for r in questions))) for video, questions in by_video.items()]
    ray_start_s = start_ray(options)
    predictions: list[Prediction] = []
    answered: dict[tuple[str, str], str] = {}
    total = sum(len(j.questions) for j in jobs)
    for line in run_jobs(bundle, jobs, chunk.to_dict(), options):
        if "error" in line:
            raise ValueError(line["error"])
        answered[(line["source"], line["question"])] = line["answer"]
        if progress:
            progress(len(answered), total)
    for video, questions in by_video.items():
        for r in questions:
            predictions.append(Prediction(video, r.question, r.answer, answered[(video, r.question)], r.family, r.template))
    summary = summarize(predictions, baseline_for(rows, chunk, baseline_rows))
    summary["ray_start_s"] = round(ray_start_s, 3)
    return summary, predictions
