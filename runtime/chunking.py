"""Cutting time-aligned audio and video into consecutive, equal chunks.

Chunk k holds the frames and the samples of the same seconds:
frames [k*F, (k+1)*F) and samples [k*S, (k+1)*S), with F = frames_per_chunk and
S = samples_per_chunk. The clip's length is set by its video; audio is padded with
silence or trimmed to match.

A trailing partial chunk is kept (padded: last frame repeated, silence) when it holds
at least half a chunk of video, and dropped otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

KEEP_PARTIAL_FRACTION = 0.5  # a trailing partial chunk is padded if it is at least this full


@dataclass(frozen=True)
class ChunkSpec:
    """What one time chunk is: its duration and the media sampling inside it."""

    chunk_seconds: float = 1.0  # duration of one chunk
    fps: int = 4  # video frames per second after resampling
    frame_size: int = 32  # frames are frame_size x frame_size RGB after resizing
    sample_rate: int = 16_000  # audio samples per second, mono

    @property
    def frames_per_chunk(self) -> int:
        frames = self.chunk_seconds * self.fps
        assert abs(frames - round(frames)) < 1e-6, "chunk_seconds * fps must be whole"
        return int(round(frames))

    @property
    def samples_per_chunk(self) -> int:
        samples = self.chunk_seconds * self.sample_rate
        assert abs(samples - round(samples)) < 1e-6, "chunk_seconds * sample_rate must be whole"
        return int(round(samples))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ChunkSpec":
        return cls(**d)


def num_chunks(num_frames: int, spec: ChunkSpec) -> int:
    """Chunks a clip of `num_frames` video frames gives, following the partial-chunk rule."""
    full, rest = divmod(num_frames, spec.frames_per_chunk)
    return full + int(rest > 0 and rest >= KEEP_PARTIAL_FRACTION * spec.frames_per_chunk)


def validate_clip(frames: np.ndarray, waveform: np.ndarray, spec: ChunkSpec) -> None:
    """Raise ValueError, in one sentence, if a clip does not fit the chunk spec.

    frames: (T, H, W, 3) uint8; waveform: (N,) float32 in [-1, 1].
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(
            f"video frames must be a uint8 array of shape (T, H, W, 3), got "
            f"{getattr(frames, 'dtype', type(frames).__name__)}; convert with frames.astype(np.uint8)."
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video frames must have shape (T, H, W, 3), got {tuple(frames.shape)}.")
    if frames.shape[1:3] != (spec.frame_size, spec.frame_size):
        raise ValueError(
            f"video frames are {frames.shape[1]}x{frames.shape[2]} but the model expects "
            f"{spec.frame_size}x{spec.frame_size}; resize them (runtime.media does this)."
        )
    if not isinstance(waveform, np.ndarray) or waveform.dtype != np.float32 or waveform.ndim != 1:
        raise ValueError(
            f"audio must be a 1-D float32 array of {spec.sample_rate} Hz mono samples, got "
            f"{getattr(waveform, 'dtype', type(waveform).__name__)} with shape {getattr(waveform, 'shape', None)}."
        )
    if num_chunks(len(frames), spec) == 0:
        raise ValueError(
            f"the clip is empty or too short: {len(frames)} frames is less than half a chunk "
            f"({spec.frames_per_chunk} frames = {spec.chunk_seconds} s at {spec.fps} fps)."
        )


def check_chunk(frames: np.ndarray, waveform: np.ndarray, spec: ChunkSpec) -> None:
    """ValueError, in one sentence, unless frames is (F, H, W, 3) uint8 and waveform (S,) float32: one chunk."""
    f, s, hw = spec.frames_per_chunk, spec.samples_per_chunk, spec.frame_size
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(
            f"video frames must be a uint8 numpy array, got {getattr(frames, 'dtype', type(frames).__name__)}; "
            f"convert with frames.astype(np.uint8)."
        )
    if frames.shape != (f, hw, hw, 3):
        raise ValueError(
            f"a chunk's frames must have shape ({f}, {hw}, {hw}, 3) ({spec.chunk_seconds:g} s at {spec.fps} fps, "
            f"{hw}x{hw} RGB), got {frames.shape}; decode with runtime.media or cut with runtime.chunking."
        )
    if not isinstance(waveform, np.ndarray) or waveform.dtype != np.float32:
        raise ValueError(
            f"audio must be a float32 numpy array of samples in [-1, 1], got "
            f"{getattr(waveform, 'dtype', type(waveform).__name__)}."
        )
    if waveform.shape != (s,):
        raise ValueError(
            f"a chunk's audio must have shape ({s},) ({spec.chunk_seconds:g} s of {spec.sample_rate} Hz mono), "
            f"got {waveform.shape}."
        )


def chunk_clip(frames: np.ndarray, waveform: np.ndarray, spec: ChunkSpec) -> tuple[np.ndarray, np.ndarray]:
    """Cut a clip into aligned chunks.

    frames: (T, H, W, 3) uint8 at spec.fps; waveform: (N,) float32 at spec.sample_rate.
    Returns frames (K, F, H, W, 3) uint8 and waveform (K, S) float32, K = num_chunks(T).
    """
    validate_clip(frames, waveform, spec)
    k = num_chunks(len(frames), spec)
    f, s = spec.frames_per_chunk, spec.samples_per_chunk
    if len(frames) < k * f:  # pad the kept partial chunk by repeating the last frame
        pad = np.repeat(frames[-1:], k * f - len(frames), axis=0)
        frames = np.concatenate([frames, pad], axis=0)
    frames = frames[: k * f]
    audio = np.zeros(k * s, dtype=np.float32)  # silence where the audio is shorter
    n = min(len(waveform), k * s)
    audio[:n] = waveform[:n]
    # (K*F, H, W, 3) -> (K, F, H, W, 3); (K*S,) -> (K, S)
    return frames.reshape(k, f, *frames.shape[1:]), audio.reshape(k, s)
