import torch

from conftest import random_chunks, tiny_model
from mirasol_edge.runtime import tokenizer


def test_streaming_chunk_by_chunk_gives_the_whole_clip_greedy_answer(combiner_kind):
    model = tiny_model(combiner_kind, seed=3)
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=4, seed=1)
    prompt = model.prompt_tokens("what colour came first?")
    _, features = model.encode(waveform, frames)
    whole = model.generate(model.context_decoder.cross_keys_values(features), prompt, max_new_tokens=12)
    state = model.init_stream()
    for k in range(4):
        state = model.push_chunk(state, waveform[:, k], frames[:, k])
    streamed = model.generate(state.cross, prompt, max_new_tokens=12, chunks=state.chunks)
    assert whole.shape[1] > 0
    assert torch.equal(whole, streamed)


def test_asking_does_not_change_the_stream():
    model = tiny_model()
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=2)
    state = model.init_stream()
    for k in range(2):
        state = model.push_chunk(state, waveform[:, k], frames[:, k])
    first = model.answer(state, "what shape?")
    assert model.answer(state, "what shape?") == first
    assert state.chunks == 2


def test_stream_caches_keep_their_size():
    model = tiny_model(temporal_window=3)
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=1)
    state = model.init_stream()
    keep = 3 * model.cfg.combiner.latents
    for _ in range(7):
        state = model.push_chunk(state, waveform[:, 0], frames[:, 0])
        assert all(k.shape[2] == keep for k, _ in state.temporal + state.cross)
    assert state.chunks == 7


def test_generation_stops_at_the_text_context():
    model = tiny_model(max_text_len=24)
    prompt = torch.tensor([[tokenizer.BOS] + tokenizer.tokenize("a" * 18) + [tokenizer.SEP]])  # 20 tokens
    cross = model.context_decoder.cross_keys_values(torch.randn(1, 4, model.cfg.d_model))
    assert model.generate(cross, prompt, max_new_tokens=50).shape[1] <= 4
