import torch

from conftest import random_chunks, tiny_model


def test_a_change_in_chunk_k_changes_no_output_of_earlier_chunks(combiner_kind):
    model = tiny_model(combiner_kind)
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=4)
    _, before = model.encode(waveform, frames)
    waveform[:, 2] += 0.5
    frames[:, 2] = 255 - frames[:, 2]
    _, after = model.encode(waveform, frames)
    m = model.cfg.combiner.latents
    assert torch.equal(before[:, : 2 * m], after[:, : 2 * m])  # chunks 0, 1: untouched
    assert not torch.allclose(before[:, 2 * m :], after[:, 2 * m :])  # chunk 2 and later: changed


def test_chunk_by_chunk_decoding_equals_the_whole_clip_forward():
    model = tiny_model()
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    latents = torch.randn(2, 5 * m, model.cfg.d_model)
    whole, _ = decoder(latents, 0)
    past, steps = None, []
    for k in range(5):
        features, past = decoder(latents[:, k * m : (k + 1) * m], k, past)
        steps.append(features)
    assert (torch.cat(steps, dim=1) - whole).abs().max() <= 1e-5


def test_a_windowed_stream_equals_the_windowed_whole_clip_forward():
    model = tiny_model(temporal_window=2)
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    latents = torch.randn(1, 6 * m, model.cfg.d_model)
    whole, _ = decoder(latents, 0)
    past, steps = None, []
    for k in range(6):
        features, past = decoder(latents[:, k * m : (k + 1) * m], k, past)
        past = [(key[:, :, -2 * m :], value[:, :, -2 * m :]) for key, value in past]  # keep 2 chunks
        steps.append(features)
    assert (torch.cat(steps, dim=1) - whole).abs().max() <= 1e-5


def test_chunk_positions_are_absolute_up_to_the_window_then_shared():
    model = tiny_model(temporal_window=2)
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    latents = torch.randn(1, m, model.cfg.d_model)
    at = {k: decoder(latents, k)[0] for k in (0, 1, 5, 9)}  # one chunk, no cache: only its position differs
    assert not torch.allclose(at[0], at[1])  # "first" is visible to the context decoder
    assert torch.allclose(at[5], at[9], atol=1e-5)  # past the window every chunk looks alike: endless streams stay in distribution
