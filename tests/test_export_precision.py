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


def test_a_value_the_fp16_conversion_defines_twice_is_kept_once(tmp_path):
    """Two identical casts of one shared weight, a weight twice, and a cast to fp32 also restored as the
    fp32 weight (torch 2.11's export of the base audio front end came out of the converter with a value
    defined twice): the graph loads and computes."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mirasol_edge.export.precision import _drop_duplicate_definitions
    from mirasol_edge.runtime.session import session_options  # the process's shared pool, if a test made one

    w = numpy_helper.from_array(np.arange(1, 5, dtype=np.float16), "w")
    w32 = numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), "w32")
    restored = numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), "v_cast_to_fp32")
    nodes = [helper.make_node("Cast", ["w"], ["w_cast_to_fp32"], name=f"cast{i}", to=TensorProto.FLOAT) for i in range(2)]
    nodes.append(helper.make_node("Cast", ["w"], ["v_cast_to_fp32"], name="cast_v", to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Add", ["x", "w_cast_to_fp32"], ["a"], name="add"))
    nodes.append(helper.make_node("Mul", ["a", "w32"], ["b"], name="mul"))
    nodes.append(helper.make_node("Div", ["b", "v_cast_to_fp32"], ["y"], name="div"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w, w32, w32, restored])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    _drop_duplicate_definitions(model.graph)
    assert [n.name for n in model.graph.node] == ["cast0", "add", "mul", "div"]
    assert [t.name for t in model.graph.initializer] == ["w", "w32", "v_cast_to_fp32"]
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    x = np.ones(4, np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x + np.arange(1, 5))
