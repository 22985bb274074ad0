"""Exact-match scoring, overall and per family, beside the question-only baseline (no torch).

The PyTorch model (evaluate.py) and a bundle through the runtime (evaluate_runtime.py) are scored
by the same code on the same decoded clips: runtime.media.read_clip, the inference path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from mirasol_edge.data.manifest import ManifestRow, majority_baseline

BASELINE_CLIPS = 2000  # generated clips whose questions teach the baseline when no train manifest is given
BASELINE_SEED = 1_000_003  # a seed no training or held-out set uses


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    family: str = "unknown"
    template: str = "unknown"


@dataclass(frozen=True)
class Prediction:
    clip: str
    question: str
    answer: str  # the reference
    predicted: str
    family: str
    template: str

    @property
    def correct(self) -> bool:
        return normalize(self.predicted) == normalize(self.answer)


def normalize(text: str) -> str:
    """Exact match up to surrounding whitespace and letter case."""
    return " ".join(text.split()).lower()


Clip = tuple[str, np.ndarray, np.ndarray, Sequence[Question]]  # name, frames (K, F, H, W, 3), waveform (K, S), questions


def manifest_clips(rows: Sequence[ManifestRow], spec, workers: int = 0) -> Iterator[Clip]:
    """The manifest's videos decoded with runtime.media.read_clip, each with its questions."""
    from mirasol_edge.runtime.media import read_clip

    by_video: dict = {}
    for r in rows:
        by_video.setdefault(r.video, []).append(Question(r.question, r.answer, r.family, r.template))

    def decode(video):
        frames, waveform = read_clip(video, spec)
        return str(video), frames, waveform, by_video[video]

    if workers <= 0:
        yield from map(decode, by_video)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor  # PyAV decodes outside the GIL

    videos = iter(by_video)
    with ThreadPoolExecutor(workers) as pool:
        ahead = deque(pool.submit(decode, v) for _, v in zip(range(2 * workers), videos))  # bounded read-ahead
        while ahead:
            clip = ahead.popleft().result()
            nxt = next(videos, None)
            if nxt is not None:
                ahead.append(pool.submit(decode, nxt))
            yield clip


# --- scores ------------------------------------------------------------------------------------


def generated_baseline_rows(spec, n_clips: int = BASELINE_CLIPS, seed: int = BASELINE_SEED) -> list:
    """Questions of n_clips generated scenes (no rendering): what the question-only baseline learns from."""
    from mirasol_edge.data.synth import clip_seed, sample_scene

    return [q for i in range(n_clips) for q in sample_scene(clip_seed(seed, i), spec).qa]


def baseline_for(test_rows: Sequence, spec, train_rows: Sequence | None = None) -> dict[str, float] | None:
    """Per-family accuracy of the most frequent answer per template, learned on train_rows, or (for
    synthetic test data) on generated questions; None when neither applies."""
    if train_rows is None:
        from mirasol_edge.data.synth import TEMPLATES

        if not all(getattr(r, "template", None) in TEMPLATES for r in test_rows):
            return None  # not our synthetic templates: only a train manifest can say what is frequent
        train_rows = generated_baseline_rows(spec)
    return majority_baseline(train_rows, test_rows)


def summarize(predictions: Sequence[Prediction], baseline: dict[str, float] | None = None) -> dict:
    """{"n_clips", "n_questions", "accuracy", "baseline", "families": {family: {"n", "accuracy",
    "baseline"}}, "templates": {template: {"n", "accuracy"}}}; baselines None when unknown."""
    fam_hits, fam_n, tpl_hits, tpl_n = defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int)
    for p in predictions:
        fam_hits[p.family] += p.correct
        fam_n[p.family] += 1
        tpl_hits[p.template] += p.correct
        tpl_n[p.template] += 1
    n = sum(fam_n.values())
    families = {
        f: {"n": fam_n[f], "accuracy": fam_hits[f] / fam_n[f], "baseline": None if baseline is None else baseline.get(f)}
        for f in sorted(fam_n)
    }
    overall_baseline = None
    if baseline is not None and all(v["baseline"] is not None for v in families.values()) and n:
        overall_baseline = sum(v["baseline"] * v["n"] for v in families.values()) / n
    return {
        "n_clips": len({p.clip for p in predictions}),
        "n_questions": n,
        "accuracy": sum(fam_hits.values()) / n if n else 0.0,
        "baseline": overall_baseline,
        "families": families,
        "templates": {t: {"n": tpl_n[t], "accuracy": tpl_hits[t] / tpl_n[t]} for t in sorted(tpl_n)},
    }


def format_table(summary: dict) -> str:
    """The summary as a fixed-width table: family, questions, accuracy, baseline, margin (points)."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    def margin(acc, base):
        return "-" if base is None else f"{100 * (acc - base):+.1f}"

    lines = [f"{'family':<16}{'questions':>10}{'accuracy %':>12}{'baseline %':>12}{'margin':>9}"]
    for f, v in summary["families"].items():
        lines.append(f"{f:<16}{v['n']:>10}{pct(v['accuracy']):>12}{pct(v['baseline']):>12}{margin(v['accuracy'], v['baseline']):>9}")
    lines.append(
        f"{'overall':<16}{summary['n_questions']:>10}{pct(summary['accuracy']):>12}{pct(summary['baseline']):>12}"
        f"{margin(summary['accuracy'], summary['baseline']):>9}"
    )
    lines.append(f"({summary['n_clips']} clips; exact match; baseline: most frequent answer per question template)")
    return "\n".join(lines)
