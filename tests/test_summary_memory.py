"""The memory past the window (model/summary.py): streamed state that equals the whole-clip pooling,
survives export and the runtime, and keeps a stream's memory bounded."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import random_chunks, tiny_model
from runtime_bundles import clip_chunks, one_torch_thread, random_chunk, trained_summary
from mirasol_edge.runtime import contract
from mirasol_edge.runtime.session import Runtime
from mirasol_edge.train.loss import question_context

WINDOW, TOKENS = 3, 4


@pytest.fixture(params=["latent", "chunk", "latent, ordered"])
def model(request):
    pooling, *ordered = request.param.split(", ")
    model = tiny_model(summary_tokens=TOKENS, temporal_window=WINDOW, summary_pooling=pooling, summary_order=TOKENS - 1 if ordered else 0)
    with torch.no_grad():  # sharper queries than at initialisation: the pooling weights differ chunk to chunk
        model.summary.queries.mul_(100)
    return model


def test_streamed_summary_equals_the_whole_clip_pooling(model):
    waveform, frames = random_chunks(model.cfg, batch=2, chunks=8)
    with torch.no_grad():
        _, features = model.encode(waveform, frames)
        state = model.init_stream(batch=2)
        for k in range(8):
            state = model.push_chunk(state, waveform[:, k], frames[:, k])
        torch.testing.assert_close(state.summary, model.summarize(features), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("after_window, chunks", [(False, 2 * WINDOW + 1), (True, WINDOW), (True, 2 * WINDOW + 1)])
def test_a_question_sees_the_same_in_a_stream_and_in_the_whole_clip(model, after_window, chunks):
    model.cfg = dataclasses.replace(model.cfg, summary_after_window=after_window)
    model.context_decoder.summary_after_window = after_window
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=chunks)  # 2 * WINDOW + 1: the ring has wrapped
    prompt = model.prompt_tokens("what colour is the first shape?")
    with torch.no_grad():
        _, features = model.encode(waveform, frames)
        cross, mask = question_context(model, features, torch.ones(1, chunks, dtype=torch.bool))
        whole = model.context_decoder(prompt, cross, cross_mask=mask[:, None, None, :])
        state = model.init_stream()
        for k in range(chunks):
            state = model.push_chunk(state, waveform[:, k], frames[:, k])
        empty = torch.zeros(1, model.cfg.n_heads, model.cfg.max_text_len, model.cfg.d_model // model.cfg.n_heads)
        streamed, _ = model.context_decoder.step(prompt, torch.zeros(1, dtype=torch.long), [(empty, empty)] * model.cfg.context_layers,
                                                 state.cross, torch.tensor([state.chunks]), model.stream_summary(state))
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=1e-4)


def test_the_summary_changes_the_answer_logits(model):
    """Not decoration: the context decoder attends to it (a changed summary moves the logits)."""
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=4)
    prompt = model.prompt_tokens("how many beeps?")
    with torch.no_grad():
        state = model.init_stream()
        for k in range(4):
            state = model.push_chunk(state, waveform[:, k], frames[:, k])
        empty = torch.zeros(1, model.cfg.n_heads, model.cfg.max_text_len, model.cfg.d_model // model.cfg.n_heads)
        args = (prompt, torch.zeros(1, dtype=torch.long), [(empty, empty)] * model.cfg.context_layers, state.cross, torch.tensor([4]))
        a, _ = model.context_decoder.step(*args, model.stream_summary(state))
        other = model.summary_keys_values(torch.randn_like(state.summary))
        b, _ = model.context_decoder.step(*args, other)
    assert (a - b).abs().max() > 1e-3


def test_after_the_window_the_summary_is_attended_only_once_a_chunk_has_left_it():
    model = tiny_model(summary_tokens=TOKENS, temporal_window=WINDOW, summary_after_window=True)
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=WINDOW + 1)
    prompt = model.prompt_tokens("how many beeps?")
    empty = torch.zeros(1, model.cfg.n_heads, model.cfg.max_text_len, model.cfg.d_model // model.cfg.n_heads)
    moved = []
    with torch.no_grad():
        state = model.init_stream()
        for k in range(WINDOW + 1):
            state = model.push_chunk(state, waveform[:, k], frames[:, k])
            args = (prompt, torch.zeros(1, dtype=torch.long), [(empty, empty)] * model.cfg.context_layers, state.cross,
                    torch.tensor([state.chunks]))
            a, _ = model.context_decoder.step(*args, model.stream_summary(state))
            b, _ = model.context_decoder.step(*args, model.summary_keys_values(torch.randn_like(state.summary)))
            moved.append(float((a - b).abs().max()))
    assert moved[:WINDOW] == [0.0] * WINDOW and moved[WINDOW] > 1e-3


def test_the_pooling_weights_differ_from_chunk_to_chunk(model):
    """Not a plain mean: with its queries a token weighs some chunks more than others."""
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=6)
    with torch.no_grad():
        _, features = model.encode(waveform, frames)
        scores, _ = model.summary._scores_values(features, torch.arange(features.shape[1])[None] // model.cfg.combiner.latents)  # (1, S, e)
    assert scores.std(dim=-1).min() > 0.1


def test_a_summary_stays_finite_and_exact_over_a_long_stream(model):
    """The online softmax against the whole-stream pooling after 500 chunks (log-denominators grow)."""
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    features = torch.randn(1, 500 * m, d)
    state = model.summary.initial(1)
    with torch.no_grad():
        for k in range(500):
            state = model.summary(state, features[:, k * m:(k + 1) * m], torch.tensor([k]))
        torch.testing.assert_close(state, model.summarize(features), atol=1e-4, rtol=1e-4)
    assert torch.isfinite(state).all()


def test_padding_chunks_leave_the_summary_as_it_was(model):
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=5)
    with torch.no_grad():
        _, features = model.encode(waveform, frames)
        padded = torch.cat([features, 100 * torch.randn(1, 2 * model.cfg.combiner.latents, model.cfg.d_model)], dim=1)
        mask = torch.tensor([[True] * 5 + [False] * 2])
        torch.testing.assert_close(model.summarize(padded, mask), model.summarize(features))


def test_a_question_attends_to_the_last_window_of_real_chunks(model):
    m = model.cfg.combiner.latents
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 2 + [False] * 6])
    chunk_of_feature = torch.arange(8.0).repeat_interleave(m)[None, :, None].expand(2, 8 * m, model.cfg.d_model)  # (2, K*m, D)
    window, window_mask = model.window(chunk_of_feature, mask)
    assert window[:, ::m, 0].tolist() == [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]  # WINDOW = 3 chunks
    assert window_mask[:, ::m].tolist() == [[True] * 3, [True, True, False]]


def test_chunk_pooling_weighs_whole_chunks_and_reads_every_latent():
    model = tiny_model(summary_tokens=TOKENS, summary_pooling="chunk")
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    features = torch.randn(1, 5 * m, d)  # (B, K*m, D)
    chunk = torch.arange(5 * m) // m
    with torch.no_grad():
        assert model.summary.log_weights(features, chunk).shape == (1, TOKENS, 5)  # one weight per chunk
        before = model.summarize(features)
        features[0, 3 * m + m - 1] += torch.randn(d)  # the last latent of chunk 3 only
        assert (model.summarize(features) - before).abs().max() > 1e-3


def test_window_only_configs_stay_as_they_were():
    config = tiny_model().cfg.to_dict()
    assert contract.bundle_config(config).get("summary_tokens") is None  # manifests of window-only bundles unchanged
    del config["summary_tokens"]  # a checkpoint or bundle from before the summary memory
    assert contract.config_faults(config) == [] and contract.Dims.from_config(config).summary == 0


@pytest.fixture(scope="module")
def summary_model_and_runtime():
    model, bundle = trained_summary()
    return model, Runtime.load(bundle, intra_op_threads=1)


def test_the_runtime_answers_as_pytorch_past_the_window(summary_model_and_runtime):
    """A trained tiny model with a 2-chunk window on clips of 4-5 chunks, and on 40-chunk streams."""
    model, runtime = summary_model_and_runtime
    assert runtime.dims.summary == TOKENS and runtime.temporal_window == 2
    answers = []
    with one_torch_thread():
        for seed in range(24, 54):
            frames, waveform, qa = clip_chunks(seed, runtime.chunk)
            stream = runtime.create_stream()
            for f, w in zip(frames, waveform):
                stream.push(f, w)
            for q in qa[:3]:
                whole = model.answer_clip(frames.reshape(-1, *frames.shape[2:]), waveform.reshape(-1), q.question)
                answers.append(whole)
                assert stream.ask(q.question) == whole, (seed, q.question)
        rng = np.random.default_rng(5)
        stream, state = runtime.create_stream(), model.init_stream()
        for _ in range(40):
            f, w = random_chunk(runtime.chunk, rng)
            stream.push(f, w)
            state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
        np.testing.assert_allclose(stream.arrays()["summary"], state.summary[0].numpy(), atol=1e-4)
        for q in ("what colour is the first shape?", "how many beeps are there?"):
            assert stream.ask(q) == model.answer(state, q)
    assert len(set(answers)) >= 4, f"the trained model gives too few distinct answers to be a test: {set(answers)}"


def test_a_1000_chunk_stream_keeps_its_memory_bounded(summary_model_and_runtime):
    _, runtime = summary_model_and_runtime
    stream = runtime.create_stream()
    rng = np.random.default_rng(6)
    chunks = [random_chunk(runtime.chunk, rng) for _ in range(4)]
    sizes = {}
    for k in range(1, 1001):
        stream.push(*chunks[k % 4])
        if k in (1, 2, 10, 1000):
            sizes[k] = {name: a.shape for name, a in stream.arrays().items()}
            assert sum(a.nbytes for a in stream.arrays().values()) == runtime.engine.state_bytes()
    assert sizes[1] == sizes[2] == sizes[10] == sizes[1000]
    d = runtime.dims
    assert sizes[1000]["summary"] == (TOKENS, d.width + 1) and "summary_key.0" not in sizes[1000]  # keys: made per question
    assert sizes[1000]["cross_key.0"] == (d.heads, 2 * d.latents, d.head_dim)
    assert np.isfinite(stream.arrays()["summary"]).all()


def test_the_summary_keys_and_values_are_made_per_question_not_per_chunk(summary_model_and_runtime, monkeypatch):
    _, runtime = summary_model_and_runtime
    assert list(runtime.sessions) == list(contract.component_names(TOKENS))  # summary_kv: the seventh graph, before the decoder
    assert not [o.name for o in runtime.sessions["context_cross_kv"].get_outputs() if o.name.startswith("summary_key")]
    runs = []
    run = runtime.engine._run
    monkeypatch.setattr(runtime.engine, "_run", lambda component, *args: runs.append(component) or run(component, *args))
    stream = runtime.create_stream()
    rng = np.random.default_rng(11)
    for _ in range(3):
        stream.push(*random_chunk(runtime.chunk, rng))
    assert "context_cross_kv" in runs and contract.SUMMARY_KV not in runs
    runs.clear()
    stream.ask("how many beeps are there?")
    assert runs.count(contract.SUMMARY_KV) == 1 and runs.index(contract.SUMMARY_KV) < runs.index("context_decoder")


def test_io_binding_streams_and_answers_as_numpy_past_the_window(summary_model_and_runtime):
    """Values kept as OrtValues between graphs (the GPU path, here on the CPU): streams of different ages batched,
    some past the window, regrouped; the summary and the answers are the numpy engine's."""
    _, runtime = summary_model_and_runtime
    bound = Runtime.load(runtime.bundle.path, intra_op_threads=1, io_binding=True)
    rng = np.random.default_rng(12)
    chunks = [random_chunk(runtime.chunk, rng) for _ in range(7)]
    plain, tied = [runtime.create_stream() for _ in range(3)], [bound.create_stream() for _ in range(3)]
    for k, chunk in enumerate(chunks):
        active = [i for i in range(3) if k < 3 + 2 * i]  # the streams end after 3, 5 and 7 chunks
        runtime.push_streams([plain[i] for i in active], [chunk] * len(active))
        bound.push_streams([tied[i] for i in active], [chunk] * len(active))
    for a, b in zip(plain, tied):
        np.testing.assert_allclose(b.arrays()["summary"], a.arrays()["summary"], atol=1e-5)
    questions = ["how many beeps are there?", "what colour is the first shape?", "which sound comes first?"]
    assert bound.ask_streams(list(zip(tied, questions))) == runtime.ask_streams(list(zip(plain, questions)))


def test_ordered_tokens_pool_their_mean_time_exactly():
    model = tiny_model(summary_tokens=TOKENS, summary_order=2)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    features = torch.randn(1, 6 * m, d)
    chunk = torch.arange(6 * m) // m
    with torch.no_grad():
        weights = model.summary.log_weights(features, chunk).exp()  # (1, S, K*m), the null chunk's share left out
        state = model.summarize(features)
    torch.testing.assert_close(state[0, :, d], (weights[0] * chunk / 64.0).sum(dim=-1))  # the time column, in TIME_UNITs
    torch.testing.assert_close(1 - torch.exp(-state[0, :, -1]), weights[0].sum(dim=-1))  # the mass off the null chunk


def test_an_ordered_token_carries_which_of_the_others_came_later():
    """Token 0 found its event at chunk 2 and token 1 at chunk 9: token 0 adds after[0, 1], token 1 before[1, 0],
    and swapping the two times swaps them; tokens past summary_order add nothing."""
    model = tiny_model(summary_tokens=TOKENS, summary_order=2)
    d, summary = model.cfg.d_model, model.summary

    def state(first, second):  # both tokens found all their weight (log_norm large) at one chunk each
        s = torch.zeros(1, TOKENS, d + 2)
        s[0, :, -1] = 20.0
        s[0, 0, d], s[0, 1, d] = first / 64.0, second / 64.0
        return s

    with torch.no_grad():
        early_first, late_first = summary.order_relations(state(2, 9)), summary.order_relations(state(9, 2))
    torch.testing.assert_close(early_first[0, 0], summary.after[0, 1].detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(early_first[0, 1], summary.before[1, 0].detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(late_first[0, 0], summary.before[0, 1].detach(), atol=1e-4, rtol=1e-4)
    assert early_first[0, 2:].abs().max() == 0
    tokens = summary.summary_tokens(state(2, 9)) - summary.summary_tokens(state(9, 2))
    assert tokens[0, :2].abs().min(dim=-1).values.max() > 0 and tokens[0, 2:].abs().max() == 0


def test_a_token_that_found_nothing_orders_nothing():
    model = tiny_model(summary_tokens=TOKENS, summary_order=2)
    d = model.cfg.d_model
    s = torch.zeros(1, TOKENS, d + 2)  # the state before the first chunk: all weight on the null chunk
    with torch.no_grad():
        assert model.summary.order_relations(s).abs().max() == 0


def _streamed_past_the_window(model, runtime, seed: int):
    """The same 2 * WINDOW + 2 random chunks pushed to a runtime stream and to a PyTorch one -> (stream, state)."""
    rng = np.random.default_rng(seed)
    stream, state = runtime.create_stream(), model.init_stream()
    for _ in range(2 * WINDOW + 2):
        f, w = random_chunk(runtime.chunk, rng)
        stream.push(f, w)
        state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
    return stream, state


def test_ordered_summaries_survive_export_and_the_runtime(tmp_path):
    from mirasol_edge.export import export_bundle

    model = tiny_model(summary_tokens=TOKENS, temporal_window=WINDOW, summary_order=TOKENS - 1, summary_after_window=True)
    with torch.no_grad():
        model.summary.queries.mul_(100)
    runtime = Runtime.load(export_bundle(model, tmp_path / "bundle"), intra_op_threads=1)  # each graph checked against PyTorch
    assert runtime.dims.summary_width == model.cfg.d_model + 2
    with one_torch_thread(), torch.no_grad():
        stream, state = _streamed_past_the_window(model, runtime, seed=9)
        np.testing.assert_allclose(stream.arrays()["summary"], state.summary[0].numpy(), atol=1e-4)
        keys = model.stream_summary(state)[0][0][0].numpy()
        summary = stream.arrays()["summary"][None]  # (S, Dsum) -> (1, S, Dsum)
        np.testing.assert_allclose(runtime.sessions["summary_kv"].run(["summary_key.0"], {"summary": summary})[0][0], keys, atol=1e-4)
        assert stream.ask("how many beeps are there?") == model.answer(state, "how many beeps are there?")


def test_chunk_pooling_survives_export_and_the_runtime(tmp_path):
    from mirasol_edge.export import export_bundle

    model = tiny_model(summary_tokens=TOKENS, temporal_window=WINDOW, summary_pooling="chunk")
    runtime = Runtime.load(export_bundle(model, tmp_path / "bundle"), intra_op_threads=1)  # each graph checked against PyTorch
    with one_torch_thread(), torch.no_grad():
        stream, state = _streamed_past_the_window(model, runtime, seed=7)
        np.testing.assert_allclose(stream.arrays()["summary"], state.summary[0].numpy(), atol=1e-4)
        assert stream.ask("how many beeps are there?") == model.answer(state, "how many beeps are there?")


def test_a_summary_attended_after_the_window_survives_export_and_the_runtime(tmp_path):
    from mirasol_edge.export import export_bundle

    model = tiny_model(summary_tokens=TOKENS, temporal_window=WINDOW, summary_after_window=True)
    with torch.no_grad():
        model.summary.queries.mul_(100)
    runtime = Runtime.load(export_bundle(model, tmp_path / "bundle"), intra_op_threads=1)  # each graph checked against PyTorch
    decoder = runtime.sessions["context_decoder"]
    d, layers, rng = runtime.dims, model.cfg.context_layers, np.random.default_rng(8)
    def cache(length):
        return rng.standard_normal((1, d.heads, length, d.head_dim)).astype(np.float32)
    fixed = {"tokens": np.array([[1, 40, 41]]), "text_position": np.zeros(1, np.int64),
             **{n: np.zeros((1, d.heads, model.cfg.max_text_len, d.head_dim), np.float32) for n in contract.cache_names("past", layers)},
             **{n: cache(WINDOW * d.latents) for n in contract.cache_names("cross", layers)}}
    def logits(chunks):  # the graph's answer to a fresh random summary
        summary = {n: cache(TOKENS) for n in contract.cache_names("summary", layers)}
        return decoder.run(["logits"], {**fixed, **summary, "chunks_seen": np.array([chunks])})[0]
    np.testing.assert_array_equal(logits(WINDOW), logits(WINDOW))  # in the window: the summary is not attended
    assert np.abs(logits(WINDOW + 1) - logits(WINDOW + 1)).max() > 1e-3
    stream, state = runtime.create_stream(), model.init_stream()
    question = "how many beeps are there?"
    with one_torch_thread(), torch.no_grad():
        for k in range(1, 2 * WINDOW + 2):  # before, at and past the window
            f, w = random_chunk(runtime.chunk, rng)
            stream.push(f, w)
            state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
            assert stream.ask(question) == model.answer(state, question), k
