import numpy as np
import pytest

from conftest import random_chunks, tiny_model

SECONDS = 2


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def arrays(cfg, seconds=SECONDS):
    s = cfg.chunk
    frames = np.zeros((seconds * s.fps, s.frame_size, s.frame_size, 3), np.uint8)
    return frames, np.zeros(seconds * s.sample_rate, np.float32)


def test_wrong_frame_dtype_is_named(model):
    frames, waveform = arrays(model.cfg)
    with pytest.raises(ValueError, match="uint8"):
        model.answer_clip(frames.astype(np.float32), waveform, "what colour?")


def test_wrong_frame_size_is_named(model):
    _, waveform = arrays(model.cfg)
    with pytest.raises(ValueError, match="model expects 32x32"):
        model.answer_clip(np.zeros((8, 48, 48, 3), np.uint8), waveform, "what colour?")


def test_wrong_audio_dtype_is_named(model):
    frames, waveform = arrays(model.cfg)
    with pytest.raises(ValueError, match="float32"):
        model.answer_clip(frames, waveform.astype(np.int16), "what colour?")


def test_empty_clip_is_named(model):
    frames, waveform = arrays(model.cfg)
    with pytest.raises(ValueError, match="empty or too short"):
        model.answer_clip(frames[:0], waveform, "what colour?")


def test_question_longer_than_the_context_is_named(model):
    frames, waveform = arrays(model.cfg)
    with pytest.raises(ValueError, match="text context is 96"):
        model.answer_clip(frames, waveform, "why? " * 40)


def test_empty_question_is_named(model):
    frames, waveform = arrays(model.cfg)
    with pytest.raises(ValueError, match="question is empty"):
        model.answer_clip(frames, waveform, "  ")


def test_wrong_tensor_dtype_in_a_pushed_chunk_is_named(model):
    waveform, frames = random_chunks(model.cfg, 1, 1)
    with pytest.raises(ValueError, match="uint8"):
        model.push_chunk(model.init_stream(), waveform[:, 0], frames[:, 0].float())


def test_wrong_frame_shape_in_a_pushed_chunk_is_named(model):
    waveform, frames = random_chunks(model.cfg, 1, 1)
    with pytest.raises(ValueError, match=r"shape \(B, K, 4, 32, 32, 3\)"):
        model.push_chunk(model.init_stream(), waveform[:, 0], frames[:, 0, :, :16])


def test_asking_an_empty_stream_is_named(model):
    with pytest.raises(ValueError, match="no chunk has been pushed"):
        model.answer(model.init_stream(), "what colour?")
