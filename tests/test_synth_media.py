"""A synthetic clip written as .mp4 decodes (runtime.media, the path training and inference read) close to
the arrays it was rendered from: H.264 and AAC lose a little, never a colour, a sound or its timing."""

import numpy as np
import pytest

from conftest import tiny_config
from mirasol_edge.data.synth import render_clip, write_clip_mp4
from mirasol_edge.runtime.chunking import chunk_clip
from mirasol_edge.runtime.media import read_clip

SPEC = tiny_config().chunk  # 1 s chunks, 4 fps, 32x32, 16 kHz
MAX_FRAME_ERROR = 8.0  # mean |rendered - decoded| per 8-bit channel value in a chunk; measured 2-5 (yuv420p blurs edges)
MIN_AUDIO_CORRELATION = 0.99  # measured 0.9995 (AAC at 96 kb/s)
MAX_AUDIO_ERROR = 0.1  # RMS of (rendered - decoded) over the RMS of the rendered waveform; measured 0.03


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b) + 1e-12))


@pytest.fixture(params=[4, 14])  # 4 shapes each, in 6 s and in 4 s: a chunk out of place shows another one
def rendered_and_decoded(request, tmp_path):
    clip = render_clip(request.param, SPEC, 4, 6)
    frames, waveform = chunk_clip(clip.frames, clip.waveform, SPEC)  # (K, F, H, W, 3), (K, S)
    decoded = read_clip(write_clip_mp4(tmp_path / "clip.mp4", clip, SPEC), SPEC)
    return (frames, waveform), decoded


def test_frames_decode_close_to_the_rendered_ones(rendered_and_decoded):
    (frames, _), (decoded, _) = rendered_and_decoded
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    error = np.abs(frames.astype(np.float32) - decoded.astype(np.float32))
    assert error.mean(axis=(1, 2, 3, 4)).max() < MAX_FRAME_ERROR  # every chunk, not only on average
    # the bounds tell colours and chunks apart
    swapped = np.abs(frames[..., ::-1].astype(np.float32) - decoded.astype(np.float32))  # red <-> blue
    assert swapped.mean(axis=(1, 2, 3, 4)).max() > 2 * MAX_FRAME_ERROR
    late = np.abs(np.roll(frames, 1, axis=0).astype(np.float32) - decoded.astype(np.float32))  # a chunk late
    assert late.mean(axis=(1, 2, 3, 4)).max() > 2 * MAX_FRAME_ERROR


def test_audio_decodes_close_to_the_rendered_waveform_in_time(rendered_and_decoded):
    (_, waveform), (_, decoded) = rendered_and_decoded
    assert decoded.shape == waveform.shape and decoded.dtype == np.float32
    rendered, heard = waveform.ravel(), decoded.ravel()
    assert _correlation(rendered, heard) > MIN_AUDIO_CORRELATION
    assert np.sqrt(np.mean((rendered - heard) ** 2)) < MAX_AUDIO_ERROR * np.sqrt(np.mean(rendered ** 2))
    # each chunk's loudness: the silent seconds stay silent, the tone, beeps and noise stay where they were
    np.testing.assert_allclose(np.sqrt((decoded ** 2).mean(1)), np.sqrt((waveform ** 2).mean(1)), rtol=0.1, atol=0.005)
    assert abs(_correlation(np.roll(rendered, SPEC.samples_per_chunk), heard)) < 0.2  # a chunk late would fail
