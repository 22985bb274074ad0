"""Cutting time-aligned audio and video into consecutive, equal chunks.

Chunk k holds the frames and the samples of the same seconds:
frames [k*F, (k+1)*F) and samples [k*S, (k+1)*S), with F = frames_per_chunk and
S = samples_per_chunk. The clip's length is set by its video; audio is padded with
silence or trimmed to match.

A trailing partial chunk is kept (padded: last frame repeated; its audio is the clip's
samples of those seconds where there are any, silence past them) when it holds at least half
a chunk of video, and dropped otherwise.
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


_NUMPY_NAMES = {np.dtype(np.uint8): "uint8", np.dtype(np.float32): "float32"}  # str(dtype) costs ~10 us a call


def _dtype(x) -> str:
    """'uint8', 'float32', ... of a numpy array or a torch tensor (the PyTorch model checks with this too)."""
    dtype = getattr(x, "dtype", None)
    if isinstance(x, np.ndarray) and dtype in _NUMPY_NAMES:
        return _NUMPY_NAMES[dtype]
    return str(dtype).removeprefix("torch.") if dtype is not None and hasattr(x, "shape") else type(x).__name__


def check_media(frames, waveform, spec: ChunkSpec, lead: int | None = None) -> None:
    """ValueError, in one sentence, unless frames and waveform fit the chunk spec.

    numpy arrays or torch tensors. lead=None: a whole clip, frames (T, H, W, 3) uint8 with at
    least half a chunk of them, waveform (N,) float32 of any length; lead=n: chunks, frames
    (*L, F, H, W, 3) uint8 and waveform (*L, S) float32 with the same n leading dims L
    (0: one chunk, as Stream.push takes; 2: (B, K), as the PyTorch model takes).
    """
    f, s, hw = spec.frames_per_chunk, spec.samples_per_chunk, spec.frame_size
    if _dtype(frames) != "uint8":
        raise ValueError(f"video frames must be uint8 RGB, got {_dtype(frames)}; convert them to uint8 (0-255).")
    if _dtype(waveform) != "float32":
        raise ValueError(
            f"audio must be float32 samples in [-1, 1] at {spec.sample_rate} Hz mono, got {_dtype(waveform)}.")
    frames_shape, wave_shape = tuple(frames.shape), tuple(waveform.shape)
    if lead is None:
        if len(frames_shape) != 4 or frames_shape[-1] != 3 or len(wave_shape) != 1:
            raise ValueError(f"a clip is frames (T, H, W, 3) and waveform (N,), got {frames_shape} and {wave_shape}.")
        if frames_shape[1:3] != (hw, hw):
            raise ValueError(
                f"video frames are {frames_shape[1]}x{frames_shape[2]} but the model expects {hw}x{hw}; "
                f"resize them (runtime.media does this).")
        if num_chunks(frames_shape[0], spec) == 0:
            raise ValueError(
                f"the clip is empty or too short: {frames_shape[0]} frames is less than half a chunk "
                f"({f} frames = {spec.chunk_seconds:g} s at {spec.fps} fps).")
        return
    lead_shape = frames_shape[:lead]
    if frames_shape != lead_shape + (f, hw, hw, 3):
        raise ValueError(
            f"video chunks must have shape ({', '.join([*'BK'[2 - lead:], *map(str, (f, hw, hw, 3))])}) ({spec.chunk_seconds:g} s at {spec.fps} fps, "
            f"{hw}x{hw} RGB), got {frames_shape}; decode with runtime.media or cut with runtime.chunking.")
    if wave_shape != lead_shape + (s,):
        raise ValueError(
            f"audio chunks must have shape {lead_shape + (s,)} ({spec.chunk_seconds:g} s of {spec.sample_rate} Hz "
            f"mono), got {wave_shape}.")
    if 0 in lead_shape:
        raise ValueError("there are no chunks: the clip is empty.")


def chunk_clip(frames: np.ndarray, waveform: np.ndarray, spec: ChunkSpec) -> tuple[np.ndarray, np.ndarray]:
    """Cut a clip into aligned chunks.

    frames: (T, H, W, 3) uint8 at spec.fps; waveform: (N,) float32 at spec.sample_rate.
    Returns frames (K, F, H, W, 3) uint8 and waveform (K, S) float32, K = num_chunks(T).
    """
    check_media(frames, waveform, spec)
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
