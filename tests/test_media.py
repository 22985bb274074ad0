"""runtime.media: decoding files into aligned chunks (files are written by the tests)."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest

av = pytest.importorskip("av")

from media_fixtures import BLUE, GREEN, RED, color_of, solid_frames, tone, write_media  # noqa: E402

from mirasol_edge.runtime.chunking import ChunkSpec  # noqa: E402
from mirasol_edge.runtime.media import MediaError, MediaWarning, iter_chunks, probe, read_clip  # noqa: E402

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)
# Written at 10 fps, 48x64 (not square), read at 4 fps, 32x32: resampling is exercised.
SRC_FPS, SRC_H, SRC_W = 10, 48, 64



def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return spectrum.argmax() * rate / len(wave)


def _write(tmp_path, name, seconds=3.0, fps=SRC_FPS, audio_seconds=None, sample_rate=48_000, **kw):
    frames = solid_frames([RED, BLUE, GREEN][: int(np.ceil(seconds))], fps, SRC_H, SRC_W)[: round(seconds * fps)]
    audio_seconds = seconds if audio_seconds is None else audio_seconds
    wave = tone(440, audio_seconds, sample_rate) if audio_seconds else None
    return write_media(tmp_path / name, frames, fps, wave, sample_rate, **kw)


@pytest.mark.parametrize(
    "name, vcodec, acodec, sample_rate",
    [
        ("clip.mp4", "libx264", "aac", 48_000),
        ("clip.webm", "libvpx-vp9", "libopus", 48_000),
        ("clip.mkv", "libx264", "libopus", 24_000),
        ("clip.avi", "mpeg4", "libmp3lame", 44_100),
        ("clip.mov", "libx264", "pcm_s16le", 22_050),
    ],
)
def test_decodes_containers_and_codecs_into_aligned_chunks(tmp_path, name, vcodec, acodec, sample_rate):
    path = _write(tmp_path, name, vcodec=vcodec, acodec=acodec, sample_rate=sample_rate)
    frames, wave = read_clip(path, SPEC)

    assert frames.shape == (3, 4, 32, 32, 3) and frames.dtype == np.uint8
    assert wave.shape == (3, 16_000) and wave.dtype == np.float32
    # Second k of the source is one solid colour: every frame of chunk k shows it.
    for k, color in enumerate([RED, BLUE, GREEN]):
        assert [color_of(f) for f in frames[k]] == [color] * 4, f"chunk {k}"
    # A 440 Hz tone at amplitude 0.5 (rms 0.35) survives resampling in every chunk.
    for k in range(3):
        assert abs(_peak_hz(wave[k], SPEC.sample_rate) - 440) < 5
        assert 0.25 < np.sqrt(np.mean(wave[k, 2000:-2000] ** 2)) < 0.45


def test_iter_chunks_yields_one_chunk_at_a_time(tmp_path):
    path = _write(tmp_path, "clip.mkv", vcodec="libvpx-vp9", acodec="libopus")
    chunks = iter_chunks(path, SPEC)
    frames, wave = next(chunks)
    assert frames.shape == (4, 32, 32, 3) and wave.shape == (16_000,)
    assert len(list(chunks)) == 2


def test_live_source_yields_before_the_stream_ends(tmp_path):
    """A pipe fed slowly: the first chunk arrives while most of the stream is unwritten."""
    path = _write(tmp_path, "long.mkv", seconds=3.0, vcodec="libvpx-vp9", acodec="libopus")
    data = open(path, "rb").read()
    fifo = tmp_path / "live.mkv"
    os.mkfifo(fifo)
    got_first = threading.Event()
    first_arrived_early = []

    def feed():
        with open(fifo, "wb") as pipe:
            pipe.write(data[: len(data) * 3 // 4])  # about 2.2 s of media
            pipe.flush()
            first_arrived_early.append(got_first.wait(timeout=10))
            pipe.write(data[len(data) * 3 // 4 :])

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    chunks = iter_chunks(fifo, SPEC)
    first = next(chunks)
    got_first.set()
    rest = list(chunks)
    writer.join(timeout=10)
    assert first_arrived_early == [True]
    assert color_of(first[0][0]) == RED and len(rest) == 2


def test_no_audio_track_gives_silence_and_a_warning(tmp_path):
    path = _write(tmp_path, "silent.mp4", audio_seconds=0)
    with pytest.warns(MediaWarning, match="silent.mp4"):
        frames, wave = read_clip(path, SPEC)
    assert frames.shape == (3, 4, 32, 32, 3)
    assert wave.shape == (3, 16_000) and not wave.any()


def test_shorter_audio_is_padded_with_silence_and_longer_audio_trimmed(tmp_path):
    short = _write(tmp_path, "short_audio.mkv", seconds=2.0, audio_seconds=1.5, acodec="libopus")
    _, wave = read_clip(short, SPEC)
    assert wave.shape == (2, 16_000)
    assert np.abs(wave[1, :7000]).mean() > 0.2 and not wave[1, 9000:].any()

    long = _write(tmp_path, "long_audio.mkv", seconds=2.0, audio_seconds=4.0, acodec="libopus")
    frames, wave = read_clip(long, SPEC)
    assert frames.shape[0] == wave.shape[0] == 2  # the video sets the clip's length


def test_time_zero_is_the_first_video_frame(tmp_path):
    """Audio starts 0.5 s before the video: those samples are dropped, not shifted in."""
    frames = solid_frames([RED, BLUE], SRC_FPS, SRC_H, SRC_W)
    wave = np.concatenate([np.zeros(24_000, np.float32), tone(440, 2.5, 48_000)])  # silence, then tone
    times = [0.5 + i / SRC_FPS for i in range(len(frames))]
    path = write_media(tmp_path / "late_video.mkv", frames, SRC_FPS, wave, 48_000, acodec="libopus", frame_times=times)
    got, audio = read_clip(path, SPEC)
    assert got.shape[0] == 2 and color_of(got[0, 0]) == RED
    # 0.1 s windows: the tone (mean |x| about 0.32) fills chunk 0 from its first samples.
    assert (np.abs(audio).reshape(2, 10, -1).mean(-1) > 0.25).all()


@pytest.mark.parametrize("source_frames, expected_chunks", [(22, 3), (18, 2)])  # 2.75 s, 2.25 s at 8 fps
def test_trailing_partial_chunk_follows_the_chunking_rule(tmp_path, source_frames, expected_chunks):
    path = _write(tmp_path, "partial.mp4", seconds=source_frames / 8, fps=8)
    frames, wave = read_clip(path, SPEC)
    assert frames.shape[0] == wave.shape[0] == expected_chunks
    if expected_chunks == 3:  # 2.75 s -> 11 frames: 3 real + 1 repeat; 0.75 s audio + silence
        last = frames[2]
        assert np.array_equal(last[3], last[2]) and color_of(last[2]) == GREEN
        assert np.abs(wave[2, :11_000]).mean() > 0.2 and not wave[2, 13_000:].any()


def test_too_short_clip_raises(tmp_path):
    path = _write(tmp_path, "blip.mp4", seconds=0.2)
    with pytest.raises(MediaError, match="blip.mp4.*half chunk"):
        read_clip(path, SPEC)


def test_variable_frame_rate_picks_latest_frame_at_each_time(tmp_path):
    colors = [RED, GREEN, BLUE, BLUE]
    frames = np.stack([solid_frames([c], 1, SRC_H, SRC_W)[0] for c in colors])
    # red from 0 s, green from 0.6 s, blue from 1.3 s; the last frame ends at about 2 s.
    path = write_media(tmp_path / "vfr.mkv", frames, 10, None, vcodec="libx264", frame_times=[0, 0.6, 1.3, 1.9])
    with pytest.warns(MediaWarning):
        got, _ = read_clip(path, SPEC)
    # output times 0, .25, .5 | .75, 1, 1.25 | 1.5, 1.75
    assert [color_of(f) for f in got.reshape(-1, 32, 32, 3)] == [RED] * 3 + [GREEN] * 3 + [BLUE] * 2


def test_frames_are_center_cropped_then_resized(tmp_path):
    frame = np.zeros((1, 48, 96, 3), np.uint8)
    frame[:, :, :24] = GREEN  # outside the centre 48x48 square
    frame[:, :, 24:72] = RED
    frame[:, :, 72:] = GREEN
    path = write_media(tmp_path / "wide.mp4", np.repeat(frame, 10, axis=0), 10, None)
    with pytest.warns(MediaWarning):
        got, _ = read_clip(path, SPEC)
    inner = got[0, 0, :, 2:-2].astype(int)  # the outermost columns may blend at the crop edge
    assert (inner[..., 0] > 200).all() and (inner[..., 1] < 60).all()


def test_display_rotation_is_applied(tmp_path):
    frame = np.zeros((1, 48, 48, 3), np.uint8)
    frame[:, :, :24] = RED  # left half red, right half blue
    frame[:, :, 24:] = BLUE
    path = write_media(tmp_path / "phone.mp4", np.repeat(frame, 10, axis=0), 10, None, rotation=90)
    with pytest.warns(MediaWarning):
        got, _ = read_clip(path, SPEC)
    # Rotated 90 degrees counter-clockwise for display: the left half ends up at the bottom.
    assert color_of(got[0, 0, :12]) == BLUE and color_of(got[0, 0, -12:]) == RED


def test_zero_decodable_frames_raise_naming_the_file(tmp_path):
    path = _write(tmp_path, "whole.mkv", acodec="libopus")
    with av.open(path) as container:  # cut just before the first packet: headers, no frames
        first_packet = min(p.pos for p in container.demux() if p.pos is not None and p.pos >= 0)
    headers_only = tmp_path / "headers_only.mkv"
    headers_only.write_bytes(open(path, "rb").read()[:first_packet])
    with pytest.raises(MediaError, match="no video frame.*headers_only.mkv"):
        read_clip(headers_only, SPEC)


def test_missing_file_raises_naming_it(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(MediaError, match="not found.*nowhere.mp4"):
        iter_chunks(missing, SPEC)


def test_truncated_file_raises_naming_it(tmp_path):
    data = open(_write(tmp_path, "whole.mp4"), "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="cut.mp4"):
        read_clip(cut, SPEC)


def test_random_bytes_raise_naming_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="junk.mp4"):
        read_clip(junk, SPEC)


def test_audio_only_file_raises_about_no_video(tmp_path):
    path = write_media(tmp_path / "song.m4a", None, 0, tone(440, 2.0, 48_000), 48_000, acodec="aac")
    with pytest.raises(MediaError, match="song.m4a has no video"):
        read_clip(path, SPEC)


def test_media_error_is_a_value_error():
    assert issubclass(MediaError, ValueError)


def test_probe_describes_the_source(tmp_path):
    info = probe(_write(tmp_path, "clip.mp4"))
    assert info["has_video"] and info["has_audio"]
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert (info["width"], info["height"], info["fps"]) == (SRC_W, SRC_H, SRC_FPS)
    assert abs(info["duration"] - 3.0) < 0.1


def test_no_raw_av_error_escapes_for_a_directory(tmp_path):
    with warnings.catch_warnings(), pytest.raises(MediaError, match=str(tmp_path.name)):
        read_clip(tmp_path, SPEC)
