"""Long streams keep fixed-size caches: rings of the last `temporal_window` chunks (docs/bundle.md)."""

import numpy as np
import pytest
import torch

from runtime_bundles import one_torch_thread, random_chunk, trained
from mirasol_edge.runtime.session import Runtime


@pytest.fixture(scope="module")
def model_and_runtime():
    model, bundle = trained()
    return model, Runtime.load(bundle, intra_op_threads=1)


def test_a_1000_chunk_stream_keeps_fixed_size_caches_and_answers_as_pytorch(model_and_runtime):
    model, runtime = model_and_runtime
    stream, state = runtime.create_stream(), model.init_stream()
    m, window = runtime.dims.latents, runtime.temporal_window
    assert window == runtime.bundle.config["temporal_window"]
    rng = np.random.default_rng(0)
    chunks = [random_chunk(runtime.chunk, rng) for _ in range(4)]
    for k in range(1, 1001):
        stream.push(*chunks[k % 4])
        with one_torch_thread():
            f, w = chunks[k % 4]
            state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
        assert stream.cache_lengths() == {"temporal": min(k, window) * m, "cross": min(k, window) * m}
        if k in (1, window, 1000):
            shapes = {a.shape for a in stream.arrays().values()}
            assert shapes == {(runtime.dims.heads, window * m, runtime.dims.head_dim)}
    assert stream.chunks == 1000
    for q in ("what colour came first?", "how many beeps?"):
        assert stream.ask(q) == model.answer(state, q)


def test_past_the_window_the_runtime_holds_pytorchs_rings_and_answers(model_and_runtime):
    model, runtime = model_and_runtime
    stream, state = runtime.create_stream(), model.init_stream()
    rng = np.random.default_rng(1)
    window = model.cfg.temporal_window
    with one_torch_thread():
        for _ in range(window + 5):  # the oldest chunks have been overwritten in both rings
            f, w = random_chunk(runtime.chunk, rng)
            stream.push(f, w)
            state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
    arrays = stream.arrays()
    for prefix, cache in (("past", state.temporal), ("cross", state.cross)):
        for i, (key, value) in enumerate(cache):
            np.testing.assert_allclose(arrays[f"{prefix}_key.{i}"], key[0].numpy(), atol=1e-4)
            np.testing.assert_allclose(arrays[f"{prefix}_value.{i}"], value[0].numpy(), atol=1e-4)
    for q in ("what colour came first?", "how many beeps?"):
        assert stream.ask(q) == model.answer(state, q)


def test_a_runtime_window_can_be_set_smaller(model_and_runtime):
    _, bundle = trained()
    runtime = Runtime.load(bundle, intra_op_threads=1, temporal_window=3)
    stream = runtime.create_stream()
    f, w = random_chunk(runtime.chunk, np.random.default_rng(2))
    for _ in range(10):
        stream.push(f, w)
    keep = 3 * runtime.dims.latents
    assert stream.cache_lengths() == {"temporal": keep, "cross": keep}
    assert stream.arrays()["cross_key.0"].shape[1] == keep
    with pytest.raises(ValueError, match="between 1 and"):
        Runtime.load(bundle, temporal_window=0)


def test_asking_does_not_change_the_stream(model_and_runtime):
    _, runtime = model_and_runtime
    stream = runtime.create_stream()
    f, w = random_chunk(runtime.chunk, np.random.default_rng(3))
    stream.push(f, w)
    before = stream.state
    first = stream.ask("what shape?")
    list(stream.ask_stream("what colour?", temperature=1.0, seed=0))
    assert stream.state is before and stream.ask("what shape?") == first


def test_reset_forgets_every_chunk(model_and_runtime):
    _, runtime = model_and_runtime
    stream = runtime.create_stream()
    f, w = random_chunk(runtime.chunk, np.random.default_rng(4))
    stream.push(f, w)
    answer = stream.ask("what shape?")
    stream.push(f, w)
    stream.reset()
    assert stream.chunks == 0 and stream.cache_lengths() == {"temporal": 0, "cross": 0}
    stream.push(f, w)
    assert stream.ask("what shape?") == answer
