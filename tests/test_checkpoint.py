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


def resave(tmp_path, change, name="edited.pt"):
    """The tiny model's checkpoint with `change(ckpt)` applied (digest kept unless the change drops it)."""
    save_checkpoint(tmp_path / "m.pt", tiny_model())
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.pop("config"), "not a mapping"),
    (lambda c: c["config"].pop("video"), "no 'video' section"),
    (lambda c: c["config"].update(d_model=33), "multiple of n_heads"),
    (lambda c: c["config"].update(n_heads=0), "n_heads is 0"),
    (lambda c: c.update(model=[1, 2]), "holds no weights"),
])
def test_a_checkpoint_with_a_broken_config_or_weights_is_refused_in_one_sentence(tmp_path, change, needle):
    with pytest.raises(ValueError, match=needle) as e:
        load_checkpoint(resave(tmp_path, change))
    assert "\n" not in str(e.value)


def test_weights_changed_after_saving_are_caught_by_their_digest(tmp_path):
    def flip(ckpt):
        ckpt["model"]["temporal_decoder.slot"][0, 0] = 270.0  # what 200 flipped bytes did to a bias
    with pytest.raises(ValueError, match="changed since it was saved"):
        load_checkpoint(resave(tmp_path, flip))


def test_non_finite_weights_are_refused(tmp_path):
    def nan(ckpt):
        ckpt["model"]["temporal_decoder.slot"][0, 0] = float("nan")
        del ckpt["weights_sha256"]  # as a checkpoint written before digests, or one saved after diverging
    with pytest.raises(ValueError, match="non-finite weights"):
        load_checkpoint(resave(tmp_path, nan))


def test_a_directory_given_as_a_checkpoint_is_named_as_one(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint(tmp_path)
