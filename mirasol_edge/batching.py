"""Examples -> padded training batches: chunks of media, prompt + answer tokens, labels, masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.mirasol import IGNORE
from mirasol_edge.runtime import tokenizer


@dataclass
class Example:
    """One (clip, question, answer): frames (K, F, H, W, 3) u8 and waveform (K, S) f32, already chunked."""

    frames: np.ndarray
    waveform: np.ndarray
    question: str
    answer: str
    events: np.ndarray | None = None  # (K, A) int64 per-chunk event classes, synthetic clips only


def collate(examples: list[Example], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Pad chunks and tokens to the longest in the batch.

    Returns waveform (B, K, S), frames (B, K, F, H, W, 3), chunk_mask (B, K), tokens (B, T) and
    labels (B, T): tokens[t] predicts labels[t]; only answer tokens and eos are scored.
    """
    b, k = len(examples), max(len(e.frames) for e in examples)
    spec = cfg.chunk
    frames = np.zeros((b, k, spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), np.uint8)
    waveform = np.zeros((b, k, spec.samples_per_chunk), np.float32)
    chunk_mask = np.zeros((b, k), bool)
    sequences = []
    for i, e in enumerate(examples):
        n = len(e.frames)
        frames[i, :n], waveform[i, :n], chunk_mask[i, :n] = e.frames, e.waveform, True
        ids, answer_start = tokenizer.encode_example(e.question, e.answer, cfg.max_text_len)
        sequences.append((ids, answer_start))
    t = max(len(ids) for ids, _ in sequences) - 1
    tokens = np.full((b, t), tokenizer.PAD, np.int64)
    labels = np.full((b, t), IGNORE, np.int64)
    for i, (ids, answer_start) in enumerate(sequences):
        tokens[i, : len(ids) - 1] = ids[:-1]
        labels[i, answer_start - 1 : len(ids) - 1] = ids[answer_start:]  # the sep token predicts the answer's first
    as_tensor = torch.from_numpy
    return {
        "waveform": as_tensor(waveform), "frames": as_tensor(frames), "chunk_mask": as_tensor(chunk_mask),
        "tokens": as_tensor(tokens), "labels": as_tensor(labels),
    }
