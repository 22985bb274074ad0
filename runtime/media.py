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

Speed: only the frames the sampler shows are converted to RGB; FFmpeg decodes on
its own threads; `skip_nonref=True` also skips decoding frames nothing shows or
references; `prefetch` decodes on a background thread, overlapped with the model.

This module imports numpy and PyAV only (never torch); PyAV is imported lazily so
`import mirasol_edge.runtime` works without it.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from mirasol_edge.runtime.chunking import ChunkSpec, chunk_clip, num_chunks

if TYPE_CHECKING:  # pragma: no cover
    import av

__all__ = ["MediaError", "MediaWarning", "iter_chunks", "read_clip", "prefetch", "probe"]

# If the video runs this many seconds ahead of the audio, assume the audio track
# has ended (or stalled) and emit chunks with silence instead of buffering video
# without bound. Samples that arrive later for already-emitted time are dropped.
MAX_AV_SKEW_SECONDS = 10.0
# An audio timestamp this far past where the previous samples ended is a real gap
# (dropped packets in a live stream): fill it with silence to keep audio aligned.
AUDIO_GAP_SECONDS = 0.1
# Decoded audio is resampled in blocks of about this much input: the resampler's cost is
# mostly per call (a 1024-sample AAC frame per call was 2 of 5 ms per 1 s chunk).
RESAMPLE_BLOCK_SECONDS = 0.25
_EPS = 1e-6  # seconds; absorbs float error when comparing timestamps
# How long closing a prefetched iterator waits for its worker: a file stops within one
# chunk's decode, but a live source can block a read for as long as its sender stalls.
PREFETCH_STOP_SECONDS = 5.0

T = TypeVar("T")


class MediaError(ValueError):
    """A source that cannot be decoded: missing, unreadable, corrupt, or without video."""


class MediaWarning(UserWarning):
    """A source that decodes, but not fully as expected (no audio track, skipped packets)."""


def iter_chunks(
    source: str | os.PathLike,
    spec: ChunkSpec,
    *,
    skip_nonref: bool = False,
    decoder_threads: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode `source` chunk by chunk.

    Yields (frames (F, H, W, 3) uint8 RGB, waveform (S,) float32 mono), with
    F = spec.frames_per_chunk, H = W = spec.frame_size, S = spec.samples_per_chunk.

    skip_nonref: do not decode non-reference frames (most B-frames) that no sampled
    instant shows; a third to a half fewer frames decoded on typical H.264. Exact when
    the container's packet durations are right (constant frame rate); where they are
    not (variable frame rate), a sampled instant may show a nearby reference frame
    instead. Off by default, since training decodes without it.
    decoder_threads: FFmpeg's decoding threads; 0 lets it pick (about one per core),
    1 decodes on the calling thread only (for many streams decoded in parallel).

    The source is opened here, so a missing or unreadable file raises MediaError at
    the call, not at the first `next()`. A source without an audio track gives
    silence and a MediaWarning. Raises MediaError if the source has no video or too
    little of it for one chunk.
    """
    if decoder_threads < 0:
        raise ValueError(f"decoder_threads must be 0 (FFmpeg picks) or a positive count, got {decoder_threads}.")
    name = _name(source)
    container = _open(source)
    try:
        video, audio = _pick_streams(container, name, decoder_threads)
    except BaseException:
        container.close()
        raise
    if audio is None:
        warnings.warn(f"{name} has no audio track; using silence for its audio.", MediaWarning, stacklevel=2)
    return _generate_chunks(container, video, audio, spec, name, skip_nonref)


def read_clip(
    source: str | os.PathLike,
    spec: ChunkSpec,
    *,
    skip_nonref: bool = False,
    decoder_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole (short) source at once.

    Returns frames (K, F, H, W, 3) uint8 and waveform (K, S) float32, K chunks,
    stacked from `iter_chunks` (which documents the keyword options). For long files
    or live sources use `iter_chunks`.
    """
    # iter_chunks raises MediaError rather than return K = 0
    chunks = list(iter_chunks(source, spec, skip_nonref=skip_nonref, decoder_threads=decoder_threads))
    return np.stack([f for f, _ in chunks]), np.stack([w for _, w in chunks])


def prefetch(chunks: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run `chunks` on a background thread, up to `depth` items ahead of the consumer.

    Yields the same items in the same order, e.g. `prefetch(iter_chunks(path, spec))`
    gives the (frames, waveform) chunks of `iter_chunks`. FFmpeg decodes without the
    GIL, so decoding overlaps the model's work on the consumer's thread.

    An exception raised by `chunks` (MediaError, ...) is raised here at the same point
    of the sequence. This module's MediaWarnings raised on the worker are issued again
    here, in order, just before the item they came with; other code's warnings on the
    worker go out from the worker thread. Closing or dropping the returned iterator
    (a `break`) stops the worker and closes `chunks` (so its file) before it returns.
    The worker starts at the first `next()`.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1 chunk, got {depth}.")
    return _prefetched(chunks, depth)


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


def _pick_streams(container, name: str, decoder_threads: int = 0) -> tuple:
    video, audio = _find_streams(container)
    if video is None:
        raise MediaError(
            f"{name} has no video stream (audio-only or not a video); the model needs video, "
            f"so pass a video file."
        )
    # PyAV's default is slice threads, which x264 files (one slice per frame) cannot use.
    video.thread_type = "AUTO"
    video.codec_context.thread_count = decoder_threads
    return video, audio


# --- decoding ------------------------------------------------------------------------


def _decoded_frames(container, streams: list, name: str, before_decode: Callable | None = None) -> Iterator:
    """Yield decoded frames of `streams` in demux order, including decoder flushes.

    A packet that fails to decode is skipped (live and damaged streams have them);
    a read error ends the stream with a warning, keeping what was decoded so far.
    Whether anything usable came out is the caller's check. `before_decode(packet)`
    sees each packet just before it is decoded.
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
            _warn(
                f"stopped reading {name} at a read error ({_reason(e)}); using what was decoded before it.",
                stacklevel=3,
            )
            for stream in streams:  # demux did not send its flush packets: drain by hand
                try:
                    yield from stream.codec_context.decode(None)
                except av.FFmpegError:
                    pass
            break
        if before_decode is not None:
            before_decode(packet)
        try:
            frames = packet.decode()  # an empty packet flushes the decoder at the end
        except av.FFmpegError:
            skipped += 1
            continue
        yield from frames
    if skipped:
        _warn(f"skipped {skipped} undecodable packet(s) in {name}.", stacklevel=3)


def _warn(message: str, stacklevel: int) -> None:
    """warnings.warn a MediaWarning, or record it when on a prefetch worker (see _fill)."""
    caught = getattr(_on_worker, "caught", None)
    if caught is not None:
        caught.append((message, MediaWarning))
    else:
        warnings.warn(message, MediaWarning, stacklevel=stacklevel + 1)


def _generate_chunks(container, video, audio, spec: ChunkSpec, name: str, skip_nonref: bool = False):
    import av

    f_per, s_per = spec.frames_per_chunk, spec.samples_per_chunk
    sampler = _FrameSampler(spec, video)
    skipper = _UnshownFrameSkipper(sampler, video) if skip_nonref else None
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
        for frame in _decoded_frames(container, streams, name, skipper):
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
        pending.extend(sampler.finish(skipper.end if skipper is not None else None))
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
        from av.video.reformatter import VideoReformatter

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
        # One swscale context for every frame: building one per frame costs more than
        # converting (about 0.6 of 1.1 ms per 720p frame).
        self._reformatter = VideoReformatter()

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

    def finish(self, video_end: float | None = None) -> list[np.ndarray]:
        """The output frames after the last decoded one, up to where the video ends.

        video_end: absolute time the video's packets end, when frames were skipped
        (a skipped last frame must not shorten the clip).
        """
        if self._last is None:
            return []
        duration = None
        if self._last.duration and self._last.time_base:
            duration = float(self._last.duration * self._last.time_base)
        end = self.last_time + (duration or self._step or self.period)
        if video_end is not None:
            end = max(end, video_end - self.origin)
        return self._emit_until(end)

    def _emit_until(self, t: float) -> list[np.ndarray]:
        out = []
        while self.total_frames / self.fps < t - _EPS:
            if self._last_rgb is None:
                self._last_rgb = _to_rgb(self._last, self.size, self.sar, self._reformatter)
            out.append(self._last_rgb)  # a repeated frame is the same array: stacked later
            self.total_frames += 1
        return out


class _UnshownFrameSkipper:
    """Before each video packet, tell the decoder whether it may skip a non-reference frame.

    A frame at clip time t lasting d is shown by the output instants i / fps in [t, t + d);
    if none falls there and no other frame references it, decoding it is wasted work. The
    decoder knows which frames are references (skip_frame NONREF drops only the others);
    this knows which are shown. Until the first frame is out (clip time 0 is unknown)
    everything is decoded. Also notes where the video's packets end (`end`), which a
    skipped last frame would otherwise hide from the sampler.
    """

    def __init__(self, sampler: _FrameSampler, stream) -> None:
        self.sampler = sampler
        self.index = stream.index
        self.time_base = stream.time_base
        self.codec = stream.codec_context
        self.skipping = False  # the codec's current skip_frame is NONREF
        self.end: float | None = None  # absolute time just past the latest video packet

    def __call__(self, packet) -> None:
        if packet.stream_index != self.index:
            return
        timed = packet.pts is not None and bool(packet.duration) and self.time_base is not None
        if timed:
            start = float(packet.pts * self.time_base)
            stop = start + float(packet.duration * self.time_base)
            self.end = stop if self.end is None else max(self.end, stop)
        origin = self.sampler.origin
        skip = timed and origin is not None and not self._shown(start - origin, stop - origin)
        if skip != self.skipping:  # the setting is copied into each packet's decode thread
            self.codec.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip

    def _shown(self, start: float, stop: float) -> bool:
        """Whether an output instant falls in [start, stop) clip seconds, as _emit_until rounds."""
        first = math.ceil((start - _EPS) * self.sampler.fps)
        return first < (stop - _EPS) * self.sampler.fps


def _to_rgb(frame, size: int, sar: float = 1.0, reformatter=None) -> np.ndarray:
    """A decoded frame as (size, size, 3) uint8 RGB: center-cropped to square, resized.

    swscale scales so the short side becomes `size` (and converts to RGB) in one
    pass; cropping the long side afterwards equals crop-then-resize but touches
    fewer pixels. The container's display rotation (phone videos) is applied.
    reformatter: an av VideoReformatter to reuse (a fresh one per call otherwise).
    """
    from av.video.reformatter import VideoReformatter

    w, h = frame.width, frame.height
    scale = size / min(w * sar, h)
    sw, sh = max(size, round(w * sar * scale)), max(size, round(h * scale))
    if reformatter is None:
        reformatter = VideoReformatter()
    # AREA averages the source pixels under each output pixel: no aliasing on downscale.
    # One swscale thread: the output is tiny, and the decoder's threads have the cores.
    small = reformatter.reformat(frame, width=sw, height=sh, format="rgb24", interpolation="AREA", threads=1)
    rgb = small.to_ndarray()
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
    Frames wait in `_pending` and go through the resampler together, before anything
    reads the buffer; the resampler streams, so its output does not depend on how
    its input is cut.
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
        self._pending: list[np.ndarray] = []  # decoded frames not yet resampled, as arrays
        self._pending_samples = 0
        self._pending_kind: tuple | None = None  # their (format, layout, rate)

    def push(self, frame) -> None:
        t = frame.time
        if t is not None:
            if self.start is None:  # (minus any untimed samples before this frame)
                self._resample_pending()
                self.start = t - self._count / self.rate
            elif self._next_in is not None and t - self._next_in > AUDIO_GAP_SECONDS:
                self._resample_pending()
                self._append(np.zeros(round((t - self._next_in) * self.rate), np.float32))
            self._next_in = t
        if self._next_in is not None:
            self._next_in += frame.samples / frame.sample_rate
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if kind != self._pending_kind:
            self._resample_pending()
            self._pending_kind = kind
        self._pending.append(frame.to_ndarray())  # (channels, samples) planar, (1, samples * channels) packed
        self._pending_samples += frame.samples
        if self._pending_samples >= RESAMPLE_BLOCK_SECONDS * frame.sample_rate:
            self._resample_pending()

    def finish(self) -> None:
        self._resample_pending()
        for out in self.resampler.resample(None):  # flush the resampler's delay line
            self._append(out.to_ndarray().reshape(-1))

    def _resample_pending(self) -> None:
        import av

        if not self._pending:
            return
        fmt, layout, rate = self._pending_kind
        block = av.AudioFrame.from_ndarray(np.concatenate(self._pending, axis=1), format=fmt, layout=layout)
        block.sample_rate = rate
        self._pending, self._pending_samples = [], 0
        for out in self.resampler.resample(block):
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
        self._resample_pending()
        return (self._count + self._offset(origin)) / self.rate

    def take(self, lo: int, hi: int, origin: float | None) -> np.ndarray:
        """Clip samples [lo, hi) as (hi - lo,) float32, silence where there are none;
        forgets everything before hi."""
        self._resample_pending()
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


# --- prefetching ---------------------------------------------------------------------

_on_worker = threading.local()  # .caught: a prefetch worker's MediaWarnings, for its consumer
_ITEM, _DONE, _ERROR = "item", "done", "error"


def _prefetched(chunks: Iterator[T], depth: int) -> Iterator[T]:
    slots: queue.Queue = queue.Queue(maxsize=depth)  # bounded: the worker waits, never spins
    stop = threading.Event()
    # The worker must not reference this generator, so dropping it runs the finally below.
    worker = threading.Thread(target=_fill, args=(chunks, slots, stop), name="media-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value, caught = slots.get()
            for message, category in caught:
                warnings.warn(message, category, stacklevel=2)
            if kind == _DONE:
                return
            if kind == _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        try:  # free a slot for a worker blocked on a full queue; it then sees `stop`
            while True:
                slots.get_nowait()
        except queue.Empty:
            pass
        worker.join(PREFETCH_STOP_SECONDS)


def _fill(chunks: Iterator, slots: queue.Queue, stop: threading.Event) -> None:
    """The prefetch worker: put (kind, item or exception, MediaWarnings) until done or stopped.

    warnings.catch_warnings would swap the process-wide warning state under the
    consumer's feet (it is not thread-safe), so this module's warnings are recorded
    through a thread-local list instead.
    """
    _on_worker.caught = caught = []
    try:
        while not stop.is_set():
            try:
                item = next(chunks)
            except StopIteration:
                slots.put((_DONE, None, _take_all(caught)))
                return
            except BaseException as e:  # the consumer raises it
                slots.put((_ERROR, e, _take_all(caught)))
                return
            slots.put((_ITEM, item, _take_all(caught)))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # a generator: its finally closes the container
            close()
        _on_worker.caught = None


def _take_all(caught: list) -> list:
    taken = caught[:]
    caught.clear()
    return taken
