"""`train-memory`: the memory past the window trained from cached features, the rest of the model frozen."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_model
from mirasol_edge.checkpoint import load_checkpoint, save_checkpoint
from mirasol_edge.cli import app
from mirasol_edge.data.dataset import SyntheticDataset
from mirasol_edge.data.synth import UNLABELLED
from mirasol_edge.train.memory import (POOLING_TARGETS, CachedClip, cache_features, memory_losses, pooling_loss, pooling_targets,
                                       some_questions, train_memory, with_summary)


def test_with_summary_keeps_every_trained_weight():
    window_only = tiny_model()
    model = with_summary(window_only, 4)
    assert model.cfg.summary_tokens == 4 and model.summary is not None
    before = window_only.state_dict()
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items() if name in before)


def test_the_fresh_summary_memory_is_drawn_from_its_seed_and_leaves_the_callers_random_state():
    window_only = tiny_model()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = (with_summary(window_only, 4, seed=s).summary.state_dict() for s in (5, 5, 6))
    assert torch.equal(torch.rand(1), expected_next)  # as if with_summary had drawn nothing
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["queries"], c["queries"])


def test_training_moves_only_the_summary_and_the_context_decoder(tmp_path):
    model = with_summary(tiny_model(temporal_window=2), 4)
    clips = cache_features(model, SyntheticDataset(model.cfg.chunk, 4, seed=3, questions_per_clip=None, durations=[4, 5]),
                           "caching", workers=0)
    assert {len(c.features) for c in clips} <= {4 * model.cfg.combiner.latents, 5 * model.cfg.combiner.latents}
    before = {n: p.clone() for n, p in model.named_parameters()}
    loss_before = memory_losses(model, clips, pooling_weight=1.0)["loss"].item()
    path = train_memory(model, clips, tmp_path / "run", minutes=0.05, batch_size=2, lr=3e-3, say=lambda _: None, pooling_weight=1.0)
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"summary", "context_decoder"}
    assert memory_losses(model, clips, pooling_weight=1.0)["loss"].item() < loss_before
    trained, _ = load_checkpoint(path)
    assert trained.cfg.summary_tokens == 4 and json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] >= 1


@pytest.mark.parametrize("summary_tokens", [0, 4])
def test_the_answer_loss_attends_once_per_clip_as_a_copy_per_question_would(summary_tokens):
    """Questions grouped per clip (padded to the most questions) score exactly what one row per question scores."""
    import torch.nn.functional as F

    from mirasol_edge.batching import IGNORE, text_batch
    from mirasol_edge.train.loss import answer_loss_sum, question_context

    model = tiny_model(temporal_window=2, summary_tokens=summary_tokens)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    features = torch.randn(3, 5 * m, d)  # (C, K*m, D): 5, 3 and 4 real chunks
    chunk_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]])
    qa = [[("how many beeps?", "3")], [("what colour is the first shape?", "red"), ("is the tone high or low?", "low")],
          [("how many shapes?", "2"), ("what shape?", "circle"), ("what came first?", "the beeps")]]
    batch = {"chunk_mask": chunk_mask, **text_batch(qa, model.cfg.max_text_len)}
    clip = batch["question_clip"]
    cross, cross_mask = question_context(model, features, chunk_mask)
    copied = [(k[clip], v[clip]) for k, v in cross]  # (B, h, n, hd): one copy per question
    logits = model.context_decoder(batch["tokens"], copied, cross_mask=cross_mask[clip][:, None, None, :])
    per_question = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(answer_loss_sum(model, features, batch), per_question)


def test_a_checkpoint_that_has_a_summary_is_refused(tmp_path):
    save_checkpoint(tmp_path / "memory.pt", tiny_model(summary_tokens=2))
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "memory.pt"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "already has a memory past the window" in result.output


@pytest.mark.parametrize("seconds", ["80", "200,80", "2,10", "a,b"])
def test_bad_long_clip_lengths_are_one_sentence(tmp_path, seconds):
    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--long-seconds", seconds])
    assert result.exit_code == 2 and "--long-seconds must be" in result.output


def test_an_unknown_summary_pooling_is_one_sentence(tmp_path):
    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--summary-pooling", "frame"])
    assert result.exit_code == 2 and "--summary-pooling must be latent or chunk" in result.output


def test_chunk_pooling_is_saved_with_the_weights(tmp_path):
    model = with_summary(tiny_model(), 4, "chunk")
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert loaded.cfg.summary_pooling == "chunk" and loaded.summary.entry_latents == model.cfg.combiner.latents


def test_pooling_targets_are_the_chunks_of_each_sound_the_first_chunk_and_each_colour():
    # per second: colour (0 red .. 4 white), shape, motion, sound (0 silence, 1-2 tone, 3-6 beeps, 7 noise)
    events = np.array([[0, 1, 2, 4], [0, 1, 2, UNLABELLED], [3, 0, 0, 2], [3, 0, 0, 7], [1, 2, 3, 0]])  # 1: no sound label
    targets = pooling_targets(events).numpy()
    assert POOLING_TARGETS == ("tone", "beeps", "noise", "first chunk",
                               "colour red", "colour green", "colour blue", "colour yellow", "colour white")
    assert targets.tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0],
                                [1, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]]


@pytest.mark.parametrize("pooling", ["latent", "chunk"])
def test_the_pooling_loss_teaches_each_supervised_token_to_pool_its_chunks(pooling):
    torch.manual_seed(0)
    model = tiny_model(summary_tokens=len(POOLING_TARGETS) + 1, summary_pooling=pooling)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    k = len(POOLING_TARGETS) + 1
    features = torch.randn(2, k * m, d)  # (C, K*m, D); the second clip has k - 3 real chunks
    chunk_mask = torch.tensor([[True] * k, [True] * (k - 3) + [False] * 3])
    targets = torch.zeros(2, len(POOLING_TARGETS), k, dtype=torch.bool)  # (C, E, K)
    for e in range(len(POOLING_TARGETS)):
        targets[0, e, e], targets[1, e, (e + 1) % (k - 3)] = True, True
    targets[1, 0] = False  # a sound that no second is labelled with: that token is not supervised there
    present = targets.any(-1)  # (C, E)
    chunk = torch.arange(k * m) // m

    def mass() -> torch.Tensor:  # (C, E): each supervised token's pooling weight on its chunks
        weights = model.summary.log_weights(features, chunk, chunk_mask.repeat_interleave(m, dim=1)).exp()
        per_chunk = m if pooling == "latent" else 1  # entries per chunk
        return (weights[:, : len(POOLING_TARGETS)] * targets.repeat_interleave(per_chunk, dim=2)).sum(-1)

    with torch.no_grad():
        assert torch.allclose(pooling_loss(model, features, chunk_mask, targets), -mass()[present].log().mean())
        assert float(mass().max()) < 0.5
    optimizer = torch.optim.Adam(model.summary.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        pooling_loss(model, features, chunk_mask, targets).backward()
        optimizer.step()
    with torch.no_grad():
        assert float(mass()[present].min()) > 0.9


def test_pooling_supervision_without_event_labels_is_refused(tmp_path):
    model = with_summary(tiny_model(temporal_window=2), 4)
    clip = CachedClip(torch.randn(4 * model.cfg.combiner.latents, model.cfg.d_model), [("how many beeps?", "2")])
    with pytest.raises(ValueError, match="event labels"):
        train_memory(model, [clip], tmp_path / "run", minutes=0.01, say=lambda _: None, pooling_weight=1.0)


def test_rehearsal_batches_visit_every_clip_once_per_pass():
    from mirasol_edge.train.memory import rehearsal_batches

    batches = rehearsal_batches(5, 3, np.random.default_rng(0))
    seen = [i for _ in range(10) for i in next(batches)]  # 30 draws: six passes over five clips
    assert all(len(set(seen[p * 5:(p + 1) * 5])) == 5 for p in range(6))


def test_every_step_rehearses_its_share_of_short_clips(tmp_path, monkeypatch):
    import mirasol_edge.train.memory as memory

    model = with_summary(tiny_model(temporal_window=2), 4)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    long = [CachedClip(torch.randn(5 * m, d), [("how many beeps?", "2")]) for _ in range(4)]
    short = [CachedClip(torch.randn(2 * m, d), [("how many beeps?", "1")]) for _ in range(3)]
    steps = []
    real = memory.memory_losses
    monkeypatch.setattr(memory, "memory_losses", lambda model, clips, *weights: steps.append(clips) or real(model, clips, *weights))
    path = train_memory(model, long, tmp_path / "run", minutes=0.02, batch_size=2, say=lambda _: None,
                        rehearsal=short, rehearsal_per_step=1)
    is_short = [[any(c is x for x in short) for c in s] for s in steps]  # per memory_losses call
    assert len(steps) >= 2 and is_short[0::2] == [[False, False]] * (len(steps) // 2) and is_short[1::2] == [[True]] * (len(steps) // 2)
    assert load_checkpoint(path)[1]["memory_training"]["rehearsal_per_step"] == 1


def test_short_clips_per_step_without_long_clips_is_one_sentence(tmp_path):
    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--long-clips", "0", "--short-per-step", "4"])
    assert result.exit_code == 2 and "--short-per-step must be" in result.output


def test_bf16_steps_train_and_record_their_precision(tmp_path):
    model = with_summary(tiny_model(temporal_window=2), 4)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    clips = [CachedClip(torch.randn(3 * m, d), [("how many beeps?", "2")]) for _ in range(2)]
    before = memory_losses(model, clips)["loss"].item()
    path = train_memory(model, clips, tmp_path / "run", minutes=0.02, batch_size=2, lr=3e-3, say=lambda _: None, amp="bf16")
    trained, ckpt = load_checkpoint(path)  # refuses non-finite weights
    assert ckpt["memory_training"]["amp"] == "bf16" and memory_losses(trained, clips)["loss"].item() < before


def test_an_unknown_memory_precision_is_one_sentence(tmp_path):
    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--amp", "fp16"])
    assert result.exit_code == 2 and "--amp must be off or bf16" in result.output


def test_some_questions_draws_that_many_of_the_clips_questions_in_order():
    qa = [(f"question {i}?", str(i)) for i in range(12)]
    clip = CachedClip(torch.zeros(4, 2), qa)
    drawn = [some_questions(clip, 4, np.random.default_rng(s)).qa for s in range(20)]
    assert all(len(d) == 4 and d == sorted(d, key=qa.index) and set(d) <= set(qa) for d in drawn)
    assert len({tuple(d) for d in drawn}) > 1  # afresh each draw
    assert some_questions(clip, 0, np.random.default_rng(0)).qa == qa and some_questions(clip, 20, np.random.default_rng(0)).qa == qa


def test_every_step_scores_the_drawn_number_of_questions_per_clip(tmp_path, monkeypatch):
    import mirasol_edge.train.memory as memory

    model = with_summary(tiny_model(temporal_window=2), 4)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    clips = [CachedClip(torch.randn(3 * m, d), [("how many beeps?", "2"), ("what sound?", "tone"), ("what colour?", "red")])
             for _ in range(4)]
    steps = []
    real = memory.memory_losses
    monkeypatch.setattr(memory, "memory_losses", lambda model, clips, *weights: steps.append(clips) or real(model, clips, *weights))
    path = train_memory(model, clips, tmp_path / "run", minutes=0.02, batch_size=2, say=lambda _: None, questions_per_clip=2)
    assert steps and all(len(c.qa) == 2 for s in steps for c in s)
    assert load_checkpoint(path)[1]["memory_training"]["questions_per_clip"] == 2


def test_a_negative_questions_per_clip_is_one_sentence(tmp_path):
    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--questions-per-clip", "-1"])
    assert result.exit_code == 2 and "--questions-per-clip must be" in result.output


def test_a_decoder_lr_scale_of_zero_leaves_the_context_decoder_as_trained(tmp_path):
    model = with_summary(tiny_model(temporal_window=2), 4)
    m, d = model.cfg.combiner.latents, model.cfg.d_model
    clips = [CachedClip(torch.randn(5 * m, d), [("how many beeps?", "2")]) for _ in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = train_memory(model, clips, tmp_path / "run", minutes=0.02, batch_size=2, say=lambda _: None, decoder_lr_scale=0.0)
    after = load_checkpoint(path)[0].state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("summary.") for k in moved)


def test_a_negative_decoder_lr_scale_is_one_sentence(tmp_path):
    save_checkpoint(tmp_path / "w.pt", tiny_model())
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--decoder-lr-scale", "-1"])
    assert result.exit_code == 2 and "--decoder-lr-scale must be" in result.output


def test_bf16_caching_keeps_float32_features_close_to_float32_caching():
    model = with_summary(tiny_model(temporal_window=2), 4)
    clips = SyntheticDataset(model.cfg.chunk, 2, seed=3, questions_per_clip=None, durations=[4])
    exact, bf16 = (cache_features(model, clips, "caching", workers=0, amp=amp) for amp in ("off", "bf16"))
    for a, b in zip(exact, bf16):
        assert b.features.dtype == torch.float32 and b.qa == a.qa
        assert (b.features - a.features).abs().max() <= 0.05 * a.features.abs().max()


def _steps_minutes(tmp_path, monkeypatch, total: str) -> dict:
    """Runs train-memory with --total-minutes on two short clips, the steps replaced by a probe: what they were given."""
    import mirasol_edge.train.memory as memory

    save_checkpoint(tmp_path / "w.pt", tiny_model(temporal_window=2))
    given = {}
    monkeypatch.setattr(memory, "train_memory", lambda model, clips, out, minutes, *a, caching=None, **k:
                        given.update(minutes=minutes, caching=caching) or out / "checkpoint.pt")
    result = CliRunner().invoke(app, ["train-memory", str(tmp_path / "w.pt"), "--out", str(tmp_path / "run"), "--long-clips", "0",
                                      "--short-clips", "2", "--workers", "0", "--minutes", "5", "--total-minutes", total])
    return {"result": result, **given}


def test_total_minutes_give_the_steps_what_caching_leaves(tmp_path, monkeypatch):
    run = _steps_minutes(tmp_path, monkeypatch, "2")
    assert run["result"].exit_code == 0, run["result"].output
    cached = run["caching"]["seconds"] / 60
    assert run["caching"]["amp"] == "off" and 0 <= cached < 1
    assert run["minutes"] == pytest.approx(2 - cached - 0.1, abs=0.01)  # not --minutes 5


def test_total_minutes_that_caching_uses_up_are_one_sentence(tmp_path, monkeypatch):
    run = _steps_minutes(tmp_path, monkeypatch, "0.001")
    assert run["result"].exit_code == 2 and "leaving no time to train" in run["result"].output and "minutes" not in run
