"""Write small test media files with PyAV, so tests never need checked-in binaries.

`write_media` takes raw frames and samples and encodes them with any encoder the
bundled FFmpeg has; the container follows the file extension (.mp4, .mkv, .webm,
.mov, .avi, ...). The helpers below it make easy-to-check content: solid colours
and sine tones.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def write_media(
    path: str | os.PathLike,
    frames: np.ndarray | None,
    fps: int,
    waveform: np.ndarray | None = None,
    sample_rate: int = 48_000,
    vcodec: str = "libx264",
    acodec: str = "aac",
    rotation: int = 0,
    frame_times: list[float] | None = None,
) -> str:
    """Encode a clip to `path` and return the path as a string.

    frames: (T, H, W, 3) uint8 RGB at `fps`, or None for an audio-only file (H, W even).
    waveform: (N,) float32 mono in [-1, 1] at `sample_rate`, or None for a silent file.
    rotation: counter-clockwise display rotation stored in the container (mp4/mov).
    frame_times: seconds at which each frame starts, for variable frame rate (default i / fps).
    """
    path = str(path)
    # avoid_negative_ts would shift every stream by the audio encoder's priming delay
    # (mp3), which avi can only round to whole frame slots: a video frame goes missing.
    with av.open(path, mode="w", options={"avoid_negative_ts": "disabled"}) as container:
        vstream = astream = None
        if frames is not None:
            vstream = container.add_stream(vcodec, rate=fps)
            vstream.height, vstream.width = frames.shape[1:3]
            vstream.pix_fmt = "yuv420p"
            if vcodec in ("libx264", "h264"):
                # Near-lossless and fast: the tests check colours, not codec quality.
                vstream.options = {"crf": "10", "preset": "ultrafast"}
            else:
                vstream.bit_rate = 2_000_000
            if rotation:
                vstream.set_display_rotation(rotation)
            # Millisecond timestamps allow any frame times; constant rate uses 1/fps.
            vtime_base = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
            vstream.codec_context.time_base = vtime_base
        if waveform is not None:
            astream = container.add_stream(acodec, rate=sample_rate)
            astream.layout = "mono"
        container.start_encoding()  # header first: stream time bases are final before muxing
        if vstream is not None:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = i if frame_times is None else round(frame_times[i] * 1000)
                frame.time_base = vtime_base
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode(None))
        if astream is not None:
            # PyAV's encoder converts format and frame size itself; feed 1024-sample blocks.
            samples = np.asarray(waveform, dtype=np.float32)
            for start in range(0, len(samples), 1024):
                block = samples[None, start : start + 1024]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


def solid_frames(colors: list[tuple[int, int, int]], frames_each: int, height: int, width: int) -> np.ndarray:
    """(len(colors) * frames_each, height, width, 3) uint8: each colour held for `frames_each` frames."""
    out = np.zeros((len(colors) * frames_each, height, width, 3), dtype=np.uint8)
    for i, color in enumerate(colors):
        out[i * frames_each : (i + 1) * frames_each] = color
    return out


def tone(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    """(round(seconds * sample_rate),) float32 sine tone."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def color_of(frame: np.ndarray) -> tuple[int, int, int]:
    """The nearest of red/blue/green to a frame's mean colour."""
    mean = frame.reshape(-1, 3).mean(0)
    return min((RED, BLUE, GREEN), key=lambda c: np.abs(mean - c).sum())
