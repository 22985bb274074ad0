"""Off-grid synthetic clips (render_clip(..., off_grid=True)): events at sub-second times across chunk boundaries."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mirasol_edge.data.synth import COLOURS, SOUND_CLASS_KINDS, UNLABELLED, render_clip, sample_scene, second_events, write_dataset
from mirasol_edge.data.synth.scene import OFF_GRID_MARGIN, OFF_GRID_OBJECT_MIN, OFF_GRID_SOUND_GAP
from mirasol_edge.runtime.chunking import ChunkSpec

SPEC = ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=32, sample_rate=16_000)
EPS = 1e-6

# sha256 of render_clip(seed, SPEC) for seeds 0-5 (frames, waveform, events, qa, second_events),
# recorded with the code before off-grid mode existed: the default output must not change.
DEFAULT_HASH = "6a80ddd299c5a0e95fca2a8bd6b4a056ac84dd2eaf4e181ab3e35ff8b62f9b9b"


def test_default_output_is_unchanged():
    h = hashlib.sha256()
    for seed in range(6):
        c = render_clip(seed, SPEC)
        h.update(c.frames.tobytes())
        h.update(c.waveform.tobytes())
        h.update(repr((c.duration_seconds, c.events, c.qa)).encode())
        h.update(second_events(c).tobytes())
    assert h.hexdigest() == DEFAULT_HASH
    assert render_clip(3, SPEC, off_grid=False).events == render_clip(3, SPEC).events


def _check_scene(s, spec):
    objs = s.objects
    sounds = {e.kind: e for e in s.events if e.kind != "object"}
    # shapes: one at a time, in order, whole frames, long enough, inside the clip
    for a, b in zip(objs, objs[1:]):
        assert a.end <= b.start + EPS
    for o in objs:
        assert o.end - o.start >= OFF_GRID_OBJECT_MIN - EPS
        for t in (o.start, o.end):
            assert abs(t * spec.fps - round(t * spec.fps)) < EPS
    assert 0 <= objs[0].start < 1 and objs[-1].end <= s.duration_seconds + EPS
    # sounds: each inside one shape's time on screen, no overlap, silence between, starts apart
    for e in sounds.values():
        host = [o for o in objs if o.start + OFF_GRID_MARGIN - EPS <= e.start and e.end <= o.end - OFF_GRID_MARGIN + EPS]
        assert len(host) == 1, (s.seed, e)
    ordered = sorted(sounds.values(), key=lambda e: e.start)
    for a, b in zip(ordered, ordered[1:]):
        assert b.start - a.end >= OFF_GRID_SOUND_GAP - EPS and b.start - a.start >= 0.25 - EPS
    beeps = sounds["beeps"]
    assert len(beeps.onsets) == beeps.count and beeps.onsets[0] == beeps.start
    assert abs(beeps.end - (beeps.onsets[-1] + 0.1)) < EPS
    assert all(b - a >= 0.2 - EPS for a, b in zip(beeps.onsets, beeps.onsets[1:]))  # 0.1 s beep + >= 0.1 s silence
    # answers agree with the events
    qa = {q.template: q.answer for q in s.qa}
    first = min(objs, key=lambda o: o.start)
    assert (qa["video_colour"], qa["video_shape"], qa["video_motion"]) == (first.colour, first.shape, first.motion)
    assert qa["order_last"] == max(objs, key=lambda o: o.start).colour
    assert qa["audio_beeps"] == str(beeps.count) and qa["count_objects"] == str(len(objs))
    assert qa["audio_pitch"] == sounds["tone"].pitch
    at = lambda e: next(o for o in objs if o.start <= e.start < o.end)  # noqa: E731
    assert qa["av_noise_colour"] == at(sounds["noise"]).colour
    assert qa["av_beep_shape"] == at(beeps).shape and qa["av_tone_motion"] == at(sounds["tone"]).motion
    assert qa["order_sounds"] == ordered[0].kind or qa["order_sounds"] == ordered[1].kind
    labels = second_events(s)
    assert labels.shape == (s.duration_seconds, 4)


@pytest.mark.parametrize("spec", [SPEC, ChunkSpec(chunk_seconds=2.0, fps=2, frame_size=32, sample_rate=8_000),
                                  ChunkSpec(chunk_seconds=1.0, fps=5, frame_size=32, sample_rate=16_000)])
def test_off_grid_events_are_off_the_grid_and_answers_unique(spec):
    off_second = straddles = late_start = 0
    for seed in range(60):
        s = sample_scene(seed, spec, off_grid=True)
        assert s.off_grid and s.duration_seconds % spec.chunk_seconds == 0
        _check_scene(s, spec)
        c = spec.chunk_seconds
        off_second += any(e.start != int(e.start) for e in s.events)
        short = [e for e in s.events if e.end - e.start < c]  # all sounds, some shapes
        straddles += any(np.floor(e.start / c + EPS) < np.ceil(e.end / c - EPS) - 1 for e in short)  # 2 chunks
        late_start += s.objects[0].start > 0
    assert off_second >= 50 and straddles >= 10 and late_start >= 10, (off_second, straddles, late_start)
    assert sample_scene(1, spec, off_grid=True).events == sample_scene(1, spec, off_grid=True).events


def test_off_grid_beeps_are_labelled_where_their_count_is_known():
    split = 0
    for seed in range(200):
        s = sample_scene(seed, SPEC, off_grid=True)
        beeps = s.sound("beeps")
        seconds = sorted({int(np.floor(t + EPS)) for t in beeps.onsets} | {int(np.floor(beeps.end - EPS))})
        known = int(np.floor(beeps.onsets[-1] + 0.05))  # the second that holds the last beep's middle
        sound = second_events(s)[:, 3]
        assert sound[known] == SOUND_CLASS_KINDS.index("beeps") - 1 + beeps.count
        assert (sound == sound[known]).sum() == 1  # nowhere else
        for sec in seconds[: seconds.index(known)]:  # earlier seconds: another sound in them, or no label
            assert sound[sec] == UNLABELLED or SOUND_CLASS_KINDS[sound[sec]] in ("tone", "noise")
        split += known > seconds[0]
    assert split >= 40, split


def test_off_grid_render_matches_events():
    sr, fps = SPEC.sample_rate, SPEC.fps
    for seed in range(12):
        c = render_clip(seed, SPEC, off_grid=True)
        assert c.frames.shape[0] == c.duration_seconds * fps and c.waveform.shape == (c.duration_seconds * sr,)
        objs = [e for e in c.events if e.kind == "object"]
        sound = {e.kind: e for e in c.events if e.kind != "object"}
        t = (np.arange(c.frames.shape[0]) + 0.5) / fps
        for i, ti in enumerate(t):
            on = [o for o in objs if o.start <= ti < o.end]
            frame = c.frames[i].astype(int)
            if not on:  # blank: background only, one colour
                assert (frame == frame[0, 0]).all(), (seed, i)
            else:
                hit = (np.abs(frame - np.array(COLOURS[on[0].colour])).sum(-1) < 10).mean()
                assert hit > 0.08, (seed, i, on[0])
        # audio: silent outside the three sounds; the beep count is heard
        loud = np.zeros(len(c.waveform), bool)
        for e in sound.values():
            loud[int(round(e.start * sr)): int(round(e.end * sr))] = True
        assert not c.waveform[~loud].any(), seed
        b = sound["beeps"]
        seg = c.waveform[int(round(b.start * sr)): int(round(b.end * sr))]
        env = (np.convolve((np.abs(seg) > 0.05).astype(int), np.ones(80), "same") > 0).astype(int)
        assert int((np.diff(np.concatenate([[0], env])) == 1).sum()) == b.count, seed


def test_write_dataset_off_grid_notes_it(tmp_path):
    pytest.importorskip("av")
    write_dataset(tmp_path / "on", 1, 5, SPEC, 4, 4, progress=False)
    assert "off_grid" not in json.loads((tmp_path / "on" / "spec.json").read_text())
    manifest = write_dataset(tmp_path / "off", 1, 5, SPEC, 4, 4, progress=False, off_grid=True)
    assert json.loads((tmp_path / "off" / "spec.json").read_text())["off_grid"] is True
    assert manifest.read_text().strip()


def test_a_training_set_mixes_off_grid_clips_at_the_fraction_asked():
    from mirasol_edge.data.dataset import SyntheticDataset

    spec = ChunkSpec(1.0, 4, 32, 16_000)
    plain, mixed = SyntheticDataset(spec, 40, seed=5, durations=[4]), SyntheticDataset(spec, 40, seed=5, durations=[4], off_grid=0.5)
    changed = 0
    for i in range(40):
        a, b = plain[i][0], mixed[i][0]
        changed += not np.array_equal(a.frames, b.frames)
        assert a.frames.shape == b.frames.shape
    assert 10 <= changed <= 30  # about half; a clip not drawn off the grid is the plain one
    with pytest.raises(ValueError, match="off-grid fraction"):
        SyntheticDataset(spec, 4, off_grid=1.5)


def test_near_change_puts_sounds_against_shape_changes_and_keeps_every_answer_unique():
    from mirasol_edge.data.synth.scene import NEAR_CHANGE, draw_scene

    def near(scene) -> int:
        changes = {t for o in scene.objects for t in (o.start, o.end)}
        return sum(min(abs(t - c) for c in changes for t in (e.start, e.end)) < NEAR_CHANGE + EPS
                   for e in scene.events if e.kind != "object")

    counts = {}
    for p in (0.0, 1.0):
        counts[p] = 0
        for seed in range(100):
            s = draw_scene(np.random.default_rng(seed), seed, SPEC, 4, 12, True, near_change=p)
            _check_scene(s, SPEC)
            counts[p] += near(s)
    assert counts[1.0] >= 2 * counts[0.0], counts  # 0.0: where a uniform placement happens to fall
    # 0 draws exactly what it always drew: the held-out sets stay as they were
    assert draw_scene(np.random.default_rng(4), 4, SPEC, 4, 12, True, near_change=0.0).events == sample_scene(4, SPEC, off_grid=True).events
    from mirasol_edge.data.dataset import SyntheticDataset

    with pytest.raises(ValueError, match="near-change fraction"):
        SyntheticDataset(SPEC, 4, off_grid=0.5, near_change=1.5)
