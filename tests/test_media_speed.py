"""runtime.media speed options: skip_nonref and prefetch (decoding on a background thread)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

av = pytest.importorskip("av")

from media_fixtures import tone, write_media  # noqa: E402

from mirasol_edge.benchmarks.sources import write_test_source  # noqa: E402
from mirasol_edge.runtime import media  # noqa: E402
from mirasol_edge.runtime.chunking import ChunkSpec  # noqa: E402
from mirasol_edge.runtime.media import MediaError, MediaWarning, iter_chunks, prefetch, read_clip  # noqa: E402

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory):
    """3 s of testsrc2 at 30 fps, x264 defaults: B-frames, most of them non-reference."""
    return write_test_source(tmp_path_factory.mktemp("src") / "testsrc.mp4", 128, 96, 30, 3.0)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "media-prefetch"]


def test_skip_nonref_gives_the_same_chunks_on_a_constant_rate_clip(bframe_clip):
    frames, wave = read_clip(bframe_clip, SPEC)
    fast_frames, fast_wave = read_clip(bframe_clip, SPEC, skip_nonref=True)
    assert fast_frames.shape == frames.shape == (3, 4, 32, 32, 3)
    assert np.array_equal(fast_frames, frames) and np.array_equal(fast_wave, wave)


def test_skip_nonref_decodes_fewer_frames(bframe_clip, monkeypatch):
    samplers = []

    class CountingSampler(media._FrameSampler):
        def __init__(self, *args):
            super().__init__(*args)
            samplers.append(self)

    monkeypatch.setattr(media, "_FrameSampler", CountingSampler)
    read_clip(bframe_clip, SPEC)
    read_clip(bframe_clip, SPEC, skip_nonref=True)
    full, skipped = (s.decoded for s in samplers)
    assert full == 90 and skipped < 0.8 * full


def test_prefetch_yields_the_same_chunks_as_iter_chunks(bframe_clip):
    expected = list(iter_chunks(bframe_clip, SPEC))
    got = list(prefetch(iter_chunks(bframe_clip, SPEC), depth=1))
    assert len(got) == len(expected) == 3
    for (frames, wave), (want_frames, want_wave) in zip(got, expected):
        assert np.array_equal(frames, want_frames) and np.array_equal(wave, want_wave)


def test_prefetch_raises_a_decoding_error_in_the_consumer(tmp_path):
    path = write_media(tmp_path / "whole.mkv", np.zeros((30, 48, 64, 3), np.uint8), 10, None)
    with av.open(path) as container:  # cut just before the first packet: headers, no frames
        first_packet = min(p.pos for p in container.demux() if p.pos is not None and p.pos >= 0)
    headers_only = tmp_path / "headers_only.mkv"
    headers_only.write_bytes(open(path, "rb").read()[:first_packet])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MediaWarning)  # no audio track
        chunks = prefetch(iter_chunks(headers_only, SPEC))
    with pytest.raises(MediaError, match="no video frame.*headers_only.mkv"):
        next(chunks)


def test_prefetch_raises_after_the_items_before_the_error():
    def chunks():
        yield 1
        yield 2
        raise MediaError("broken at 2 s")

    got = []
    with pytest.raises(MediaError, match="broken at 2 s"):
        for item in prefetch(chunks()):
            got.append(item)
    assert got == [1, 2]


def test_a_worker_warning_is_issued_in_the_consumer(tmp_path):
    """Garbage in four video packets: the decoder's warning comes out of the consumer's next()."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    path = write_media(tmp_path / "clip.mp4", frames, 10, tone(440, 3.0, 48_000), 48_000)
    with av.open(path) as container:
        spans = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.pos is not None and p.pos >= 0]
    data = bytearray(open(path, "rb").read())
    for pos, size in spans[10:14]:
        data[pos + 2 : pos + size] = rng.integers(0, 256, size - 2, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))

    with pytest.warns(MediaWarning, match="skipped 4 undecodable") as record:
        chunks = list(prefetch(iter_chunks(damaged, SPEC)))
    assert len(chunks) == 3
    assert [w.filename for w in record] == [__file__]  # issued here, not on the worker thread


def test_breaking_out_stops_the_worker_and_closes_the_source(bframe_clip):
    source = iter_chunks(bframe_clip, SPEC)
    for _ in prefetch(source, depth=1):
        break
    for thread in _prefetch_threads():
        thread.join(timeout=2)
    assert _prefetch_threads() == []
    assert source.gi_frame is None  # the generator finished: its finally closed the container


def test_prefetch_rejects_a_depth_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        prefetch(iter([]), depth=0)
