import torch

from conftest import tiny_model


def test_token_by_token_with_caches_equals_full_recomputation():
    model = tiny_model()
    decoder = model.context_decoder
    cross = decoder.cross_keys_values(torch.randn(2, 12, model.cfg.d_model))
    tokens = torch.randint(4, 260, (2, 9))
    full, _ = decoder(tokens, cross)
    logits, past = decoder(tokens[:, :4], cross)  # a prefill of 4, then one token at a time
    steps = [logits]
    for t in range(4, 9):
        logits, past = decoder(tokens[:, t : t + 1], cross, past)
        steps.append(logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_incremental_cross_keys_values_equal_recomputed_ones(combiner_kind):
    model = tiny_model(combiner_kind)
    from conftest import random_chunks

    waveform, frames = random_chunks(model.cfg, batch=1, chunks=3)
    state = model.init_stream()
    for k in range(3):
        state = model.push_chunk(state, waveform[:, k], frames[:, k])
    _, features = model.encode(waveform, frames)
    recomputed = model.context_decoder.cross_keys_values(features)
    for (key, value), (key_ref, value_ref) in zip(state.cross, recomputed):
        assert (key - key_ref).abs().max() <= 1e-5
        assert (value - value_ref).abs().max() <= 1e-5
