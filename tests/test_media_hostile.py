"""runtime.media on hostile input: truncated files, timestamp jumps, audio format changes, junk.

Every file is written here with PyAV (and then damaged), a few seconds of 48x64 video.
"""

from __future__ import annotations

import tracemalloc
import warnings
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from media_fixtures import BLUE, GREEN, RED, color_of, solid_frames, tone, write_media  # noqa: E402

from mirasol_edge.runtime.chunking import ChunkSpec  # noqa: E402
from mirasol_edge.runtime.media import (  # noqa: E402
    DecodeReport,
    MediaError,
    MediaWarning,
    iter_chunks,
    prefetch,
    probe,
    read_clip,
)

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)
FPS, H, W = 10, 48, 64



def _faststart(path: str, out: str) -> str:
    """Remux an mp4 with its index first, so a cut file still opens (as a download does)."""
    with av.open(path) as src, av.open(out, "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:  # not a flush packet
                packet.stream = streams[packet.stream_index]
                dst.mux(packet)
    return out


def _clip(tmp_path, name: str, seconds: int = 4, vcodec: str = "libx264", acodec: str = "libopus") -> str:
    """`seconds` s at 10 fps, one colour per second, with a 440 Hz tone."""
    frames = solid_frames([RED, BLUE, GREEN, RED, BLUE][:seconds], FPS, H, W)
    return write_media(tmp_path / name, frames, FPS, tone(440, seconds, 48_000), 48_000, vcodec=vcodec, acodec=acodec)


def _cut(path: str, fraction: float, out) -> str:
    data = open(path, "rb").read()
    out.write_bytes(data[: int(len(data) * fraction)])
    return str(out)


def _write_jumps(path, video_jump: float = 0.0, audio_jump: float = 0.0) -> str:
    """4 s, red then blue from 2 s; video and audio timestamps from 2 s on moved by their jump (mkv keeps them)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.options = {"preset": "ultrafast"}
        video.codec_context.time_base = Fraction(1, FPS)
        audio = container.add_stream("libopus", rate=48_000)
        audio.layout = "mono"
        container.start_encoding()
        for i, rgb in enumerate(solid_frames([RED, RED, BLUE, BLUE], FPS, H, W)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i + (round(video_jump * FPS) if i >= 2 * FPS else 0), Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        wave = tone(440, 4.0, 48_000)
        for start in range(0, len(wave), 960):
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 960].copy(), format="flt", layout="mono")
            frame.sample_rate = 48_000
            frame.pts = start + (round(audio_jump * 48_000) if start >= 2 * 48_000 else 0)
            frame.time_base = Fraction(1, 48_000)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return str(path)


def _write_audio_switch(path, parts: list[tuple[str, int]], seconds_each: float = 1.5) -> str:
    """3 s of video with one MP3 stream whose frames switch (layout, rate) between `parts`.

    MP3 frames carry their own layout and rate, so each part is encoded by its own encoder
    and muxed as one stream, timestamps laid end to end.
    """
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.options = {"preset": "ultrafast"}
        layout, rate = parts[0]
        audio = container.add_stream("libmp3lame", rate=rate)
        audio.layout = layout
        container.start_encoding()
        for i, rgb in enumerate(solid_frames([RED, BLUE, GREEN], FPS, H, W)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        clock = 0.0  # seconds where the next audio packet starts
        for layout, rate in parts:
            encoder = av.CodecContext.create("libmp3lame", "w")
            encoder.sample_rate, encoder.layout, encoder.format = rate, layout, "s16p"
            encoder.time_base = Fraction(1, rate)
            channels = 1 if layout == "mono" else 2
            pcm = (np.repeat(tone(440, seconds_each, rate)[None], channels, 0) * 32767).astype(np.int16)
            packets = []
            for start in range(0, pcm.shape[1], 1152):
                frame = av.AudioFrame.from_ndarray(pcm[:, start : start + 1152].copy(), format="s16p", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                packets.extend(encoder.encode(frame))
            packets.extend(encoder.encode(None))
            for packet in packets:
                packet.stream, packet.time_base = audio, Fraction(1, rate)
                packet.pts = packet.dts = round(clock * rate)
                clock += packet.duration / rate
                container.mux(packet)
    return str(path)


# --- truncated and clean files ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, vcodec, acodec",
    [("clip.mkv", "libx264", "libopus"), ("clip.webm", "libvpx-vp9", "libopus"), ("clip.mp4", "libx264", "aac")],
)
def test_truncated_file_decodes_what_it_can_warns_and_reports_incomplete(tmp_path, name, vcodec, acodec):
    path = _clip(tmp_path, name, vcodec=vcodec, acodec=acodec)
    if name.endswith(".mp4"):  # an mp4 cut before its index (written last) does not open at all
        path = _faststart(path, str(tmp_path / "fast.mp4"))
    cut = _cut(path, 0.5, tmp_path / f"cut_{name}")

    chunks = iter_chunks(cut, SPEC)
    with pytest.warns(MediaWarning, match=f"cut_{name} did not decode completely"):
        got = list(chunks)
    assert 1 <= len(got) < 4
    assert chunks.report.complete is False and chunks.report.chunks == len(got) and chunks.report.reason


def test_clean_file_reports_complete(tmp_path):
    chunks = iter_chunks(_clip(tmp_path, "clip.mkv", seconds=3), SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        assert len(list(chunks)) == 3
    assert chunks.report == DecodeReport(complete=True, chunks=3, reason=None)


def test_report_is_none_until_iteration_ends(tmp_path):
    chunks = iter_chunks(_clip(tmp_path, "clip.mkv", seconds=3), SPEC)
    next(chunks)
    assert chunks.report is None
    chunks.close()
    assert chunks.report.complete is False and chunks.report.chunks == 1 and "stopped" in chunks.report.reason


def test_prefetch_forwards_the_report(tmp_path):
    cut = _cut(_clip(tmp_path, "clip.webm", vcodec="libvpx-vp9"), 0.5, tmp_path / "cut.webm")
    chunks = prefetch(iter_chunks(cut, SPEC))
    assert chunks.report is None
    with pytest.warns(MediaWarning, match="cut.webm did not decode completely"):
        got = list(chunks)
    assert chunks.report.complete is False and chunks.report.chunks == len(got) and "truncated" in chunks.report.reason


# --- timestamps ------------------------------------------------------------------------


def test_an_hour_long_video_timestamp_jump_is_a_discontinuity(tmp_path):
    path = _write_jumps(tmp_path / "jump.mkv", video_jump=3600)
    chunks = iter_chunks(path, SPEC)
    with pytest.warns(MediaWarning, match=r"jump.mkv has video timestamps that jump \+3600.0 s") as record:
        got = list(chunks)
    # 4 s of frames stay 4 chunks (not 3604), the frames after the jump following on.
    assert [color_of(frames[0]) for frames, _ in got] == [RED, RED, BLUE, BLUE]
    assert chunks.report.complete and [w.filename for w in record] == [__file__]


def test_a_video_gap_within_the_bound_is_kept(tmp_path):
    path = _write_jumps(tmp_path / "gap.mkv", video_jump=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        frames, _ = read_clip(path, SPEC)
    # Red 0-2 s, the last red frame held through the 5 s gap, blue 7-9 s.
    assert [color_of(f[0]) for f in frames] == [RED] * 7 + [BLUE] * 2


def test_a_timestamp_reset_continues_the_clip(tmp_path):
    """Two MPEG-TS files joined byte to byte: the second one's timestamps start again at 0."""
    parts = [
        write_media(tmp_path / f"{i}.ts", solid_frames(colors, FPS, H, W), FPS, tone(440, 2, 48_000), acodec="mp2")
        for i, colors in enumerate([[RED, RED], [BLUE, BLUE]])
    ]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(open(p, "rb").read() for p in parts))
    with pytest.warns(MediaWarning, match=r"joined.ts has video timestamps that jump -2.0 s"):
        frames, _ = read_clip(joined, SPEC)
    assert [color_of(f[0]) for f in frames] == [RED, RED, BLUE, BLUE]


def test_a_huge_audio_timestamp_jump_allocates_no_silence(tmp_path):
    path = _write_jumps(tmp_path / "audio_jump.mkv", audio_jump=100_000)
    tracemalloc.start()
    try:
        with pytest.warns(MediaWarning, match=r"audio_jump.mkv has audio timestamps that jump \+100000.0 s"):
            frames, wave = read_clip(path, SPEC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape[0] == 4 and peak < 50e6  # silence for the jump would be 6.4 GB
    assert (np.abs(wave[:, 2000:-2000]).mean(-1) > 0.2).all()  # the tone after the jump follows on


@pytest.mark.parametrize(
    "parts", [[("mono", 44_100), ("stereo", 44_100)], [("mono", 44_100), ("mono", 48_000)]], ids=["layout", "rate"]
)
def test_audio_format_change_mid_stream_is_resampled(tmp_path, parts):
    path = _write_audio_switch(tmp_path / "switch.mkv", parts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        frames, wave = read_clip(path, SPEC)
    assert frames.shape[0] == 3
    # 0.1 s windows: the tone (mean |x| about 0.32) is there before and after the switch at 1.5 s.
    assert (np.abs(wave).reshape(3, 10, -1).mean(-1) > 0.2).all()


# --- junk ------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", [read_clip, lambda path, spec: probe(path)], ids=["read_clip", "probe"])
@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(20_000)], ids=["empty", "random"])
def test_junk_raises_media_error_naming_the_file(tmp_path, decode, content):
    junk = tmp_path / "junk.webm"
    junk.write_bytes(content)
    with pytest.raises(MediaError, match="junk.webm"):
        decode(junk, SPEC)
