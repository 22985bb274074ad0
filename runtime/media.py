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

Timestamps: a frame is placed by its timestamp. A forward step between video frames of
up to MAX_TIMESTAMP_JUMP_SECONDS is real time (the previous frame shows through the gap);
a step back of up to MAX_BACKWARD_STEP_SECONDS is a muxer's reordering error (clamped to
the previous frame's time). Any larger step, or a forward jump past the container's
declared duration (plus DURATION_SLACK_SECONDS), is a discontinuity, as FFmpeg treats
timestamp resets: later frames are shifted to continue one frame period on, and nothing
fills the jump. Audio gaps up to MAX_TIMESTAMP_JUMP_SECONDS are filled with silence,
larger ones dropped. The first discontinuity gives one MediaWarning naming the file, the
jump and what was done. So a clip lasts at most MAX_TIMESTAMP_JUMP_SECONDS per decoded
frame, and no work or memory grows with a timestamp's value.

Completeness: a packet that fails to decode is skipped and a read error ends decoding,
keeping what came before it. `iter_chunks` returns a ChunkIterator whose `report`, a
DecodeReport, says once iteration ends whether the source decoded completely, how many
chunks came out, and why not. It is incomplete, with one MediaWarning naming the file
and the reason, when FFmpeg gave an error, a packet was skipped, or the decoded streams
end more than DURATION_SLACK_SECONDS before the duration the container declares (FFmpeg
reads a truncated mkv/webm to its cut without an error).

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
import sys
from types import FrameType
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from mirasol_edge.runtime.chunking import ChunkSpec, chunk_clip, num_chunks

if TYPE_CHECKING:  # pragma: no cover
    import av

__all__ = [
    "ChunkIterator",
    "DecodeReport",
    "MediaError",
    "MediaWarning",
    "PrefetchIterator",
    "iter_chunks",
    "prefetch",
    "probe",
    "read_clip",
]

# If the video runs this many seconds ahead of the audio, assume the audio track
# has ended (or stalled) and emit chunks with silence instead of buffering video
# without bound. Samples that arrive later for already-emitted time are dropped.
MAX_AV_SKEW_SECONDS = 10.0
# An audio timestamp this far past where the previous samples ended is a real gap
# (dropped packets in a live stream): fill it with silence to keep audio aligned.
AUDIO_GAP_SECONDS = 0.1
# The longest timestamp step taken as real time (a live stream's stall, a frozen screen
# capture); a longer one is a discontinuity. FFmpeg's -dts_delta_threshold is also 10 s.
MAX_TIMESTAMP_JUMP_SECONDS = 10.0
# A muxer's reordering error moves a frame back a frame or two; a video timestamp that
# goes back further is a reset (concatenated MPEG-TS), which clamping would collapse.
MAX_BACKWARD_STEP_SECONDS = 0.5
# How far decoded streams may end short of, or a jump run past, the container's declared
# duration: above its rounding and an audio encoder's padding (tens of ms), below half a chunk.
DURATION_SLACK_SECONDS = 0.5
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


_MAX_PLANES = 8  # FFmpeg's AV_NUM_DATA_POINTERS: planes past it live in extended_data, which PyAV misreads
# Errors that damaged or hostile media makes PyAV/FFmpeg (or numpy on its frames) raise;
# with av.FFmpegError they become MediaError. Programming errors (AssertionError,
# AttributeError, TypeError, NameError) are not in it and escape as they are.
_DATA_ERRORS = (ValueError, ArithmeticError, LookupError, OSError, EOFError)


@dataclass(frozen=True)
class DecodeReport:
    """How decoding one source went; final once its ChunkIterator is done."""

    complete: bool  # every packet of the source decoded, read to its declared end
    chunks: int  # chunks that came out
    reason: str | None  # why not complete, FFmpeg's message where it gave one; None when complete


class ChunkIterator(Iterator[tuple[np.ndarray, np.ndarray]]):
    """The chunks `iter_chunks` yields, with a `report` once they are done.

    `report` is None while chunks are coming and a DecodeReport once iteration ended:
    after the last chunk, a raised MediaError, or `close()`.
    """

    def __init__(self, chunks: Generator, outcome: "_Outcome") -> None:
        self._chunks = chunks  # the decoding generator; it writes `outcome` as it ends
        self._outcome = outcome

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return next(self._chunks)

    def close(self) -> None:
        """Stop decoding and close the source."""
        self._chunks.close()
        if self._outcome.report is None:  # closed before the first next(): the body never ran
            self._outcome.report = DecodeReport(False, 0, "closed before decoding began")

    @property
    def report(self) -> DecodeReport | None:
        return self._outcome.report

    @property
    def gi_frame(self):
        """As on the generator this class replaced: None once decoding has finished."""
        return self._chunks.gi_frame


class _Outcome:
    """Where the decoding generator leaves its DecodeReport; shared with its ChunkIterator
    so the generator holds no reference back to the iterator (dropping it closes the file)."""

    report: DecodeReport | None = None


def iter_chunks(
    source: str | os.PathLike,
    spec: ChunkSpec,
    *,
    skip_nonref: bool = False,
    decoder_threads: int = 0,
) -> ChunkIterator:
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
    little of it for one chunk; any other failure to decode is a MediaError too.

    Returns a ChunkIterator: once iteration ends, its `report` (a DecodeReport) says
    whether the source decoded completely, how many chunks came out, and why not
    (the module docstring has the timestamp and completeness policy).
    """
    import av

    if decoder_threads < 0:
        raise ValueError(f"decoder_threads must be 0 (FFmpeg picks) or a positive count, got {decoder_threads}.")
    name = _name(source)
    container = _open(source)
    try:
        video, audio = _pick_streams(container, name, decoder_threads)
    except MediaError:
        container.close()
        raise
    except (av.FFmpegError, *_DATA_ERRORS) as e:
        container.close()
        raise _decode_error(name, e) from None
    except BaseException:
        container.close()
        raise
    if audio is None:
        _warn(f"{name} has no audio track; using silence for its audio.")
    outcome = _Outcome()
    return ChunkIterator(_generate_chunks(container, video, audio, spec, name, skip_nonref, outcome), outcome)


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
    or live sources use `iter_chunks`. A source that does not decode completely gives
    what did decode, with a MediaWarning; `iter_chunks(...).report` tells it in code.
    """
    # iter_chunks raises MediaError rather than return K = 0
    chunks = list(iter_chunks(source, spec, skip_nonref=skip_nonref, decoder_threads=decoder_threads))
    return np.stack([f for f, _ in chunks]), np.stack([w for _, w in chunks])


def prefetch(chunks: Iterator[T], depth: int = 2) -> "PrefetchIterator[T]":
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

    The returned PrefetchIterator's `report` is `chunks.report` (the DecodeReport of
    `iter_chunks`) once it is done: exhausted, raised, or closed (after a `break`, call
    `close()` and then read it); None before that.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1 chunk, got {depth}.")
    return PrefetchIterator(chunks, depth)


def probe(source: str | os.PathLike) -> dict:
    """What a source holds, without decoding it.

    Returns {"duration": seconds or None, "has_video", "has_audio", "video_codec",
    "audio_codec", "width", "height", "fps", "sample_rate", "channels", "format"};
    the stream fields are None when the stream is missing or does not say.
    """
    import av

    name = _name(source)
    with _open(source) as container:
        try:
            return _describe(container, name)
        except (av.FFmpegError, *_DATA_ERRORS) as e:
            raise MediaError(
                f"cannot describe {name} ({_reason(e)}); the file may be corrupt: check it plays in a "
                f"media player, or re-encode it."
            ) from None


def _describe(container, name: str) -> dict:
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
    except (av.FFmpegError, *_DATA_ERRORS) as e:
        # InvalidDataError for random bytes or a truncated mp4 (no 'moov' atom), and
        # whatever a bad URL or unreadable path gives.
        raise MediaError(
            f"cannot read {name} as audio/video ({_reason(e)}); the file may be truncated, "
            f"corrupt or not a media file: check it plays in a media player, or re-encode it."
        ) from None


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _decode_error(name: str, e: BaseException) -> MediaError:
    """A PyAV/FFmpeg error met while decoding, as the one-sentence MediaError users see."""
    return MediaError(
        f"cannot decode {name} ({_reason(e)}); the file may be damaged or use an unsupported "
        f"feature: check it plays in a media player, or re-encode it."
    )


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


class _Faults:
    """What went wrong reading one source, for its warning and its DecodeReport."""

    def __init__(self) -> None:
        self.stopped: str | None = None  # why reading ended before the source did
        self.skipped = 0  # packets that failed to decode
        self.skip_reason: str | None = None  # FFmpeg's message for the first of them

    def reasons(self) -> list[str]:
        out = [self.stopped] if self.stopped else []
        if self.skipped:
            out.append(f"skipped {self.skipped} undecodable packet(s) (FFmpeg: {self.skip_reason})")
        return out


def _decoded_frames(container, streams: list, faults: _Faults, before_decode: Callable | None = None) -> Iterator:
    """Yield decoded frames of `streams` in demux order, including decoder flushes.

    A packet that fails to decode is skipped (live and damaged streams have them);
    a read error ends the stream, keeping what was decoded so far; both go into
    `faults`. Whether anything usable came out is the caller's check.
    `before_decode(packet)` sees each packet just before it is decoded.
    """
    import av

    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:  # demux ended with its flush packets: decoders are drained
            break
        except av.FFmpegError as e:
            faults.stopped = f"FFmpeg stopped reading it ({_reason(e)})"
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
        except av.FFmpegError as e:
            faults.skipped += 1
            faults.skip_reason = faults.skip_reason or _reason(e)
            continue
        for frame in frames:
            if isinstance(frame, av.AudioFrame) and frame.format.is_planar and len(frame.layout.channels) > _MAX_PLANES:
                # PyAV reads planes past the frame's 8 data pointers (a segfault): drop it like a bad packet
                faults.skipped += 1
                faults.skip_reason = faults.skip_reason or (
                    f"an audio frame with {len(frame.layout.channels)} planar channels, more than {_MAX_PLANES}")
                continue
            yield frame


def _warn(message: str, category: type[Warning] = MediaWarning) -> None:
    """Issue a warning at the caller's first frame outside this module, or record it
    when on a prefetch worker (see _fill).

    Chunks come through nested generators and iterator classes, so a fixed stacklevel
    would point into this file; walking out of it finds the user's line.
    """
    caught = getattr(_on_worker, "caught", None)
    if caught is not None:
        caught.append((message, category))
        return
    level = 1
    frame: FrameType | None = sys._getframe(0)
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


class _JumpNotice:
    """Called at each timestamp discontinuity of one source; warns at the first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def __call__(self, stream: str, jump: float, at: float, why: str) -> None:
        self.count += 1
        if self.count == 1:
            _warn(
                f"{self.name} has {stream} timestamps that jump {jump:+.1f} s at {at:.1f} s ({why}); taken "
                f"as a discontinuity, the {stream} continues straight on with nothing filling the jump, "
                f"as it will across any later one."
            )


def _declared_span(container, streams: list) -> tuple[float, float] | None:
    """(start, end) absolute seconds the container declares for `streams`, or None if it does not say.

    Streams' own durations where they have them (mp4, avi), else the container's, which
    covers every stream (mkv, webm).
    """
    spans = []
    for s in streams:
        if s.duration and s.duration > 0 and s.time_base:
            start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
            spans.append((start, start + float(s.duration * s.time_base)))
    if spans:
        return min(a for a, _ in spans), max(b for _, b in spans)
    if container.duration and container.duration > 0:  # in AV_TIME_BASE (microseconds)
        start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        return start, start + container.duration / 1_000_000
    return None


def _shortfall(declared: tuple[float, float] | None, ends: list[float | None]) -> list[str]:
    """[why the file looks truncated] if the decoded streams, ending at the latest of `ends`
    (absolute seconds, None where unknown), stop short of the `declared` (start, end); else []."""
    known = [e for e in ends if e is not None]
    if declared is None or not known or declared[1] - max(known) <= DURATION_SLACK_SECONDS:
        return []
    start, end = declared
    return [
        f"its streams end at {max(known) - start:.1f} s of the {end - start:.1f} s its container declares, "
        f"so the file looks truncated"
    ]


def _generate_chunks(container, video, audio, spec: ChunkSpec, name: str, skip_nonref: bool, outcome: _Outcome):
    import av

    f_per, s_per = spec.frames_per_chunk, spec.samples_per_chunk
    streams = [video] + ([audio] if audio is not None else [])
    faults = _Faults()
    jumps = _JumpNotice(name)
    k = 0  # index of the next chunk to yield
    report = None
    try:
        declared = _declared_span(container, streams)
        sampler = _FrameSampler(spec, video, declared[1] if declared else None, jumps)
        skipper = _UnshownFrameSkipper(sampler, video) if skip_nonref else None
        sound = _AudioTrack(spec.sample_rate, jumps) if audio is not None else None
        pending: list[np.ndarray] = []  # resampled frames of the chunks not yet yielded

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
            for frame in _decoded_frames(container, streams, faults, skipper):
                if isinstance(frame, av.VideoFrame):
                    pending.extend(sampler.push(frame))
                else:
                    assert sound is not None  # audio frames come only when there is an audio stream
                    sound.push(frame)
                while len(pending) >= f_per and audio_ready():
                    chunk = next_chunk(pending[:f_per])
                    del pending[:f_per]
                    k += 1  # counted before the yield, where the caller may stop
                    yield chunk
        except (av.FFmpegError, *_DATA_ERRORS) as e:  # a frame PyAV cannot convert or resample
            faults.stopped = f"decoding stopped on an error ({_reason(e)})"

        ends = [sampler.stamped_end, sound.stamped_end if sound else None, skipper.end if skipper else None]
        reason = "; ".join(faults.reasons() + _shortfall(declared, ends)) or None
        if sampler.decoded == 0:
            why = f" ({reason})" if reason else ""
            raise MediaError(
                f"no video frame could be decoded from {name}{why}; the file may be truncated or corrupt, "
                f"or its codec unsupported: check it plays in a media player, or re-encode it."
            )
        if reason is not None:
            _warn(
                f"{name} did not decode completely ({reason}); its chunks hold what could be decoded, so "
                f"re-download or re-encode the file to get all of it."
            )
        pending.extend(sampler.finish(skipper.end if skipper is not None else None))
        if sound is not None:
            sound.finish()
        while len(pending) >= f_per:
            chunk = next_chunk(pending[:f_per])
            del pending[:f_per]
            k += 1
            yield chunk
        # The trailing partial chunk: kept (and padded) or dropped by chunking.py's rule.
        if pending and num_chunks(len(pending), spec) == 1:
            chunk = next_chunk(pending)
            k += 1
            yield chunk
        if k == 0:
            seconds = sampler.total_frames / spec.fps
            raise MediaError(
                f"{name} holds only {seconds:.2f} s of video, less than the half chunk "
                f"({spec.chunk_seconds / 2:g} s) needed for one chunk; use a longer clip or a "
                f"shorter chunk_seconds."
            )
        report = DecodeReport(reason is None, k, reason)
    except GeneratorExit:
        report = DecodeReport(False, k, f"the caller stopped reading after {k} chunk(s)")
        raise
    except MediaError as e:
        report = DecodeReport(False, k, str(e))
        raise
    except (av.FFmpegError, *_DATA_ERRORS) as e:
        error = _decode_error(name, e)
        report = DecodeReport(False, k, str(error))
        raise error from None
    finally:
        container.close()
        outcome.report = report or DecodeReport(False, k, "decoding stopped on an internal error")


class _FrameSampler:
    """Resample decoded frames to a constant fps, converting only the frames used.

    Output frame i shows time t_i = i / fps, and is the latest decoded frame whose
    timestamp is <= t_i. Timestamps come from pts * time_base, so variable frame
    rate works; a frame without pts is placed one frame period after the previous
    one. Steps between timestamps follow the module's policy: a small backward one is
    clamped, a large one either way is a discontinuity (`_across_jump`).
    """

    def __init__(self, spec: ChunkSpec, stream, declared_end: float | None = None, on_jump=None) -> None:
        from av.video.reformatter import VideoReformatter

        self.fps = spec.fps
        self.size = spec.frame_size
        rate = stream.average_rate or stream.guessed_rate
        period = 1.0 / float(rate) if rate and rate > 0 else 1.0 / spec.fps  # when pts is missing
        self.period = min(period, MAX_TIMESTAMP_JUMP_SECONDS)  # a header's rate can be anything
        sar = stream.codec_context.sample_aspect_ratio
        self.sar = float(sar) if sar else 1.0  # non-square pixels: crop in display shape
        self.origin: float | None = None  # absolute time of the first frame = clip time 0
        self.shift = 0.0  # seconds taken out of later timestamps at discontinuities
        self.last_time = 0.0  # clip time of the latest decoded frame
        self.stamped_end: float | None = None  # absolute time the latest-stamped frame ends
        self.decoded = 0  # decoded frames
        self.total_frames = 0  # output frames
        self._declared_end = declared_end  # absolute, as the container says, or None
        self._on_jump = on_jump or (lambda *args: None)
        self._last = None  # latest decoded av.VideoFrame
        self._last_stamp: float | None = None  # its absolute timestamp
        self._last_rgb: np.ndarray | None = None  # its conversion, once needed
        self._step = 0.0  # gap between the last two decoded frames
        # One swscale context for every frame: building one per frame costs more than
        # converting (about 0.6 of 1.1 ms per 720p frame).
        self._reformatter = VideoReformatter()

    def push(self, frame) -> list[np.ndarray]:
        """Take one decoded frame; return the output frames that are now final."""
        stamp = frame.time
        if self.origin is None:
            self.origin = stamp if stamp is not None else 0.0
        if stamp is None:
            t = self.last_time + self.period if self._last is not None else 0.0
        else:
            seconds = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else self.period
            end = stamp + seconds
            self.stamped_end = end if self.stamped_end is None else max(self.stamped_end, end)
            t = stamp - self.origin - self.shift
            if self._last is not None:
                t = self._across_jump(t)
        if self._last is not None:
            t = max(t, self.last_time)
        # Every output time before this frame shows the previous frame.
        out: list[np.ndarray] = self._emit_until(t) if self._last is not None else []
        self._step = t - self.last_time if self._last is not None else 0.0
        self._last, self._last_rgb, self.last_time = frame, None, t
        self._last_stamp = stamp if stamp is not None else self._last_stamp
        self.decoded += 1
        return out

    def _across_jump(self, t: float) -> float:
        """Clip time t, or where the video continues if the step to t is a discontinuity."""
        step = t - self.last_time
        assert self.origin is not None  # set by the first push
        declared = self._declared_end - self.origin if self._declared_end is not None else None
        if step > MAX_TIMESTAMP_JUMP_SECONDS:
            why = f"more than the {MAX_TIMESTAMP_JUMP_SECONDS:g} s a gap may last"
        elif step < -MAX_BACKWARD_STEP_SECONDS:
            why = f"back more than the {MAX_BACKWARD_STEP_SECONDS:g} s a reordered frame may go"
        elif declared is not None and step > 2 * self.period and t > declared + DURATION_SLACK_SECONDS:
            why = f"past the {declared:.1f} s its container declares"
        else:
            return t
        self.shift += step - self.period
        self._on_jump("video", step - self.period, self.last_time, why)
        return self.last_time + self.period

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
        # A header or packet can claim any duration: the tail is a gap like any other.
        end = self.last_time + min(duration or self._step or self.period, MAX_TIMESTAMP_JUMP_SECONDS)
        if video_end is not None and self._last_stamp is not None:
            end = max(end, self.last_time + min(video_end - self._last_stamp, MAX_TIMESTAMP_JUMP_SECONDS))
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
        self._shift = 0.0  # the sampler's shift when `end` started

    def __call__(self, packet) -> None:
        if packet.stream_index != self.index:
            return
        if self.sampler.shift != self._shift:  # a discontinuity: the old end belongs before it
            self.end, self._shift = None, self.sampler.shift
        timed = packet.pts is not None and bool(packet.duration) and self.time_base is not None
        if timed:
            start = float(packet.pts * self.time_base)
            stop = start + float(packet.duration * self.time_base)
            self.end = stop if self.end is None else max(self.end, stop)
        origin = self.sampler.origin
        if timed and origin is not None:
            clip_start = start - origin - self.sampler.shift
            skip = not self._shown(clip_start, clip_start + stop - start)
        else:
            skip = False
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
    is continuous); only a timestamp jump past AUDIO_GAP_SECONDS inserts silence, and
    one past MAX_TIMESTAMP_JUMP_SECONDS is a discontinuity (no silence). Frames wait
    in `_pending` and go through the resampler together, before anything reads the
    buffer; the resampler streams, so its output does not depend on how its input is
    cut. A change of format, layout or rate mid-stream flushes the resampler and
    starts a new one (PyAV's is fixed to its first frame's).
    """

    def __init__(self, sample_rate: int, on_jump=None) -> None:
        self.rate = sample_rate
        self.resampler: av.AudioResampler | None = None  # built for each input kind, packed float mono out
        self._resampler_kind: tuple | None = None  # the (format, layout, rate) it takes
        self.start: float | None = None  # absolute time of sample 0
        self.stamped_end: float | None = None  # absolute time the latest-stamped samples end
        self._on_jump = on_jump or (lambda *args: None)
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
            elif self._next_in is not None:
                gap = t - self._next_in
                if abs(gap) > MAX_TIMESTAMP_JUMP_SECONDS:  # never silence sized by a timestamp
                    why = f"more than the {MAX_TIMESTAMP_JUMP_SECONDS:g} s a gap may last"
                    self._on_jump("audio", gap, self._next_in - self.start, why)
                elif gap > AUDIO_GAP_SECONDS:
                    self._resample_pending()
                    self._append(np.zeros(round(gap * self.rate), np.float32))
            self._next_in = t
        if self._next_in is not None:
            self._next_in += frame.samples / frame.sample_rate
            self.stamped_end = self._next_in if self.stamped_end is None else max(self.stamped_end, self._next_in)
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
        self._flush_resampler()

    def _resample_pending(self) -> None:
        import av

        if not self._pending:
            return
        assert self._pending_kind is not None  # set with the first pending frame
        fmt, layout, rate = self._pending_kind
        block = av.AudioFrame.from_ndarray(np.concatenate(self._pending, axis=1), format=fmt, layout=layout)
        block.sample_rate = rate
        self._pending, self._pending_samples = [], 0
        if self._pending_kind != self._resampler_kind:
            self._flush_resampler()  # the previous kind's last samples, out of its delay line
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            self._resampler_kind = self._pending_kind
        assert self.resampler is not None
        for out in self.resampler.resample(block):
            self._append(out.to_ndarray().reshape(-1))

    def _flush_resampler(self) -> None:
        if self.resampler is not None:
            for out in self.resampler.resample(None):
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


class PrefetchIterator(Iterator[T], Generic[T]):
    """The items of an iterator, produced on a background thread (see `prefetch`).

    `report` is the wrapped iterator's `report` (a DecodeReport for `iter_chunks`) once
    this iterator is done: exhausted, raised, or closed; None before that, or when the
    wrapped iterator has none.
    """

    def __init__(self, chunks: Iterator[T], depth: int) -> None:
        self._source = chunks
        # The worker must not reference this object, so dropping it stops the worker.
        self._items = _prefetched(chunks, depth)
        self._started = False
        self._done = False

    def __next__(self) -> T:
        self._started = True
        try:
            return next(self._items)
        except BaseException:  # StopIteration or the source's error: nothing more comes
            self._done = True
            raise

    def close(self) -> None:
        """Stop the worker and close the wrapped iterator."""
        self._items.close()  # joins the worker, which closes the source
        if not self._started:  # no worker ever ran: close the source here
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        self._done = True

    @property
    def report(self):
        return getattr(self._source, "report", None) if self._done else None


def _prefetched(chunks: Iterator[T], depth: int) -> Generator[T, None, None]:
    slots: queue.Queue = queue.Queue(maxsize=depth)  # bounded: the worker waits, never spins
    stop = threading.Event()
    # The worker must not reference this generator, so dropping it runs the finally below.
    worker = threading.Thread(target=_fill, args=(chunks, slots, stop), name="media-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value, caught = slots.get()
            for message, category in caught:
                _warn(message, category)
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
    caught: list[tuple[str, type[Warning]]] = []
    _on_worker.caught = caught
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
