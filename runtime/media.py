"""Decode media files and live sources into the aligned chunks of a ChunkSpec.

Anything FFmpeg reads through PyAV works: a path or a URL that `av.open` accepts,
in any container (mp4, mkv, webm, mov, avi, ...) and codec (H.264, VP9, MPEG-4,
AAC, Opus, MP3, PCM, ...). Decoding is incremental: `iter_chunks` demuxes both
streams interleaved and yields each chunk as soon as its frames and samples are in,
so a long file or a live stream never sits whole in memory.

Per chunk (F = spec.frames_per_chunk, S = spec.samples_per_chunk):
  frames   (F, H, W, 3) uint8 RGB, H = W = spec.frame_size, at spec.fps;
  waveform (S,) float32 mono at spec.sample_rate.

Time 0 is the first decoded video frame; the clip's length is set by the video and
the trailing partial chunk follows chunking.py's rule (`num_chunks`, `chunk_clip`).

This module imports numpy and PyAV only (never torch); PyAV is imported lazily so
`import mirasol_edge.runtime` works without it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from mirasol_edge.runtime.chunking import ChunkSpec, chunk_clip, num_chunks

if TYPE_CHECKING:  # pragma: no cover
    import av

__all__ = ["MediaError", "MediaWarning", "iter_chunks", "read_clip", "probe"]

# If the video runs this many seconds ahead of the audio, assume the audio track
# has ended (or stalled) and emit chunks with silence instead of buffering video
# without bound. Samples that arrive later for already-emitted time are dropped.
MAX_AV_SKEW_SECONDS = 10.0
# An audio timestamp this far past where the previous samples ended is a real gap
# (dropped packets in a live stream): fill it with silence to keep audio aligned.
AUDIO_GAP_SECONDS = 0.1
_EPS = 1e-6  # seconds; absorbs float error when comparing timestamps


class MediaError(ValueError):
    """A source that cannot be decoded: missing, unreadable, corrupt, or without video."""


class MediaWarning(UserWarning):
    """A source that decodes, but not fully as expected (no audio track, skipped packets)."""


def iter_chunks(source: str | os.PathLike, spec: ChunkSpec) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode `source` chunk by chunk.

    Yields (frames (F, H, W, 3) uint8 RGB, waveform (S,) float32 mono), with
    F = spec.frames_per_chunk, H = W = spec.frame_size, S = spec.samples_per_chunk.

    The source is opened here, so a missing or unreadable file raises MediaError at
    the call, not at the first `next()`. A source without an audio track gives
    silence and a MediaWarning. Raises MediaError if the source has no video or too
    little of it for one chunk.
    """
    name = _name(source)
    container = _open(source)
    try:
        video, audio = _pick_streams(container, name)
    except BaseException:
        container.close()
        raise
    if audio is None:
        warnings.warn(f"{name} has no audio track; using silence for its audio.", MediaWarning, stacklevel=2)
    return _generate_chunks(container, video, audio, spec, name)


def read_clip(source: str | os.PathLike, spec: ChunkSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole (short) source at once.

    Returns frames (K, F, H, W, 3) uint8 and waveform (K, S) float32, K chunks,
    stacked from `iter_chunks`. For long files or live sources use `iter_chunks`.
    """
    chunks = list(iter_chunks(source, spec))  # raises MediaError rather than return K = 0
    return np.stack([f for f, _ in chunks]), np.stack([w for _, w in chunks])


def probe(source: str | os.PathLike) -> dict:
    """What a source holds, without decoding it.

    Returns {"duration": seconds or None, "has_video", "has_audio", "video_codec",
    "audio_codec", "width", "height", "fps", "sample_rate", "channels", "format"};
    the stream fields are None when the stream is missing or does not say.
    """
    name = _name(source)
    with _open(source) as container:
        video, audio = _find_streams(container)
        duration = None
        if container.duration is not None:  # in AV_TIME_BASE (microseconds)
            duration = container.duration / 1_000_000
        elif video is not None and video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        rate = (video.average_rate or video.guessed_rate) if video is not None else None
        return {
            "source": name,
            "format": container.format.name,
            "duration": duration,
            "has_video": video is not None,
            "has_audio": audio is not None,
            "video_codec": video.codec_context.name if video is not None else None,
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "width": video.codec_context.width if video is not None else None,
            "height": video.codec_context.height if video is not None else None,
            "fps": float(rate) if rate else None,
            "sample_rate": audio.codec_context.sample_rate if audio is not None else None,
            "channels": audio.codec_context.channels if audio is not None else None,
        }


# --- opening -------------------------------------------------------------------------


def _name(source: str | os.PathLike) -> str:
    return os.fspath(source)


def _open(source: str | os.PathLike) -> "av.container.InputContainer":
    """av.open, with the user's mistakes turned into MediaError."""
    import av

    name = _name(source)
    try:
        return av.open(name, mode="r")
    except FileNotFoundError:  # av.error.FileNotFoundError subclasses it
        raise MediaError(f"media file not found: {name}; check the path or URL.") from None
    except (av.FFmpegError, OSError) as e:
        # InvalidDataError for random bytes or a truncated mp4 (no 'moov' atom), and
        # whatever a bad URL or unreadable path gives.
        raise MediaError(
            f"cannot read {name} as audio/video ({_reason(e)}); the file may be truncated, "
            f"corrupt or not a media file: check it plays in a media player, or re-encode it."
        ) from None


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _find_streams(container) -> tuple:
    """The best video stream (cover art excluded) and the best audio stream, or None."""
    import av

    videos = [
        s
        for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic) and s.codec_context is not None
    ]
    audios = [s for s in container.streams.audio if s.codec_context is not None]
    # av_find_best_stream prefers default-disposition, high-resolution streams.
    video = audio = None
    if videos:
        best = container.streams.best("video")
        video = best if best in videos else videos[0]
    if audios:
        best = container.streams.best("audio")
        audio = best if best in audios else audios[0]
    return video, audio


def _pick_streams(container, name: str) -> tuple:
    video, audio = _find_streams(container)
    if video is None:
        raise MediaError(
            f"{name} has no video stream (audio-only or not a video); the model needs video, "
            f"so pass a video file."
        )
    video.thread_type = "AUTO"  # frame/slice threads: decoding is the bottleneck
    return video, audio


# --- decoding ------------------------------------------------------------------------


def _decoded_frames(container, streams: list, name: str) -> Iterator:
    """Yield decoded frames of `streams` in demux order, including decoder flushes.

    A packet that fails to decode is skipped (live and damaged streams have them);
    a read error ends the stream with a warning, keeping what was decoded so far.
    Whether anything usable came out is the caller's check.
    """
    import av

    skipped = 0
    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:  # demux ended with its flush packets: decoders are drained
            break
        except av.FFmpegError as e:
            warnings.warn(
                f"stopped reading {name} at a read error ({_reason(e)}); using what was decoded before it.",
                MediaWarning,
                stacklevel=3,
            )
            for stream in streams:  # demux did not send its flush packets: drain by hand
                try:
                    yield from stream.codec_context.decode(None)
                except av.FFmpegError:
                    pass
            break
        try:
            frames = packet.decode()  # an empty packet flushes the decoder at the end
        except av.FFmpegError:
            skipped += 1
            continue
        yield from frames
    if skipped:
        warnings.warn(f"skipped {skipped} undecodable packet(s) in {name}.", MediaWarning, stacklevel=3)


def _generate_chunks(container, video, audio, spec: ChunkSpec, name: str):
    import av

    f_per, s_per = spec.frames_per_chunk, spec.samples_per_chunk
    sampler = _FrameSampler(spec, video)
    sound = _AudioTrack(spec.sample_rate) if audio is not None else None
    pending: list[np.ndarray] = []  # resampled frames of the chunks not yet yielded
    k = 0  # index of the next chunk to yield

    def audio_ready() -> bool:
        """Whether chunk k's samples are in (or the audio is too far behind to wait for)."""
        if sound is None:
            return True
        end = (k + 1) * spec.chunk_seconds
        have = sound.end_seconds(sampler.origin)
        return have >= end - _EPS or sampler.last_time - have > MAX_AV_SKEW_SECONDS

    def next_chunk(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        wave = sound.take(k * s_per, (k + 1) * s_per, sampler.origin) if sound else np.zeros(0, np.float32)
        # chunk_clip owns the padding rule (last frame repeated, silence) and the checks.
        clip_frames, clip_wave = chunk_clip(np.stack(frames), wave, spec)
        return clip_frames[0], clip_wave[0]

    try:
        streams = [video] + ([audio] if audio is not None else [])
        for frame in _decoded_frames(container, streams, name):
            if isinstance(frame, av.VideoFrame):
                pending.extend(sampler.push(frame))
            else:
                sound.push(frame)
            while len(pending) >= f_per and audio_ready():
                yield next_chunk(pending[:f_per])
                del pending[:f_per]
                k += 1

        if sampler.decoded == 0:
            raise MediaError(
                f"no video frame could be decoded from {name}; the file may be truncated or corrupt, "
                f"or its codec unsupported: check it plays in a media player, or re-encode it."
            )
        pending.extend(sampler.finish())
        if sound is not None:
            sound.finish()
        while len(pending) >= f_per:
            yield next_chunk(pending[:f_per])
            del pending[:f_per]
            k += 1
        # The trailing partial chunk: kept (and padded) or dropped by chunking.py's rule.
        if pending and num_chunks(len(pending), spec) == 1:
            yield next_chunk(pending)
            k += 1
        if k == 0:
            seconds = sampler.total_frames / spec.fps
            raise MediaError(
                f"{name} holds only {seconds:.2f} s of video, less than the half chunk "
                f"({spec.chunk_seconds / 2:g} s) needed for one chunk; use a longer clip or a "
                f"shorter chunk_seconds."
            )
    finally:
        container.close()


class _FrameSampler:
    """Resample decoded frames to a constant fps, converting only the frames used.

    Output frame i shows time t_i = i / fps, and is the latest decoded frame whose
    timestamp is <= t_i. Timestamps come from pts * time_base, so variable frame
    rate works; a frame without pts is placed one frame period after the previous
    one, and a timestamp that goes backwards is clamped (broken muxers do this).
    """

    def __init__(self, spec: ChunkSpec, stream) -> None:
        self.fps = spec.fps
        self.size = spec.frame_size
        rate = stream.average_rate or stream.guessed_rate
        self.period = 1.0 / float(rate) if rate else 1.0 / spec.fps  # when pts is missing
        sar = stream.codec_context.sample_aspect_ratio
        self.sar = float(sar) if sar else 1.0  # non-square pixels: crop in display shape
        self.origin: float | None = None  # absolute time of the first frame = clip time 0
        self.last_time = 0.0  # clip time of the latest decoded frame
        self.decoded = 0  # decoded frames
        self.total_frames = 0  # output frames
        self._last = None  # latest decoded av.VideoFrame
        self._last_rgb: np.ndarray | None = None  # its conversion, once needed
        self._step = 0.0  # gap between the last two decoded frames

    def push(self, frame) -> list[np.ndarray]:
        """Take one decoded frame; return the output frames that are now final."""
        t = frame.time
        if self.origin is None:
            self.origin = t if t is not None else 0.0
        if t is None:
            t = self.last_time + self.period if self._last is not None else 0.0
        else:
            t -= self.origin
        if self._last is not None:
            t = max(t, self.last_time)
        # Every output time before this frame shows the previous frame.
        out = self._emit_until(t) if self._last is not None else []
        self._step = t - self.last_time if self._last is not None else 0.0
        self._last, self._last_rgb, self.last_time = frame, None, t
        self.decoded += 1
        return out

    def finish(self) -> list[np.ndarray]:
        """The output frames after the last decoded one, up to where the video ends."""
        if self._last is None:
            return []
        duration = None
        if self._last.duration and self._last.time_base:
            duration = float(self._last.duration * self._last.time_base)
        end = self.last_time + (duration or self._step or self.period)
        return self._emit_until(end)

    def _emit_until(self, t: float) -> list[np.ndarray]:
        out = []
        while self.total_frames / self.fps < t - _EPS:
            if self._last_rgb is None:
                self._last_rgb = _to_rgb(self._last, self.size, self.sar)
            out.append(self._last_rgb)  # a repeated frame is the same array: stacked later
            self.total_frames += 1
        return out


def _to_rgb(frame, size: int, sar: float = 1.0) -> np.ndarray:
    """A decoded frame as (size, size, 3) uint8 RGB: center-cropped to square, resized.

    swscale scales so the short side becomes `size` (and converts to RGB) in one
    pass; cropping the long side afterwards equals crop-then-resize but touches
    fewer pixels. The container's display rotation (phone videos) is applied.
    """
    w, h = frame.width, frame.height
    scale = size / min(w * sar, h)
    sw, sh = max(size, round(w * sar * scale)), max(size, round(h * scale))
    # AREA averages the source pixels under each output pixel: no aliasing on downscale.
    rgb = frame.to_ndarray(width=sw, height=sh, format="rgb24", interpolation="AREA")
    top, left = (sh - size) // 2, (sw - size) // 2
    rgb = rgb[top : top + size, left : left + size]
    quarter_turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise, like np.rot90
    if quarter_turns:
        rgb = np.rot90(rgb, quarter_turns)
    return np.ascontiguousarray(rgb)


class _AudioTrack:
    """Decoded audio, resampled to mono float32, buffered until its chunk is taken.

    Samples are laid end to end from the first frame's timestamp (resampler output
    is continuous); only a timestamp jump past AUDIO_GAP_SECONDS inserts silence.
    """

    def __init__(self, sample_rate: int) -> None:
        import av

        self.rate = sample_rate
        # The aresample filter: any format/layout/rate in, packed float mono out.
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self.start: float | None = None  # absolute time of sample 0
        self._parts: list[np.ndarray] = []
        self._first = 0  # index of the first buffered sample (earlier ones were taken)
        self._count = 0  # index just past the last buffered sample
        self._next_in: float | None = None  # absolute time where the input should continue

    def push(self, frame) -> None:
        t = frame.time
        if t is not None:
            if self.start is None:  # (minus any untimed samples before this frame)
                self.start = t - self._count / self.rate
            elif self._next_in is not None and t - self._next_in > AUDIO_GAP_SECONDS:
                self._append(np.zeros(round((t - self._next_in) * self.rate), np.float32))
            self._next_in = t
        if self._next_in is not None:
            self._next_in += frame.samples / frame.sample_rate
        for out in self.resampler.resample(frame):
            self._append(out.to_ndarray().reshape(-1))

    def finish(self) -> None:
        for out in self.resampler.resample(None):  # flush the resampler's delay line
            self._append(out.to_ndarray().reshape(-1))

    def _append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._parts.append(samples.astype(np.float32, copy=False))
            self._count += len(samples)

    def _offset(self, origin: float | None) -> int:
        """Clip sample index of buffer sample 0 (negative if audio starts before video)."""
        if self.start is None or origin is None:
            return 0  # no timestamps: assume audio and video start together
        return round((self.start - origin) * self.rate)

    def end_seconds(self, origin: float | None) -> float:
        """Clip time up to which audio is buffered."""
        return (self._count + self._offset(origin)) / self.rate

    def take(self, lo: int, hi: int, origin: float | None) -> np.ndarray:
        """Clip samples [lo, hi) as (hi - lo,) float32, silence where there are none;
        forgets everything before hi."""
        off = self._offset(origin)
        out = np.zeros(hi - lo, np.float32)
        buf = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
        # Buffer index j holds clip sample j + off; buf[0] is buffer index self._first.
        a = max(lo - off, self._first)
        b = min(hi - off, self._count)
        if b > a:
            out[a + off - lo : b + off - lo] = buf[a - self._first : b - self._first]
        keep_from = min(max(hi - off, self._first), self._count)
        rest = buf[keep_from - self._first :]
        self._parts = [rest] if len(rest) else []
        self._first = keep_from
        return out
