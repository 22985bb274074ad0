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


def ring(model, batch: int, window: int):
    h, hd = model.cfg.n_heads, model.cfg.d_model // model.cfg.n_heads
    empty = torch.zeros(batch, h, window * model.cfg.combiner.latents, hd)
    return [(empty, empty)] * model.cfg.temporal_layers


def test_chunk_by_chunk_decoding_equals_the_whole_clip_forward():
    model = tiny_model()
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    latents = torch.randn(2, 5 * m, model.cfg.d_model)
    whole = decoder(latents)
    past, steps = ring(model, 2, model.cfg.temporal_window), []
    for k in range(5):
        features, past = decoder.step(latents[:, k * m : (k + 1) * m], torch.full((2,), k), past)
        steps.append(features)
    assert (torch.cat(steps, dim=1) - whole).abs().max() <= 1e-5


def test_a_ring_of_the_window_equals_the_windowed_whole_clip_forward():
    model = tiny_model(temporal_window=2)
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    latents = torch.randn(1, 6 * m, model.cfg.d_model)
    whole = decoder(latents)
    past, steps = ring(model, 1, 2), []
    for k in range(6):  # from chunk 2 on, each chunk overwrites the oldest slot of the 2-chunk ring
        features, past = decoder.step(latents[:, k * m : (k + 1) * m], torch.tensor([k]), past)
        assert past[0][0].shape[2] == 2 * m
        steps.append(features)
    assert (torch.cat(steps, dim=1) - whole).abs().max() <= 1e-5


def test_streams_at_different_positions_step_together_as_they_step_alone():
    model = tiny_model(temporal_window=3)
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    rings, positions = [ring(model, 1, 3) for _ in range(2)], [0, 0]
    for k in range(7):  # stream 0 gets every chunk, stream 1 every other one: positions drift apart
        for i in (0, 1) if k % 2 else (0,):
            _, rings[i] = decoder.step(torch.randn(1, m, model.cfg.d_model), torch.tensor([positions[i]]), rings[i])
            positions[i] += 1
    latents = torch.randn(2, m, model.cfg.d_model)
    together, _ = decoder.step(latents, torch.tensor(positions),
                               [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*rings)])
    alone = [decoder.step(latents[i : i + 1], torch.tensor([positions[i]]), rings[i])[0] for i in (0, 1)]
    assert (together - torch.cat(alone)).abs().max() <= 1e-5


def test_chunk_positions_are_absolute_up_to_the_window_then_shared():
    model = tiny_model(temporal_window=2)
    decoder, m = model.temporal_decoder, model.cfg.combiner.latents
    latents = torch.randn(1, m, model.cfg.d_model)
    at = {k: decoder(latents, k) for k in (0, 1, 5, 9)}  # one chunk, no cache: only its position differs
    assert not torch.allclose(at[0], at[1])  # "first" is visible to the context decoder
    assert torch.allclose(at[5], at[9], atol=1e-5)  # past the window every chunk looks alike: endless streams stay in distribution
