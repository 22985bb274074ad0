"""One Runtime, many streams, many threads: the same answers as one stream after another."""

import threading

import numpy as np
import pytest

from runtime_bundles import clip_chunks, trained
from mirasol_edge.runtime.session import Runtime

STREAMS = 8


@pytest.fixture(scope="module")
def runtime():
    _, bundle = trained()
    return Runtime.load(bundle, intra_op_threads=1)


def run_stream(runtime, seed: int) -> tuple[list[str], tuple]:
    frames, waveform, qa = clip_chunks(seed, runtime.chunk)
    stream = runtime.create_stream()
    answers = []
    for f, w in zip(frames, waveform):
        stream.push(f, w)
        answers.append(stream.ask(qa[seed % 5].question))  # asking between pushes, too
    answers += [stream.ask(q.question) for q in qa[:5]]
    answers.append("".join(stream.ask_stream(qa[0].question, temperature=0.8, top_k=20, seed=seed)))
    return answers, stream.arrays()


def test_eight_streams_on_eight_threads_answer_as_they_do_one_after_another(runtime):
    seeds = [500 + i for i in range(STREAMS)]
    sequential = [run_stream(runtime, s) for s in seeds]
    results: list = [None] * STREAMS
    errors: list = []
    start = threading.Barrier(STREAMS)  # all threads run at once, not one after another

    def work(i: int) -> None:
        try:
            start.wait()
            results[i] = run_stream(runtime, seeds[i])
        except BaseException as e:  # reported below: an assert in a thread would vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (answers, cross), (expected, expected_cross) in zip(results, sequential):
        assert answers == expected
        assert cross.keys() == expected_cross.keys()
        for name in cross:
            np.testing.assert_array_equal(cross[name], expected_cross[name])
    assert len({tuple(a) for a, _ in sequential}) > 1  # the streams really differ


def test_pushes_to_one_stream_from_several_threads_all_count(runtime):
    stream = runtime.create_stream()
    frames, waveform, _ = clip_chunks(7, runtime.chunk)
    threads = [threading.Thread(target=stream.push, args=(frames[0], waveform[0])) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stream.chunks == 6
    assert stream.cache_lengths()["cross"] == 6 * runtime.bundle.latents_per_chunk


def test_a_shared_thread_pool_answers_as_a_pool_per_graph(runtime, tmp_path):
    """In a fresh process (the shared pool is process-wide): the same answers, and later sessions use it."""
    import json
    import subprocess
    import sys

    _, bundle = trained()
    frames, waveform, qa = clip_chunks(11, runtime.chunk)
    np.savez(tmp_path / "clip.npz", frames=frames, waveform=waveform)
    stream = runtime.create_stream()
    for f, w in zip(frames, waveform):
        stream.push(f, w)
    questions = [q.question for q in qa[:5]]
    code = f"""
import json, sys, numpy as np, onnxruntime as ort
from mirasol_edge.runtime.session import Runtime, session_options
rt = Runtime.load({str(bundle)!r}, thread_pool="shared")
clip = np.load({str(tmp_path / "clip.npz")!r})
s = rt.create_stream()
for f, w in zip(clip["frames"], clip["waveform"]):
    s.push(f, w)
other = ort.InferenceSession({str(bundle / "combiner.onnx")!r}, session_options(intra_op_threads=1), providers=["CPUExecutionProvider"])
print(json.dumps(rt.ask_streams([(s, q) for q in {questions!r}])))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [stream.ask(q) for q in questions]
