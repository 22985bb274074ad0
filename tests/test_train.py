"""The training loop: loss goes down, checkpoint + loss curve, resume, schedule."""

import json

import pytest
import torch

from mirasol_edge.checkpoint import load_checkpoint
from mirasol_edge.train import CHECKPOINT, LOG, LOSS_PLOT, TrainConfig, learning_rate, train

FAST = dict(preset="tiny", batch_size=4, questions_per_clip=3, durations=(4,), lr=3e-3, warmup_steps=2, log_every=1)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead on a shared CPU
    yield
    torch.set_num_threads(threads)


def test_a_few_steps_lower_the_loss_and_write_checkpoint_and_curve(tmp_path):
    lines = []
    path = train(TrainConfig(steps=15, **FAST), tmp_path / "run", log=lines.append)
    assert path == tmp_path / "run" / CHECKPOINT
    model, ckpt = load_checkpoint(path)
    assert ckpt["step"] == 15 and len(ckpt["loss_history"]) == 15
    assert TrainConfig.from_dict(ckpt["train_config"]) == TrainConfig(steps=15, **FAST)
    assert model.cfg.d_model == 32  # the tiny preset's config travels in the checkpoint
    history = ckpt["loss_history"]
    assert sum(history[-3:]) / 3 < 0.85 * sum(history[:3]) / 3
    png = (tmp_path / "run" / LOSS_PLOT).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (tmp_path / "run" / LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 16)) and all(r["clips_per_s"] > 0 for r in log)
    assert any("clips/s" in line for line in lines)


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path):
    tcfg = TrainConfig(steps=6, **FAST)
    straight = train(tcfg, tmp_path / "straight", log=lambda _: None)

    def stop_at_3(line):
        if line.startswith("step 3/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tcfg, tmp_path / "resumed", log=stop_at_3)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)[1]["step"] == 3
    lines = []
    train(tcfg, tmp_path / "resumed", resume=True, log=lines.append)
    assert "resuming" in lines[0] and "at step 3" in lines[0]
    a, ca = load_checkpoint(straight)
    b, cb = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert cb["step"] == 6 and cb["loss_history"] == pytest.approx(ca["loss_history"], rel=1e-5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_resume_refuses_a_missing_or_different_run(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume"):
        train(TrainConfig(steps=1, **FAST), tmp_path / "none", resume=True)
    train(TrainConfig(steps=1, **FAST), tmp_path / "run", log=lambda _: None)
    with pytest.raises(ValueError, match="different model configuration"):
        train(TrainConfig(steps=2, **{**FAST, "combiner": "ttm"}), tmp_path / "run", resume=True)


def test_the_time_budget_stops_the_run(tmp_path):
    path = train(TrainConfig(minutes=0.02, **FAST), tmp_path / "run", log=lambda _: None)
    ckpt = load_checkpoint(path)[1]
    assert ckpt["step"] >= 1 and 1.2 <= ckpt["elapsed_seconds"] < 10


def test_schedule_warms_up_then_decays_by_cosine():
    tcfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(tcfg, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(tcfg, 9, 0.09) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(0.09 * torch.pi)).item())))
    assert learning_rate(tcfg, 50, 0.5) == pytest.approx(1e-3 * 0.55)
    assert learning_rate(tcfg, 100, 1.0) == pytest.approx(1e-4)


def test_bad_training_options_are_refused():
    with pytest.raises(ValueError, match="training length"):
        TrainConfig()
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(steps=1, amp="fp8")
    with pytest.raises(ValueError, match="synthetic clips"):
        TrainConfig(steps=1, manifest="m.jsonl", event_loss_weight=1.0)
    with pytest.raises(ValueError, match="1 s preset"):
        TrainConfig(steps=1, preset="base", event_loss_weight=1.0).model_config()


def test_the_event_loss_option_gives_the_model_its_head():
    cfg = TrainConfig(steps=1, preset="tiny", event_loss_weight=0.5).model_config()
    assert cfg.event_classes and cfg.event_loss_weight == 0.5
    assert not TrainConfig(steps=1, preset="tiny").model_config().event_classes


def test_init_from_starts_from_the_checkpoints_weights_and_refuses_another_config(tmp_path):
    from mirasol_edge.train.loop import _model_and_optimizer

    first = train(TrainConfig(steps=2, **FAST), tmp_path / "first")
    tcfg = TrainConfig(steps=2, init_from=str(first), **FAST)
    model, _ = _model_and_optimizer(tcfg.model_config(), tcfg, None)
    saved, _ = load_checkpoint(first)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    other = TrainConfig(steps=2, init_from=str(first), **{**FAST, "combiner": "ttm"})
    with pytest.raises(ValueError, match="another model config"):
        _model_and_optimizer(other.model_config(), other, None)
