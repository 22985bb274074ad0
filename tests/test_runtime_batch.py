"""Many streams per run: batched stepping and batched answering give the one-by-one answers."""

import numpy as np
import pytest

from runtime_bundles import random_chunk, trained
from mirasol_edge.data.synth import render_clip
from mirasol_edge.runtime.chunking import chunk_clip
from mirasol_edge.runtime.session import Runtime

CLIPS = 104
MAX_STREAMS = 24  # streams stepped together; clips wait for a free place, then join


@pytest.fixture(scope="module")
def runtime():
    _, bundle = trained()
    return Runtime.load(bundle, intra_op_threads=1)


def clips(spec):
    """(frames, waveform, questions) of CLIPS synthetic clips of 4 to 9 chunks."""
    out = []
    for seed in range(2000, 2000 + CLIPS):
        clip = render_clip(seed, spec, min_seconds=4 + seed % 6, max_seconds=4 + seed % 6)
        frames, waveform = chunk_clip(clip.frames, clip.waveform, spec)
        out.append((frames, waveform, [q.question for q in clip.qa[:5]]))  # the trained templates
    return out


def one_by_one(runtime, clip) -> list[str]:
    frames, waveform, questions = clip
    stream = runtime.create_stream()
    for f, w in zip(frames, waveform):
        stream.push(f, w)
    return [stream.ask(q) for q in questions]


def test_streams_joining_and_leaving_answer_as_they_do_one_by_one(runtime):
    data = clips(runtime.chunk)
    assert len({len(f) for f, _, _ in data}) >= 6  # mixed lengths
    expected = [one_by_one(runtime, c) for c in data]
    waiting, active, answers, finished = list(range(CLIPS)), {}, {}, []
    while waiting or active:
        while waiting and len(active) < MAX_STREAMS:  # a new stream joins where one left
            active[waiting.pop(0)] = runtime.create_stream()
        ids = list(active)
        runtime.push_streams([active[i] for i in ids], [(data[i][0][active[i].chunks], data[i][1][active[i].chunks]) for i in ids])
        for i in ids:
            if active[i].chunks == len(data[i][0]):  # its clip ended: it leaves the batch
                finished.append((i, active.pop(i)))
        if len(finished) >= 8 or not (waiting or active):  # answer whoever is done, all questions in one call
            requests = [(stream, q) for i, stream in finished for q in data[i][2]]
            got = iter(runtime.ask_streams(requests))
            for i, _ in finished:
                answers[i] = [next(got) for _ in data[i][2]]
            finished = []
    assert [answers[i] for i in range(CLIPS)] == expected
    assert len({a for ans in expected for a in ans}) >= 8  # a trained model's varied answers, not one string


def test_one_stream_asked_several_questions_in_one_call_answers_each_as_alone(runtime):
    stream = runtime.create_stream()
    rng = np.random.default_rng(0)
    for _ in range(5):
        stream.push(*random_chunk(runtime.chunk, rng))
    questions = ["what colour came first?", "how many beeps?", "what shape?", "what colour came first?"]
    assert runtime.ask_streams([(stream, q) for q in questions]) == [stream.ask(q) for q in questions]


def test_a_push_that_fails_changes_no_stream(runtime):
    streams = [runtime.create_stream() for _ in range(3)]
    rng = np.random.default_rng(1)
    good = [random_chunk(runtime.chunk, rng) for _ in range(3)]
    runtime.push_streams(streams, good)
    before = [s.state for s in streams]
    bad = list(good)
    bad[1] = (good[1][0][:, :8], good[1][1])
    with pytest.raises(ValueError, match="video chunks must have shape"):
        runtime.push_streams(streams, bad)
    with pytest.raises(ValueError, match="appears twice"):
        runtime.push_streams([streams[0], streams[0]], good[:2])
    assert [s.state for s in streams] == before


def test_a_reset_stream_answers_as_a_new_one(runtime):
    spec = runtime.chunk
    first, second = [(*chunk_clip(c.frames, c.waveform, spec), [q.question for q in c.qa[:5]])
                     for c in (render_clip(seed, spec, 5, 6) for seed in (31, 32))]
    stream = runtime.create_stream()
    for f, w in zip(first[0], first[1]):
        stream.push(f, w)
    stream.reset()
    assert stream.chunks == 0
    for f, w in zip(second[0], second[1]):
        stream.push(f, w)
    assert [stream.ask(q) for q in second[2]] == one_by_one(runtime, second)


def test_io_binding_brings_each_batched_cache_to_the_host_once_when_streams_regroup():
    """Streams of one batch regrouped (some leave): each batched value is copied off the device once
    per gather, not once per stream (1 024 streams once made each step copy every cache 1 024 times)."""
    _, bundle = trained()
    runtime = Runtime.load(bundle, intra_op_threads=1, io_binding=True)
    rng = np.random.default_rng(0)
    streams = [runtime.create_stream() for _ in range(6)]
    runtime.push_streams(streams, [random_chunk(runtime.chunk, rng) for _ in streams])
    engine, copies = runtime.engine, []
    host = engine._host
    engine._host = lambda value: copies.append(id(value)) or host(value)
    batch = streams[0].state.batch
    values = [*batch.temporal.values(), *batch.cross.values(), *batch.summary.values()]
    runtime.push_streams(streams[::2], [random_chunk(runtime.chunk, rng) for _ in streams[::2]])
    assert sorted(copies) == sorted(id(v) for v in values)  # every cache it gathered from, once
