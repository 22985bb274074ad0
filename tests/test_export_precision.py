"""int8 and fp16 bundles: validated with their own tolerance, loaded, answering; external weights files."""

import shutil

import numpy as np
import pytest
import torch

from conftest import random_chunks, tiny_model
from mirasol_edge.export import TOLERANCES, export_bundle
from mirasol_edge.runtime.bundle import verify_manifest
from test_export import WINDOW, ort_answer, ort_stream, sessions

CHUNKS = 3


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3, temporal_window=WINDOW)


@pytest.fixture(scope="module")
def clip(model):
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=CHUNKS, seed=5)
    with torch.no_grad():
        _, features = model.encode(waveform, frames)
        cross = model.context_decoder.cross_keys_values(features)
    prompt = model.prompt_tokens("what came first?")
    return waveform, frames, features.numpy(), model.generate(cross, prompt, max_new_tokens=12)[0].tolist(), prompt


@pytest.fixture(scope="module")
def int8_bundle(model, tmp_path_factory):
    return export_bundle(model, tmp_path_factory.mktemp("int8") / "bundle", precision="int8")


@pytest.fixture(scope="module")
def fp16_external_bundle(model, tmp_path_factory):
    return export_bundle(model, tmp_path_factory.mktemp("fp16") / "bundle", precision="fp16", external_data=True)


def run_clip(bundle, model, clip):
    waveform, frames, _, expected, prompt = clip
    s = sessions(bundle)
    features, state = ort_stream(s, model, waveform, frames)
    answer = ort_answer(s, state, prompt[0].tolist(), 12, model.cfg)
    return features, answer


def test_the_int8_bundle_loads_and_answers_like_pytorch(int8_bundle, model, clip):
    manifest = verify_manifest(int8_bundle)
    assert manifest["precision"] == "int8"
    assert manifest["components"]["audio_extractor"]["kept_fp32_nodes"] > 0  # the log-mel front end
    features, answer = run_clip(int8_bundle, model, clip)
    whole, expected = clip[2], clip[3]
    assert np.abs(features - whole).max() <= TOLERANCES["int8"].limit(np.abs(whole).max())
    # Greedy decoding amplifies small differences once two tokens are close; the first tokens agree.
    assert len(answer) > 0 and answer[:4] == expected[:4]


def test_int8_quantises_the_matmul_weights_but_not_the_log_mel_front_end(int8_bundle):
    import onnx

    graph = onnx.load(str(int8_bundle / "audio_extractor.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "MatMulInteger" in ops  # the encoder's projections
    producer = {o: n for n in graph.node for o in n.output}
    log = next(n for n in graph.node if n.op_type == "Log")
    upstream, todo = set(), [log]
    while todo:
        node = todo.pop()
        upstream.add(node.op_type)
        todo.extend(producer[i] for i in node.input if i in producer)
    assert "MatMul" in upstream and not upstream & {"MatMulInteger", "DynamicQuantizeLinear"}  # mel filter bank: fp32


def test_the_fp16_bundle_keeps_fp32_inputs_and_outputs_and_answers(fp16_external_bundle, model, clip):
    s = sessions(fp16_external_bundle)
    assert {i.type for sess in s.values() for i in sess.get_inputs()} <= {"tensor(float)", "tensor(uint8)", "tensor(int64)"}
    assert {o.type for sess in s.values() for o in sess.get_outputs()} == {"tensor(float)"}
    features, answer = run_clip(fp16_external_bundle, model, clip)
    whole, expected = clip[2], clip[3]
    assert np.abs(features - whole).max() <= TOLERANCES["fp16"].limit(np.abs(whole).max())
    assert answer[:4] == expected[:4]


def test_external_weights_sit_next_to_each_graph_and_are_hashed(fp16_external_bundle, tmp_path):
    manifest = verify_manifest(fp16_external_bundle)
    for name, entry in manifest["components"].items():
        assert [e["file"] for e in entry["external_data"]] == [f"{name}.onnx.data"]
        assert f"{name}.onnx.data" in manifest["files"]
    copy = shutil.copytree(fp16_external_bundle, tmp_path / "copy")
    weights = copy / "context_decoder.onnx.data"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"context_decoder\.onnx\.data has changed"):
        verify_manifest(copy)
