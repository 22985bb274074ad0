"""Training data: synthetic clips on the fly, manifest files through runtime.media, clip batches."""

import numpy as np
import pytest
import torch

from conftest import tiny_model
from mirasol_edge.batching import IGNORE, collate, collate_clips
from mirasol_edge.data.dataset import ManifestDataset, SyntheticDataset
from mirasol_edge.data.synth import UNLABELLED, clip_seed, render_clip, second_events, write_dataset
from mirasol_edge.train import GlobalBatchSampler, clip_batch_loss

SPEC = tiny_model().cfg.chunk  # 1 s chunks, 4 fps, 32x32


def test_synthetic_items_are_deterministic_per_index_and_seed():
    a, b = SyntheticDataset(SPEC, 100, seed=3, questions_per_clip=3), SyntheticDataset(SPEC, 100, seed=3, questions_per_clip=3)
    for i in (0, 7):
        x, y = a[i], b[i]
        assert [(e.question, e.answer) for e in x] == [(e.question, e.answer) for e in y]
        np.testing.assert_array_equal(x[0].frames, y[0].frames)
        np.testing.assert_array_equal(x[0].waveform, y[0].waveform)
    other = SyntheticDataset(SPEC, 100, seed=4, questions_per_clip=3)[0]
    assert not np.array_equal(other[0].frames[:1], a[0][0].frames[:1]) or other[0].question != a[0][0].question


def test_an_item_is_distinct_questions_of_one_rendered_clip():
    ds = SyntheticDataset(SPEC, 10, seed=0, questions_per_clip=4)
    item = ds[2]
    clip = render_clip(clip_seed(0, 2), SPEC, ds.duration(2), ds.duration(2))
    assert len(item) == 4 and len({e.question for e in item}) == 4
    assert all(e.frames is item[0].frames for e in item)  # one clip's arrays, shared
    qa = {q.question: q.answer for q in clip.qa}
    assert all(qa[e.question] == e.answer for e in item)
    assert item[0].frames.shape == (clip.duration_seconds, *item[0].frames.shape[1:])  # (K, F, H, W, 3), 1 s chunks
    assert len(SyntheticDataset(SPEC, 10, questions_per_clip=None)[0]) >= 11  # all questions


def test_a_group_of_items_shares_one_length():
    ds = SyntheticDataset(SPEC, 64, durations=[4, 8], group=8)
    lengths = [ds.duration(i) for i in range(64)]
    assert all(len(set(lengths[g:g + 8])) == 1 for g in range(0, 64, 8))
    assert set(lengths) == {4, 8}
    with pytest.raises(ValueError, match="weight"):
        SyntheticDataset(SPEC, 1, durations=[4, 8], weights=[1])


def test_ranks_take_contiguous_slices_of_each_global_batch():
    one = iter(GlobalBatchSampler(10**6, 8))
    ranks = [iter(GlobalBatchSampler(10**6, 8, rank=r, world=2)) for r in range(2)]
    for _ in range(3):
        assert next(one) == next(ranks[0]) + next(ranks[1])
    shuffled = iter(GlobalBatchSampler(5, 5, shuffle=True, seed=1))
    first, second = next(shuffled), next(shuffled)
    assert sorted(first) == [0, 1, 2, 3, 4] and sorted(second) == [5, 6, 7, 8, 9]  # epoch 1 = items 5..9
    with pytest.raises(ValueError, match="evenly"):
        GlobalBatchSampler(10, 6, world=4)


def test_a_clip_encoded_once_for_its_questions_gives_the_loss_of_one_row_per_question():
    model = tiny_model(seed=1)
    ds = SyntheticDataset(SPEC, 10, seed=0, questions_per_clip=3, durations=[4, 5])
    items = [ds[i] for i in range(3)]
    shared = collate_clips(items, model.cfg)
    assert shared["frames"].shape[0] == 3 and shared["tokens"].shape[0] == 9
    assert shared["question_clip"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    flat = collate([e for item in items for e in item], model.cfg)
    assert flat["question_clip"].tolist() == list(range(9))
    reference = clip_batch_loss(model, flat)
    ours = clip_batch_loss(model, shared)
    for key in ("loss", "answer_loss", "latent_loss"):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-5, atol=1e-6)


def test_manifest_items_are_decoded_from_the_files(tmp_path):
    from mirasol_edge.runtime.media import read_clip

    manifest = write_dataset(tmp_path / "ds", n_clips=2, seed=5, spec=SPEC, min_seconds=4, max_seconds=5, progress=False)
    ds = ManifestDataset(manifest, SPEC, questions_per_clip=2)
    assert len(ds) == 2
    item = ds[1]
    frames, waveform = read_clip(ds.videos[1], SPEC)
    np.testing.assert_array_equal(item[0].frames, frames)
    np.testing.assert_array_equal(item[0].waveform, waveform)
    questions = {r.question for r in ds.rows[1]}
    assert len(item) == 2 and {e.question for e in item} <= questions
    assert [e.question for e in ds[1]] == [e.question for e in item]  # deterministic
    again = ds[len(ds) + 1]  # the next epoch's draw of the same file
    np.testing.assert_array_equal(again[0].frames, frames)


def test_event_labels_follow_the_events_and_pad_with_ignore():
    from mirasol_edge.data.synth import COLOURS, EVENT_CLASSES, SHAPES

    clip = render_clip(clip_seed(0, 4), SPEC, 4, 4)
    labels = second_events(clip)  # (seconds, 4)
    first = next(e for e in clip.events if e.kind == "object")
    beeps = next(e for e in clip.events if e.kind == "beeps")
    assert labels.shape == (4, 4)
    assert labels[0, 0] == list(COLOURS).index(first.colour) and labels[0, 1] == SHAPES.index(first.shape)
    assert labels[beeps.start, 3] == 2 + beeps.count and (labels[:, 3] == 0).sum() == 1  # 3 sounds in 4 s
    assert (labels < np.array(EVENT_CLASSES)).all()
    model = tiny_model(event_classes=EVENT_CLASSES, event_loss_weight=1.0)
    ds = SyntheticDataset(SPEC, 10, seed=0, questions_per_clip=1, durations=[4, 5], group=1)
    items = [ds[i] for i in range(4)]
    batch = collate_clips(items, model.cfg)
    k = batch["chunk_mask"].sum(1)
    assert batch["chunk_events"].shape == (4, int(k.max()), 4)
    assert ((batch["chunk_events"] == IGNORE).all(-1) == ~batch["chunk_mask"]).all()  # padding chunks only


def test_unlabelled_events_are_not_scored():
    from mirasol_edge.data.synth import EVENT_CLASSES

    model = tiny_model(event_classes=EVENT_CLASSES, event_loss_weight=1.0)
    ds = SyntheticDataset(SPEC, 40, seed=0, questions_per_clip=1, durations=[4, 5], group=1, off_grid=1.0)
    items = [ds[i] for i in range(40)]
    unlabelled = [i for i, clip in enumerate(items) if (clip[0].events == UNLABELLED).any()]
    assert unlabelled  # off-grid beeps split over two seconds
    batch = collate_clips([items[i] for i in unlabelled], model.cfg)
    for j, i in enumerate(unlabelled):
        events = items[i][0].events
        assert (batch["chunk_events"][j, : len(events)].numpy() == np.where(events == UNLABELLED, IGNORE, events)).all()


def test_the_event_loss_is_added_with_its_weight():
    from mirasol_edge.data.synth import EVENT_CLASSES

    model = tiny_model(seed=1, event_classes=EVENT_CLASSES, event_loss_weight=0.5)
    ds = SyntheticDataset(SPEC, 10, seed=0, questions_per_clip=2)
    out = clip_batch_loss(model, collate_clips([ds[0], ds[1]], model.cfg))
    assert out["event_loss"] > 0
    torch.testing.assert_close(out["loss"], out["answer_loss"] + model.cfg.latent_loss_weight * out["latent_loss"] + 0.5 * out["event_loss"])
