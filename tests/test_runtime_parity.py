"""The ONNX runtime answers exactly as the PyTorch model does (greedy), chunk by chunk."""

import numpy as np
import pytest
import torch

from runtime_bundles import TRAIN_QUESTIONS, clip_chunks, one_torch_thread, random_chunk, trained, untrained
from mirasol_edge.data.synth import TEMPLATES
from mirasol_edge.runtime.session import Runtime

CLIPS = 200
QUESTIONS_PER_CLIP = 2
FIRST_SEED = 24  # clips 24..47 were trained on, the rest are new


@pytest.fixture(scope="module")
def model_and_bundle():
    return trained()


def test_runtime_greedy_answers_equal_pytorch_on_200_synthetic_clips(model_and_bundle):
    model, bundle = model_and_bundle
    runtime = Runtime.load(bundle, intra_op_threads=1)
    spec = runtime.chunk
    pairs, mismatches = [], []
    with one_torch_thread():
        for seed in range(FIRST_SEED, FIRST_SEED + CLIPS):
            frames, waveform, qa = clip_chunks(seed, spec)
            stream, state = runtime.create_stream(), model.init_stream()
            for k in range(len(frames)):
                stream.push(frames[k], waveform[k])
                state = model.push_chunk(state, torch.from_numpy(waveform[k])[None], torch.from_numpy(frames[k])[None])
            for i in range(QUESTIONS_PER_CLIP):  # every trained template comes round
                q = qa[(seed * QUESTIONS_PER_CLIP + i) % TRAIN_QUESTIONS]
                expected, got = model.answer(state, q.question), stream.ask(q.question)
                pairs.append((expected, q.answer))
                if got != expected:
                    mismatches.append((seed, q.question, expected, got))
    assert not mismatches, f"{len(mismatches)} of {len(pairs)} answers differ, e.g. {mismatches[:3]}"
    answers = {a for a, _ in pairs}
    assert len(answers) >= 8, f"the trained model gives too few distinct answers to be a test: {answers}"
    words = {a for t in TEMPLATES.values() for a in t.answers}
    in_vocabulary = sum(a in words for a, _ in pairs) / len(pairs)
    assert in_vocabulary > 0.5, f"only {in_vocabulary:.0%} of the answers are answer words: is the model trained?"


def test_streamed_runtime_answers_equal_the_whole_clip_pytorch_answers(model_and_bundle):
    model, bundle = model_and_bundle
    runtime = Runtime.load(bundle, intra_op_threads=1)
    with one_torch_thread():
        for seed in range(1000, 1020):
            frames, waveform, qa = clip_chunks(seed, runtime.chunk)
            stream = runtime.create_stream()
            for f, w in zip(frames, waveform):
                stream.push(f, w)
            question = qa[0].question
            whole = model.answer_clip(frames.reshape(-1, *frames.shape[2:]), waveform.reshape(-1), question)
            assert stream.ask(question) == whole


def test_io_binding_engine_gives_the_numpy_engines_answers(model_and_bundle):
    _, bundle = model_and_bundle
    # window 3 < clip length: the rings wrap around
    runtimes = [Runtime.load(bundle, intra_op_threads=1, io_binding=binding, temporal_window=window)
                for window in (None, 3) for binding in (False, True)]
    assert [rt.io_binding for rt in runtimes] == [False, True, False, True]
    for seed in range(300, 310):
        frames, waveform, qa = clip_chunks(seed, runtimes[0].chunk)
        streams = [rt.create_stream() for rt in runtimes]
        for f, w in zip(frames, waveform):
            for s in streams:
                s.push(f, w)
        windowed, bound = streams[2].arrays(), streams[3].arrays()  # the wrapped rings, slot for slot
        assert windowed.keys() == bound.keys() and all(np.allclose(windowed[k], bound[k], atol=1e-6) for k in windowed)
        for q in qa[:2]:
            answers = [s.ask(q.question) for s in streams]
            assert answers[0] == answers[1] and answers[2] == answers[3]
            assert "".join(streams[1].ask_stream(q.question)) == answers[1]
        both = runtimes[1].ask_streams([(streams[1], q.question) for q in qa[:3]])  # batched, under IO binding
        assert both == [streams[0].ask(q.question) for q in qa[:3]]


def test_ttm_combiner_memory_is_carried_like_pytorch():
    model, bundle = untrained("ttm")
    runtime = Runtime.load(bundle, intra_op_threads=1)
    assert runtime.dims.memory == model.cfg.combiner.memory
    rng = np.random.default_rng(0)
    stream, state = runtime.create_stream(), model.init_stream()
    with one_torch_thread():
        for _ in range(6):
            f, w = random_chunk(runtime.chunk, rng)
            stream.push(f, w)
            state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
            np.testing.assert_allclose(stream.arrays()["memory"], state.memory[0].numpy(), atol=1e-4)
    prompt = model.prompt_tokens("what colour came first?")
    expected = model.generate(state.cross, prompt, max_new_tokens=12, chunks=state.chunks)[0].tolist()
    from mirasol_edge.runtime import tokenizer

    assert stream.ask("what colour came first?", max_new_tokens=12) == tokenizer.detokenize(expected)
