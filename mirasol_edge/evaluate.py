"""Exact-match evaluation of the PyTorch model, scored by scoring.py.

Clips come from media files through runtime.media.read_clip (the inference path). Each clip is
encoded once; all its questions are then answered greedily from the same cross-attention cache.
Clips with the same number of chunks are encoded together and questions with prompts of the same
length are decoded together, which changes nothing in the answers (no padding anywhere).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from mirasol_edge.data.manifest import ManifestRow
from mirasol_edge.model import MirasolModel
from mirasol_edge.runtime import tokenizer
from mirasol_edge.scoring import Clip, Prediction, Question, baseline_for, manifest_clips, summarize


@torch.no_grad()
def answer_clips(model: MirasolModel, clips: Iterable[Clip], clips_per_batch: int = 8,
                 max_new_tokens: int = 16) -> Iterator[Prediction]:
    """Greedy answers to every question of every clip; clips of equal length are encoded together."""
    model.eval()
    pending: dict[int, list[Clip]] = defaultdict(list)
    for clip in clips:
        k = len(clip[1])
        pending[k].append(clip)
        if len(pending[k]) == clips_per_batch:
            yield from _answer_batch(model, pending.pop(k), max_new_tokens)
    for k in sorted(pending):
        yield from _answer_batch(model, pending[k], max_new_tokens)


def _answer_batch(model: MirasolModel, clips: list[Clip], max_new_tokens: int) -> list[Prediction]:
    device = model.temporal_decoder.slot.device
    frames = torch.from_numpy(np.stack([c[1] for c in clips])).to(device)  # (n, K, F, H, W, 3)
    waveform = torch.from_numpy(np.stack([c[2] for c in clips])).to(device)  # (n, K, S)
    _, features = model.encode(waveform, frames)  # (n, K*m, D): once per clip
    cross, summary = model.clip_context(features)  # (n, h, K*m or window*m, hd), (n, h, S, hd) or None
    by_length: dict[int, list[tuple[int, Question, list[int]]]] = defaultdict(list)
    for i, (_, _, _, questions) in enumerate(clips):
        for q in questions:
            ids = tokenizer.prompt_tokens(q.question, model.cfg.max_text_len)
            by_length[len(ids)].append((i, q, ids))
    out = []
    for group in by_length.values():
        index = torch.tensor([i for i, _, _ in group], device=device)
        prompts = torch.tensor([ids for _, _, ids in group], device=device)  # (G, L)
        generated = model.generate([(k[index], v[index]) for k, v in cross], prompts, max_new_tokens, chunks=len(clips[0][1]),
                                   summary=None if summary is None else [(k[index], v[index]) for k, v in summary])
        for (i, q, _), row in zip(group, generated.tolist()):
            out.append(Prediction(clips[i][0], q.question, q.answer, tokenizer.detokenize(row), q.family, q.template))
    return out


def evaluate_manifest(
    model: MirasolModel,
    rows: Sequence[ManifestRow],
    baseline_rows: Sequence | None = None,
    clips_per_batch: int = 8,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, list[Prediction]]:
    """Decode every video of the manifest, answer its questions; returns (summary, predictions)."""
    if not rows:
        raise ValueError("the manifest has no rows to evaluate.")
    predictions: list[Prediction] = []
    total = len({r.video for r in rows})
    done: set[str] = set()
    for p in answer_clips(model, manifest_clips(rows, model.cfg.chunk, workers), clips_per_batch):
        predictions.append(p)
        if progress and p.clip not in done:
            done.add(p.clip)
            progress(len(done), total)
    summary = summarize(predictions, baseline_for(rows, model.cfg.chunk, baseline_rows))
    return summary, predictions
