"""Examples -> padded training batches: chunks of media, prompt + answer tokens, labels, masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mirasol_edge.config import ModelConfig
from mirasol_edge.data.synth import UNLABELLED
from mirasol_edge.runtime import tokenizer

IGNORE = -100  # label of what is not scored: question tokens, padding, unknown events


@dataclass
class Example:
    """One (clip, question, answer): frames (K, F, H, W, 3) u8 and waveform (K, S) f32, already chunked."""

    frames: np.ndarray
    waveform: np.ndarray
    question: str
    answer: str
    events: np.ndarray | None = None  # (K, A) int64 per-chunk event classes, synthetic clips only


ClipExamples = list[Example]  # the questions of one clip, sharing its arrays


def collate_clips(clips: list[ClipExamples], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """C clips, each with its questions -> one batch that stores every clip once.

    Chunks and tokens are padded to the longest in the batch. Returns waveform (C, K, S), frames
    (C, K, F, H, W, 3), chunk_mask (C, K) for the clips (the media of each clip's first example);
    tokens (B, T) and labels (B, T) for the B >= C questions, where tokens[t] predicts labels[t]
    and only answer tokens and eos are scored; question_clip (B,): the clip each question asks
    about; and with cfg.event_classes, chunk_events (C, K, A): IGNORE where unknown or padding.
    """
    c, k = len(clips), max(len(clip[0].frames) for clip in clips)
    spec = cfg.chunk
    frames = np.zeros((c, k, spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), np.uint8)
    waveform = np.zeros((c, k, spec.samples_per_chunk), np.float32)
    chunk_mask = np.zeros((c, k), bool)
    for i, clip in enumerate(clips):
        n = len(clip[0].frames)
        frames[i, :n], waveform[i, :n], chunk_mask[i, :n] = clip[0].frames, clip[0].waveform, True

    batch = {
        "waveform": torch.from_numpy(waveform), "frames": torch.from_numpy(frames), "chunk_mask": torch.from_numpy(chunk_mask),
        **text_batch([[(e.question, e.answer) for e in clip] for clip in clips], cfg.max_text_len),
    }
    if cfg.event_classes:
        events = np.full((c, k, len(cfg.event_classes)), IGNORE, np.int64)
        for i, clip in enumerate(clips):
            if clip[0].events is not None:
                events[i, : len(clip[0].events)] = np.where(clip[0].events == UNLABELLED, IGNORE, clip[0].events)
        batch["chunk_events"] = torch.from_numpy(events)
    return batch


def text_batch(clips: list[list[tuple[str, str]]], max_text_len: int) -> dict[str, torch.Tensor]:
    """The (question, answer) pairs of C clips -> tokens (B, T) and labels (B, T) of the B pairs, padded,
    tokens[t] predicting labels[t] (only answer tokens and eos scored), and question_clip (B,)."""
    sequences = [tokenizer.example_tokens(q, a, max_text_len) for clip in clips for q, a in clip]
    t = max(len(ids) for ids, _ in sequences) - 1
    tokens = np.full((len(sequences), t), tokenizer.PAD, np.int64)
    labels = np.full((len(sequences), t), IGNORE, np.int64)
    for i, (ids, answer_start) in enumerate(sequences):  # teacher forcing: the input shifted by one
        tokens[i, : len(ids) - 1] = ids[:-1]
        labels[i, answer_start - 1 : len(ids) - 1] = ids[answer_start:]  # the sep token predicts the answer's first
    return {"tokens": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
            "question_clip": torch.tensor([i for i, clip in enumerate(clips) for _ in clip], dtype=torch.long)}


def collate(examples: list[Example], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Examples each of its own clip -> collate_clips' batch with C = B: waveform (B, K, S), ..., tokens (B, T)."""
    return collate_clips([[e] for e in examples], cfg)
