"""A window decoder (ModelConfig.window_decoder): the window-only model's context decoder, kept as it was, answers
while no chunk has left the window; the decoder trained with the summary answers past it. One cross cache serves both."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import tiny_model
from runtime_bundles import clip_chunks, one_torch_thread, random_chunk, routed, trained
from mirasol_edge.model import MirasolModel
from mirasol_edge.runtime import contract
from mirasol_edge.runtime.session import Runtime
from mirasol_edge.train.memory import CachedClip, train_memory, with_summary

WINDOW, TOKENS = 2, 4  # the runtime's and the PyTorch stream's window: streams pass it after two chunks
QUESTION = "how many beeps are there?"


def _routed(base: MirasolModel) -> MirasolModel:
    """`base` with a summary and a window decoder; its context decoder made to answer otherwise (a stand-in for stage 3)."""
    return routed(with_summary(base, TOKENS, after_window=True, window_decoder=True))


def _without_window_decoder(model: MirasolModel) -> MirasolModel:
    """The same weights, every question answered by the context decoder."""
    single = MirasolModel(dataclasses.replace(model.cfg, window_decoder=False)).eval()
    single.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("window_decoder.")})
    return single


@pytest.fixture(scope="module")
def base_and_routed():
    base, _ = trained()
    return base, _routed(base)


def test_clips_inside_the_window_answer_as_the_window_only_model(base_and_routed):
    base, routed = base_and_routed
    single = _without_window_decoder(routed)
    changed = 0
    with one_torch_thread():
        for seed in range(60, 70):
            frames, waveform, qa = clip_chunks(seed, base.cfg.chunk)  # 4-5 chunks, inside the 32-chunk window
            clip = frames.reshape(-1, *frames.shape[2:]), waveform.reshape(-1)
            for q in qa[:4]:
                want = base.answer_clip(*clip, q.question)
                assert routed.answer_clip(*clip, q.question) == want, (seed, q.question)
                changed += single.answer_clip(*clip, q.question) != want
    assert changed >= 20, "the context decoder answers as the window decoder: the routing would go unseen"


def test_past_the_window_the_context_decoder_answers_with_the_summary(base_and_routed):
    _, routed = base_and_routed
    single = _without_window_decoder(routed)
    rng = np.random.default_rng(4)
    state, alone = routed.init_stream(window=WINDOW), single.init_stream(window=WINDOW)
    with one_torch_thread():
        for k in range(1, 2 * WINDOW + 2):
            f, w = (torch.from_numpy(a)[None] for a in random_chunk(routed.cfg.chunk, rng))
            state, alone = routed.push_chunk(state, w, f), single.push_chunk(alone, w, f)
            if k > WINDOW:
                assert routed.answer(state, QUESTION) == single.answer(alone, QUESTION), k


def test_train_memory_leaves_the_window_decoder_and_the_shared_cross_projections_as_they_were(tmp_path):
    base = tiny_model(seed=1)
    model = with_summary(base, TOKENS, after_window=True, window_decoder=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    m = model.cfg.combiner.latents
    clips = [CachedClip(torch.randn(k * m, model.cfg.d_model, generator=g), [("how many beeps are there?", "2"), ("what colour?", "red")])
             for k in (40, 41, 42, 43)]  # longer than the 32-chunk window
    train_memory(model, clips, tmp_path, minutes=0.02, batch_size=2, say=lambda *_: None)
    after = model.state_dict()
    window = [k for k in after if k.startswith("window_decoder.")]
    assert window and all(torch.equal(after[k], before[k]) for k in window)
    shared = [k for k in after if k.startswith("context_decoder.") and ".cross_attn.key_value." in k]
    assert shared and all(torch.equal(after[k], before[k]) for k in shared)
    assert model.window_decoder.blocks[0].cross_attn.key_value is model.context_decoder.blocks[0].cross_attn.key_value
    trained_keys = [k for k in after if k.startswith("context_decoder.") and k not in shared]
    assert any(not torch.equal(after[k], before[k]) for k in trained_keys), "the context decoder did not train"


@pytest.fixture(scope="module")
def routed_runtime(base_and_routed, tmp_path_factory):
    from mirasol_edge.export import export_bundle

    _, routed = base_and_routed
    path = export_bundle(routed, tmp_path_factory.mktemp("window-decoder") / "bundle")  # each graph checked against PyTorch
    return routed, Runtime.load(path, intra_op_threads=1, temporal_window=WINDOW)


def test_the_bundle_has_the_window_decoder_before_the_context_decoder(routed_runtime):
    _, runtime = routed_runtime
    names = list(runtime.sessions)
    assert names == list(contract.component_names(TOKENS, window_decoder=True)) and len(names) == 8
    inputs = {i.name for i in runtime.sessions[contract.WINDOW_CONTEXT_DECODER].get_inputs()}
    assert "cross_key.0" in inputs and not any(n.startswith("summary") for n in inputs)
    assert runtime.bundle.manifest["format"] == contract.FORMAT


def test_the_runtime_routes_each_question_as_pytorch_does(routed_runtime, monkeypatch):
    routed, runtime = routed_runtime
    runs: list[str] = []
    run = runtime.engine._run
    monkeypatch.setattr(runtime.engine, "_run", lambda component, *args: runs.append(component) or run(component, *args))
    rng = np.random.default_rng(8)
    stream, state = runtime.create_stream(), routed.init_stream(window=WINDOW)
    with one_torch_thread(), torch.no_grad():
        for k in range(1, 2 * WINDOW + 2):  # inside, at and past the window
            f, w = random_chunk(runtime.chunk, rng)
            stream.push(f, w)
            state = routed.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
            runs.clear()
            assert stream.ask(QUESTION) == routed.answer(state, QUESTION), k
            inside = k <= WINDOW
            assert (contract.WINDOW_CONTEXT_DECODER in runs) == inside and ("context_decoder" in runs) != inside, k
            assert (contract.SUMMARY_KV in runs) != inside, k  # the summary's keys only where they are attended


def test_streams_inside_and_past_the_window_are_answered_together_as_alone(routed_runtime):
    _, runtime = routed_runtime
    rng = np.random.default_rng(9)
    chunks = [random_chunk(runtime.chunk, rng) for _ in range(5)]
    streams = [runtime.create_stream() for _ in range(3)]
    for k, chunk in enumerate(chunks):
        active = [i for i in range(3) if k < 1 + 2 * i]  # 1, 3 and 5 chunks: inside, past, past
        runtime.push_streams([streams[i] for i in active], [chunk] * len(active))
    questions = [QUESTION, "what colour is the first shape?", QUESTION]
    together = runtime.ask_streams(list(zip(streams, questions)))
    assert together == [s.ask(q) for s, q in zip(streams, questions)]


def test_a_window_decoder_needs_a_summary_and_is_a_bool():
    config = tiny_model().cfg.to_dict()
    assert contract.bundle_config(config).get("window_decoder") is None  # manifests without one stay as they were
    assert contract.config_faults({**config, "window_decoder": True}) == [
        "config window_decoder needs summary_tokens: it answers while the summary is not attended"]
    assert contract.config_faults({**config, "summary_tokens": 4, "window_decoder": 1}) == ["config window_decoder is 1, not a bool"]
    assert contract.config_faults({**config, "summary_tokens": 4, "window_decoder": True}) == []
    with pytest.raises(AssertionError, match="window decoder"):
        tiny_model(summary_tokens=TOKENS, window_decoder=True)  # the summary attended always: nothing left to answer


def test_a_window_decoder_without_the_summary_after_the_window_is_one_sentence(tmp_path):
    from typer.testing import CliRunner

    from mirasol_edge.checkpoint import save_checkpoint
    from mirasol_edge.cli import app

    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--window-decoder"])
    assert result.exit_code == 2 and "add --summary-after-window" in result.output
