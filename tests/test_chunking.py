import numpy as np
import pytest

from mirasol_edge.runtime.chunking import ChunkSpec, chunk_clip, num_chunks

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)


def clip(seconds: float, spec=SPEC):
    frames = np.zeros((int(round(seconds * spec.fps)), spec.frame_size, spec.frame_size, 3), np.uint8)
    waveform = np.zeros(int(round(seconds * spec.sample_rate)), np.float32)
    return frames, waveform


@pytest.mark.parametrize("seconds, chunks", [(1, 1), (3, 3), (6, 6), (12, 12)])
def test_a_clip_of_n_seconds_gives_n_aligned_chunks(seconds, chunks):
    frames, waveform = chunk_clip(*clip(seconds), SPEC)
    assert frames.shape == (chunks, 4, 32, 32, 3)
    assert waveform.shape == (chunks, 16_000)


def test_chunk_k_holds_the_frames_and_samples_of_the_same_seconds():
    frames, waveform = clip(3)
    frames[:] = np.arange(12)[:, None, None, None]  # frame i has value i
    waveform[:] = np.repeat(np.arange(3), 16_000)  # second s has value s
    f, w = chunk_clip(frames, waveform, SPEC)
    for k in range(3):
        assert set(np.unique(f[k])) == {4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3}
        assert set(np.unique(w[k])) == {k}


def test_a_trailing_partial_chunk_of_at_least_half_is_padded():
    frames, waveform = clip(2.5)
    frames[-1] = 7
    f, w = chunk_clip(frames, waveform, SPEC)
    assert f.shape[0] == 3
    assert (f[2, 2:] == 7).all()  # the last real frame repeated
    assert (w[2, 8_000:] == 0).all()  # silence


def test_a_trailing_partial_chunk_under_half_is_dropped():
    assert num_chunks(9, SPEC) == 2  # 2.25 s
    assert chunk_clip(*clip(2.25), SPEC)[0].shape[0] == 2


def test_audio_shorter_than_the_video_is_padded_with_silence():
    frames, _ = clip(2)
    f, w = chunk_clip(frames, np.ones(20_000, np.float32), SPEC)
    assert w.shape == (2, 16_000) and w[1, 4_000:].sum() == 0


def test_two_second_chunks():
    spec = ChunkSpec(chunk_seconds=2.0, fps=4, frame_size=64)
    frames, waveform = chunk_clip(*clip(7, spec), spec)  # 3.5 chunks -> 4
    assert frames.shape == (4, 8, 64, 64, 3) and waveform.shape == (4, 32_000)
