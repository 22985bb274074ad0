"""Training data as batching.Example: synthetic clips rendered on the fly, or media files from a manifest.

An item is the list of examples of ONE clip: `questions_per_clip` (question, answer) pairs that share
the clip's frames and waveform (the same arrays). `batching.collate_clips` pads the clips once and
points every question at its clip, so the training step encodes each clip once for all its questions.

Files are decoded by runtime.media.read_clip, the same path inference uses (no train/serve skew).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from mirasol_edge.batching import ClipExamples, Example
from mirasol_edge.data.manifest import ManifestRow, load_manifest
from mirasol_edge.data.synth import allowed_durations, clip_seed, render_clip, second_events
from mirasol_edge.runtime.chunking import ChunkSpec, chunk_clip


def _pick(n_available: int, k: int | None, rng: np.random.Generator) -> list[int]:
    """k distinct indices out of n_available (all of them, shuffled, when k is None or too big)."""
    if k is None or k >= n_available:
        return [int(i) for i in rng.permutation(n_available)]
    return [int(i) for i in rng.choice(n_available, size=k, replace=False)]


class SyntheticDataset(Dataset):
    """Clips of mirasol_edge.data.synth, rendered and chunked on the fly.

    Item i is clip `clip_seed(seed, i)` with `questions_per_clip` of its questions (None: all of
    them, 11-13), drawn without replacement; deterministic per (seed, i). `durations` (whole seconds,
    each allowed by the chunk spec) and their `weights` set the clip lengths: the `group` consecutive
    items i // group share one length, so a batch of `group` clips needs no chunk padding.
    `off_grid`: the fraction of clips whose events lie off the chunk grid (synth's off_grid mode);
    `near_change`: in those, the fraction of sounds placed against a shape change (hard examples).
    """

    def __init__(
        self,
        spec: ChunkSpec,
        n: int,
        seed: int = 0,
        questions_per_clip: int | None = 1,
        durations: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        group: int = 1,
        off_grid: float = 0.0,
        near_change: float = 0.0,
    ):
        for name, value in (("off-grid fraction", off_grid), ("near-change fraction", near_change)):
            if not 0 <= value <= 1:
                raise ValueError(f"the {name} must be in [0, 1], got {value}.")
        self.off_grid, self.near_change = float(off_grid), float(near_change)
        self.spec, self.n, self.seed, self.questions_per_clip = spec, int(n), int(seed), questions_per_clip
        allowed = allowed_durations(spec)
        self.durations = list(durations) if durations else allowed
        bad = [d for d in self.durations if d not in allowed_durations(spec, min(self.durations), max(self.durations))]
        if bad:
            raise ValueError(f"clip lengths {bad} s do not cut into whole {spec.chunk_seconds:g} s chunks; use multiples of it (>= 4 s).")
        w = np.ones(len(self.durations)) if weights is None else np.asarray(weights, np.float64)
        if len(w) != len(self.durations) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"need one non-negative weight per clip length ({len(self.durations)}), got {list(w)}.")
        self.weights = w / w.sum()
        self.group = max(1, int(group))

    def __len__(self) -> int:
        return self.n

    def duration(self, i: int) -> int:
        rng = np.random.default_rng([self.seed, i // self.group, 1])  # one draw per group
        return int(self.durations[rng.choice(len(self.durations), p=self.weights)])

    def __getitem__(self, i: int) -> ClipExamples:
        if not 0 <= i < self.n:
            raise IndexError(i)
        d = self.duration(i)
        off_grid = self.off_grid > 0 and np.random.default_rng([self.seed, i, 3]).random() < self.off_grid
        clip = render_clip(clip_seed(self.seed, i), self.spec, min_seconds=d, max_seconds=d, off_grid=off_grid,
                           near_change=self.near_change)
        frames, waveform = chunk_clip(clip.frames, clip.waveform, self.spec)  # (K, F, H, W, 3), (K, S)
        rng = np.random.default_rng([self.seed, i, 2])
        qa = [clip.qa[j] for j in _pick(len(clip.qa), self.questions_per_clip, rng)]
        events = second_events(clip) if self.spec.chunk_seconds == 1 else None  # one chunk per second
        return [Example(frames, waveform, q.question, q.answer, events) for q in qa]


class ManifestDataset(Dataset):
    """Media files of a manifest, decoded with runtime.media.read_clip; one item per video file.

    Item i is video i % n with `questions_per_clip` of its rows (None: all), drawn from (seed, i // n,
    video): items n..2n-1 are the next epoch's draws of the same files. Rows of a file are grouped in
    manifest order. `cache_clips` keeps that many decoded clips in memory (LRU, per worker process).
    """

    def __init__(
        self,
        manifest: str | Path | list[ManifestRow],
        spec: ChunkSpec,
        questions_per_clip: int | None = None,
        seed: int = 0,
        cache_clips: int = 0,
    ):
        rows = load_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
        if not rows:
            raise ValueError(f"manifest {manifest} has no rows; it needs at least one (video, question, answer).")
        by_video: OrderedDict[Path, list[ManifestRow]] = OrderedDict()
        for r in rows:
            by_video.setdefault(r.video, []).append(r)
        self.videos = list(by_video)
        self.rows = list(by_video.values())
        self.spec, self.questions_per_clip, self.seed = spec, questions_per_clip, int(seed)
        self.cache_clips = int(cache_clips)
        self._cache: OrderedDict[Path, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.videos)

    def clip(self, video: int) -> tuple[np.ndarray, np.ndarray]:
        """File `video` decoded: frames (K, F, H, W, 3) u8, waveform (K, S) f32."""
        from mirasol_edge.runtime.media import read_clip

        path = self.videos[video]
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        arrays = read_clip(path, self.spec)
        if self.cache_clips > 0:
            self._cache[path] = arrays
            while len(self._cache) > self.cache_clips:
                self._cache.popitem(last=False)
        return arrays

    def __getitem__(self, i: int) -> ClipExamples:
        draw, video = divmod(int(i), len(self.videos))
        frames, waveform = self.clip(video)
        rows = self.rows[video]
        rng = np.random.default_rng([self.seed, draw, video])
        return [Example(frames, waveform, rows[j].question, rows[j].answer)
                for j in _pick(len(rows), self.questions_per_clip, rng)]

