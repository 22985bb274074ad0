"""The procedural audio-visual QA dataset (mirasol_edge.data.synth) and manifests."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from mirasol_edge.data.manifest import ManifestRow, load_manifest, majority_baseline, write_manifest
from mirasol_edge.data.synth import (
    COLOURS,
    FAMILIES,
    TEMPLATES,
    TONE_HZ,
    allowed_durations,
    chance_accuracy,
    clip_seed,
    render_clip,
    sample_scene,
    write_dataset,
)
from mirasol_edge.runtime.chunking import ChunkSpec, chunk_clip

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b = render_clip(7, SPEC), render_clip(7, SPEC)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.waveform, b.waveform)
    assert a.qa == b.qa and a.events == b.events
    assert sample_scene(7, SPEC).qa == a.qa  # the cheap path gives the same questions
    others = [render_clip(s, SPEC) for s in (8, 9)]
    for c in others:
        assert c.events != a.events
        assert c.frames.shape != a.frames.shape or not np.array_equal(c.frames, a.frames)
    assert clip_seed(0, 1) != clip_seed(0, 2) != clip_seed(1, 1)


@pytest.mark.parametrize("spec", [SPEC, ChunkSpec(chunk_seconds=2.0, fps=2, frame_size=64, sample_rate=8_000)])
def test_shapes_dtypes_and_lengths(spec):
    families = set()
    for seed in range(20):
        c = render_clip(seed, spec, min_seconds=4, max_seconds=9)
        d = c.duration_seconds
        assert 4 <= d <= 9 and d % spec.chunk_seconds == 0  # whole chunks at 1 s and 2 s
        assert c.frames.shape == (d * spec.fps, spec.frame_size, spec.frame_size, 3)
        assert c.frames.dtype == np.uint8
        assert c.waveform.shape == (d * spec.sample_rate,) and c.waveform.dtype == np.float32
        assert np.abs(c.waveform).max() <= 1.0
        frames, wav = chunk_clip(c.frames, c.waveform, spec)
        assert frames.shape[0] == wav.shape[0] == d / spec.chunk_seconds
        for q in c.qa:
            tpl = TEMPLATES[q.template]
            assert q.family == tpl.family and q.answer in tpl.answers
            assert q.question.endswith("?") and q.question == q.question.lower()
            families.add(q.family)
        assert len({q.template for q in c.qa}) == len(c.qa)  # one question per template
    assert families == set(FAMILIES)


def test_bad_length_ranges_are_refused():
    with pytest.raises(ValueError, match="min_seconds"):
        render_clip(0, SPEC, min_seconds=2, max_seconds=6)
    with pytest.raises(ValueError, match="multiple of chunk_seconds"):
        allowed_durations(ChunkSpec(chunk_seconds=4.0), 5, 7)


def _tone_peak_hz(wav: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav))
    return float(np.argmax(spectrum) * sr / len(wav))


def test_answers_match_the_rendered_content():
    sr = SPEC.sample_rate
    for seed in range(30):
        c = render_clip(seed, SPEC)
        objs = [e for e in c.events if e.kind == "object"]
        sound = {e.kind: e for e in c.events if e.kind != "object"}
        # every frame of an object shows its colour over a large area (visible at 32 px)
        for o in objs:
            seg = c.frames[o.start * SPEC.fps: o.end * SPEC.fps].astype(int)
            hit = (np.abs(seg - np.array(COLOURS[o.colour])).sum(-1) < 10).mean(axis=(1, 2))
            assert hit.min() > 0.08, (seed, o)  # >= 80 of 1024 pixels
            # the shape's centroid moves in the stated direction inside each second
            first = c.frames[o.start * SPEC.fps: o.start * SPEC.fps + SPEC.fps].astype(int)
            mask = np.abs(first - np.array(COLOURS[o.colour])).sum(-1) < 10
            ys, xs = [np.array([np.nonzero(m)[i].mean() for m in mask]) for i in (0, 1)]
            step = {"left": -np.diff(xs), "right": np.diff(xs), "up": -np.diff(ys), "down": np.diff(ys)}[o.motion]
            assert (step > 2).all(), (seed, o.motion, xs, ys)
        # the tone's pitch, the beep count, and silence outside the three sounds
        tone = c.waveform[sound["tone"].start * sr: (sound["tone"].start + 1) * sr]
        peak = _tone_peak_hz(tone, sr)
        assert abs(np.log(peak / TONE_HZ[sound["tone"].pitch])) < 0.1
        beeps = c.waveform[sound["beeps"].start * sr: (sound["beeps"].start + 1) * sr]
        loud = (np.abs(beeps) > 0.05).astype(int)
        envelope = (np.convolve(loud, np.ones(80), "same") > 0).astype(int)
        onsets = int((np.diff(envelope) == 1).sum())
        assert onsets == sound["beeps"].count, seed
        busy = {e.start for e in sound.values()}
        for sec in range(c.duration_seconds):
            if sec not in busy:
                assert not c.waveform[sec * sr: (sec + 1) * sr].any()
        # a question's answer agrees with the events
        qa = {q.template: q for q in c.qa}
        at = lambda t: next(o for o in objs if o.start <= t < o.end)  # noqa: E731
        assert qa["av_noise_colour"].answer == at(sound["noise"].start).colour
        assert qa["count_objects"].answer == str(len(objs))
        assert qa["order_last"].answer == objs[-1].colour


def test_question_alone_is_near_chance():
    train = [q for i in range(300) for q in sample_scene(clip_seed(0, i), SPEC).qa]
    test = [q for i in range(300) for q in sample_scene(clip_seed(1, i), SPEC).qa]
    acc = majority_baseline(train, test)
    chance = defaultdict(list)
    for q in test:
        chance[q.family].append(chance_accuracy(q.template))
    assert set(acc) == set(FAMILIES)
    for family, a in acc.items():
        assert abs(a - np.mean(chance[family])) < 0.1, (family, a, np.mean(chance[family]))
    # within a template, every answer is common
    counts = defaultdict(lambda: defaultdict(int))
    for q in train + test:
        counts[q.template][q.answer] += 1
    for name, c in counts.items():
        n = sum(c.values())
        assert set(c) == set(TEMPLATES[name].answers)
        assert max(c.values()) / n < 1.6 / len(TEMPLATES[name].answers), (name, dict(c))


def test_write_dataset_and_load_manifest(tmp_path):
    av = pytest.importorskip("av")
    manifest = write_dataset(tmp_path / "ds", n_clips=3, seed=5, spec=SPEC, min_seconds=4, max_seconds=5, progress=False)
    rows = load_manifest(manifest)
    expected = [q for i in range(3) for q in sample_scene(clip_seed(5, i), SPEC, 4, 5).qa]
    assert [(r.question, r.answer, r.family, r.template) for r in rows] == [
        (q.question, q.answer, q.family, q.template) for q in expected
    ]
    raw = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert raw[0]["video"] == "clips/000000.mp4" and raw[0]["seed"] == clip_seed(5, 0)
    videos = sorted({r.video for r in rows})
    assert len(videos) == 3 and all(v.is_absolute() and v.is_file() for v in videos)
    for v in videos:
        with av.open(str(v)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
            assert container.streams.audio[0].rate == SPEC.sample_rate
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (SPEC.frame_size, SPEC.frame_size)
        with av.open(str(v)) as container:
            assert next(container.decode(audio=0)).samples > 0
    # write_manifest round trip: paths stay relative to the manifest
    again = write_manifest(rows, tmp_path / "ds" / "copy.jsonl")
    assert json.loads(again.read_text().splitlines()[0])["video"] == "clips/000000.mp4"
    assert load_manifest(again) == rows


def test_load_manifest_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    good = {"video": "a.mp4", "question": "what colour is the first shape?", "answer": "red"}
    path = tmp_path / "m.jsonl"

    path.write_text(json.dumps(good) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"m\.jsonl, line 3: not valid JSON"):
        load_manifest(path)

    path.write_text(json.dumps({"video": "a.mp4", "question": "q?"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: the row lacks 'answer'"):
        load_manifest(path)

    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "video": "clips/gone.mp4"}) + "\n")
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2: the video 'clips/gone\.mp4' does not exist"):
        load_manifest(path)
    assert len(load_manifest(path, check_files=False)) == 2

    rows = load_manifest(tmp_path / "m.jsonl", check_files=False)
    assert isinstance(rows[0], ManifestRow) and rows[0].family == "unknown"
