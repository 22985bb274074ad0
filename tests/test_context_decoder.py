import torch

from conftest import tiny_model


def empty_text_cache(model, batch: int):
    h, hd = model.cfg.n_heads, model.cfg.d_model // model.cfg.n_heads
    empty = torch.zeros(batch, h, model.cfg.max_text_len, hd)
    return [(empty, empty)] * model.cfg.context_layers


def test_token_by_token_with_the_static_cache_equals_full_recomputation():
    model = tiny_model()
    decoder = model.context_decoder
    cross = decoder.cross_keys_values(torch.randn(2, 12, model.cfg.d_model))
    chunks = torch.full((2,), 12 // model.cfg.combiner.latents)
    tokens = torch.randint(4, 260, (2, 9))
    full = decoder(tokens, cross)
    logits, past = decoder.step(tokens[:, :4], torch.zeros(2, dtype=torch.long), empty_text_cache(model, 2), cross, chunks)
    steps = [logits]  # a prefill of 4, then one token at a time
    for t in range(4, 9):
        logits, past = decoder.step(tokens[:, t : t + 1], torch.full((2,), t), past, cross, chunks)
        steps.append(logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_prompts_of_different_lengths_padded_in_one_prefill_decode_as_they_do_alone():
    model = tiny_model()
    decoder = model.context_decoder
    cross = decoder.cross_keys_values(torch.randn(2, 12, model.cfg.d_model))
    chunks = torch.full((2,), 3)
    short, long = torch.randint(4, 260, (1, 3)), torch.randint(4, 260, (1, 6))
    padded = torch.cat([torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1), long])  # (2, 6), row 0 padded
    logits, past = decoder.step(padded, torch.zeros(2, dtype=torch.long), empty_text_cache(model, 2), cross, chunks)
    nxt = torch.randint(4, 260, (2, 1))
    together, _ = decoder.step(nxt, torch.tensor([3, 6]), past, cross, chunks)  # row 0 overwrites its padding
    for i, prompt in enumerate((short, long)):
        _, alone = decoder.step(prompt, torch.zeros(1, dtype=torch.long), empty_text_cache(model, 1),
                                [(k[i : i + 1], v[i : i + 1]) for k, v in cross], chunks[:1])
        step, _ = decoder.step(nxt[i : i + 1], torch.tensor([prompt.shape[1]]), alone,
                               [(k[i : i + 1], v[i : i + 1]) for k, v in cross], chunks[:1])
        assert (together[i] - step[0]).abs().max() <= 1e-5


def test_incremental_cross_keys_values_equal_recomputed_ones(combiner_kind):
    model = tiny_model(combiner_kind)
    from conftest import random_chunks

    waveform, frames = random_chunks(model.cfg, batch=1, chunks=3)
    state = model.init_stream()
    for k in range(3):
        state = model.push_chunk(state, waveform[:, k], frames[:, k])
    _, features = model.encode(waveform, frames)
    recomputed = model.context_decoder.cross_keys_values(features)
    filled = 3 * model.cfg.combiner.latents  # chunks 0..2 in the first slots of the ring
    for (key, value), (key_ref, value_ref) in zip(state.cross, recomputed):
        key, value = key[:, :, :filled], value[:, :, :filled]
        assert (key - key_ref).abs().max() <= 1e-5
        assert (value - value_ref).abs().max() <= 1e-5
