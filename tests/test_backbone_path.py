"""A torchvision video backbone end to end: a local weights file -> `init` -> a checkpoint that keeps
the backbone -> `export` without the weights file -> the bundle answers as PyTorch does."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from runtime_bundles import clip_chunks, one_torch_thread
from mirasol_edge.checkpoint import load_checkpoint
from mirasol_edge.cli import app
from mirasol_edge.runtime.session import Runtime

pytestmark = pytest.mark.slow
runner = CliRunner()
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # the extractor keeps these, in this order, as backbone.0-4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_r3d_18_weights(tmp_path_factory.mktemp("weights") / "r3d_18.pth")


def write_r3d_18_weights(path):
    """A randomly initialised r3d_18 state dict in a file, as if downloaded by hand from torchvision."""
    import torchvision.models.video as tv

    torch.manual_seed(1)
    torch.save(tv.r3d_18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "r3d.pt"
    result = runner.invoke(app, ["init", str(path), "--preset", "tiny", "--video-backbone", "r3d_18",
                                 "--video-backbone-weights", str(weights)])
    assert result.exit_code == 0, result.output
    return path


def test_init_starts_the_backbone_from_the_weights_file(weights, checkpoint):
    model, _ = load_checkpoint(checkpoint)  # rebuilt from the checkpoint alone
    assert model.cfg.video.backbone == "r3d_18"
    given = torch.load(weights, weights_only=True)
    kept = model.video_extractor.backbone.state_dict()
    for name, tensor in given.items():
        stage, _, rest = name.partition(".")
        if stage == "fc":  # the classifier is dropped
            continue
        assert torch.equal(kept[f"{STAGES.index(stage)}.{rest}"], tensor), name


def test_the_exported_bundle_answers_as_pytorch_without_the_weights_file(weights, checkpoint, tmp_path):
    weights.unlink()  # everything after init reads the checkpoint only
    bundle = tmp_path / "bundle"
    with one_torch_thread():
        result = runner.invoke(app, ["export", str(checkpoint), str(bundle), "--no-validate"])  # compared below
    assert result.exit_code == 0, result.output
    model, _ = load_checkpoint(checkpoint)
    runtime = Runtime.load(bundle, intra_op_threads=1)
    frames, waveform, qa = clip_chunks(3, runtime.chunk)

    video = ort.InferenceSession(str(bundle / "video_extractor.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.video_extractor(torch.from_numpy(frames[:2])).numpy()
    np.testing.assert_allclose(video.run(["video_tokens"], {"frames": frames[:2]})[0], expected, atol=1e-4, rtol=1e-3)

    stream, state = runtime.create_stream(), model.init_stream()
    with one_torch_thread():
        for f, w in zip(frames, waveform):
            stream.push(f, w)
            state = model.push_chunk(state, torch.from_numpy(w)[None], torch.from_numpy(f)[None])
        cache = stream.arrays()
        for i, (key, value) in enumerate(state.cross):  # the context decoder's view of every chunk's features
            np.testing.assert_allclose(cache[f"cross_key.{i}"], key[0].numpy(), atol=1e-4, rtol=1e-3)
            np.testing.assert_allclose(cache[f"cross_value.{i}"], value[0].numpy(), atol=1e-4, rtol=1e-3)
        for q in qa[:3]:
            assert stream.ask(q.question) == model.answer(state, q.question), q.question


def test_train_starts_from_the_weights_file_and_keeps_the_backbone(tmp_path):
    weights = write_r3d_18_weights(tmp_path / "r3d_18.pth")
    report = tmp_path / "train.json"
    result = runner.invoke(app, ["train", "--preset", "tiny", "--video-backbone", "r3d_18", "--steps", "2", "--batch-size", "2",
                                 "--video-backbone-weights", str(weights),
                                 "--durations", "4", "--threads", "1", "--out", str(tmp_path / "run"), "--json", str(report)])
    assert result.exit_code == 0, result.output
    trained = json.loads(report.read_text())
    assert trained["step"] == 2 and np.isfinite(trained["loss"])
    model, _ = load_checkpoint(trained["checkpoint"])
    assert model.cfg.video.backbone == "r3d_18"
    # two AdamW steps move each weight by about the learning rate, a fresh random start by far more
    given = torch.load(weights, weights_only=True)["stem.0.weight"]
    trained_stem = model.video_extractor.backbone.state_dict()["0.0.weight"]
    assert (trained_stem - given).abs().max() < 0.01 < (torch.randn_like(given) * given.std() - given).abs().max()
