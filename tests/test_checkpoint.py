import pytest
import torch

from conftest import tiny_model
from mirasol_edge.checkpoint import load_checkpoint, save_checkpoint


def test_a_checkpoint_round_trips_config_and_weights(tmp_path):
    model = tiny_model("ttm")
    save_checkpoint(tmp_path / "m.pt", model, step=7)
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert loaded.cfg == model.cfg and ckpt["step"] == 7
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoints_load_with_weights_only(tmp_path):
    save_checkpoint(tmp_path / "m.pt", tiny_model())
    torch.load(tmp_path / "m.pt", weights_only=True)  # raises if anything but plain data was pickled


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a mirasol-edge checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_a_format_1_checkpoint_is_refused_with_a_retrain_hint(tmp_path):
    save_checkpoint(tmp_path / "m.pt", tiny_model())
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**ckpt, "format": "mirasol-edge-checkpoint/1"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="older mirasol-edge.*retrain"):
        load_checkpoint(tmp_path / "old.pt")
