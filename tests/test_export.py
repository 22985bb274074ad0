"""Export to ONNX: every component validated, agreement with an independent ONNX implementation,
a whole clip through ONNX Runtime chunk by chunk, the manifest (each fact once) and its sha256."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import random_chunks, tiny_model
from mirasol_edge.export import export_bundle
from mirasol_edge.export.components import build_components
from mirasol_edge.runtime import tokenizer
from mirasol_edge.runtime.bundle import media_rules, tokenizer_spec, verify_manifest
from mirasol_edge.runtime.contract import FORMAT, SYMBOLIC_DIMS

WINDOW = 3  # temporal window of the exported tiny models: a 5-chunk clip trims the caches
COMPONENTS = ("audio_extractor", "video_extractor", "combiner", "temporal_decoder", "context_cross_kv", "context_decoder")


@pytest.fixture(scope="module", params=["transformer", "ttm"])
def exported(request, tmp_path_factory):
    """(model, bundle dir, progress lines) of the tiny model with each combiner, exported once per module."""
    model = tiny_model(request.param, seed=3, temporal_window=WINDOW)
    lines = []
    out = export_bundle(model, tmp_path_factory.mktemp(request.param) / "bundle", progress=lines.append)
    return model, out, lines


def sessions(bundle):
    from mirasol_edge.runtime.session import session_options

    options = session_options(intra_op_threads=1)  # the process's shared thread pool, if a CLI test made one
    return {name: ort.InferenceSession(str(bundle / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
            for name in COMPONENTS}


def test_every_component_is_exported_and_validated(exported):
    model, bundle, lines = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["precision"] == "fp32"
    assert manifest["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}
    assert list(manifest["components"]) == list(COMPONENTS)
    for name, entry in manifest["components"].items():
        assert (bundle / entry["file"]).is_file()
        outputs = entry["validation"]
        assert set(outputs) == set(entry["outputs"])
        assert all(o["max_abs"] <= o["limit"] for o in outputs.values())
        assert any(line.startswith(name) and "validated" in line for line in lines)
    assert ("memory" in manifest["components"]["combiner"]["inputs"]) == model.combiner.has_memory
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_graphs_follow_the_contract_and_carry_their_metadata(exported):
    model, bundle, _ = exported
    cfg, h = model.cfg, model.cfg.n_heads
    s = sessions(bundle)
    temporal = {i.name: i for i in s["temporal_decoder"].get_inputs()}
    assert temporal["chunk_position"].type == "tensor(int64)" and temporal["chunk_position"].shape == ["batch"]
    assert temporal["past_key.0"].shape == ["batch", h, "cache_len", cfg.d_model // h]
    present = {o.name: o.shape for o in s["temporal_decoder"].get_outputs()}
    assert present["present_value.0"] == temporal["past_value.0"].shape  # fixed-size: what comes out goes back in
    frames = s["video_extractor"].get_inputs()[0]
    assert (frames.name, frames.type) == ("frames", "tensor(uint8)")
    context = {i.name: i.shape for i in s["context_decoder"].get_inputs()}
    assert list(context) == ["tokens", "text_position", "chunks_seen", "past_key.0", "past_value.0", "cross_key.0", "cross_value.0"]
    assert context["past_key.0"] == ["batch", h, "text_cache_len", cfg.d_model // h]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, entry in manifest["components"].items():  # every dim a number or a documented symbol, no expression
        for kind, args in (("inputs", s[name].get_inputs()), ("outputs", s[name].get_outputs())):
            assert {a.name: a.shape for a in args} == {n: t["shape"] for n, t in entry[kind].items()}
            assert {d for t in entry[kind].values() for d in t["shape"] if isinstance(d, str)} <= set(SYMBOLIC_DIMS)
    props = {p.key: p.value for p in onnx.load(str(bundle / "combiner.onnx")).metadata_props}
    assert props["format"] == FORMAT and props["component"] == "combiner"
    for section in ("config", "tokenizer", "media", "runtime_defaults"):
        assert json.loads(props[section]) == manifest[section]
    assert json.loads(props["inputs"]) == manifest["components"]["combiner"]["inputs"]


def test_the_manifest_states_what_a_client_needs_once_and_nothing_of_training(exported):
    model, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    config, cfg = manifest["config"], model.cfg
    assert config["chunk"] == cfg.chunk.to_dict() and "chunk" not in manifest  # the chunk spec once, in the config
    assert not {"latent_loss_weight", "event_classes", "event_loss_weight"} & set(config)
    assert ("memory" in config["combiner"]) == (cfg.combiner.kind == "ttm")
    assert manifest["tokenizer"] == tokenizer_spec() and manifest["media"] == media_rules()
    assert manifest["runtime_defaults"] == {"max_new_tokens": 16}  # the default window is config.temporal_window
    for entry in manifest["components"].values():  # sha256, precision and opset: once, not per component
        assert not {"sha256", "precision", "opset", "tolerance"} & set(entry)
        assert all(set(e) == {"file"} for e in entry["external_data"])


def test_onnx_runtime_agrees_with_the_onnx_reference_evaluator(exported):
    """An independent implementation of ONNX (onnx.reference, numpy) computes the same outputs."""
    from onnx.reference import ReferenceEvaluator

    model, bundle, _ = exported
    s = sessions(bundle)
    rng = np.random.default_rng(7)
    for component in build_components(model):
        feeds = component.sample(component.checks[-1], rng)
        expected = s[component.name].run(None, feeds)
        reference = ReferenceEvaluator(str(bundle / component.file)).run(None, feeds)
        for name, a, b in zip(component.outputs, expected, reference):
            assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max()), f"{component.name}.{name}"


# -- a whole clip through ONNX Runtime, the way docs/bundle.md streams it (sessions by hand) ---------


def ort_push(s, state, waveform, frames):
    """One chunk: state (chunks, temporal cache, cross cache, memory), caches by input name -> (features, next state)."""
    chunks, temporal, cross, memory = state
    audio = s["audio_extractor"].run(None, {"waveform": waveform[None]})[0]
    video = s["video_extractor"].run(None, {"frames": frames[None]})[0]
    feeds = {"audio_tokens": audio, "video_tokens": video}
    if memory is not None:
        feeds["memory"] = memory
    out = dict(zip([o.name for o in s["combiner"].get_outputs()], s["combiner"].run(None, feeds)))
    position = np.array([chunks], np.int64)
    names = [o.name for o in s["temporal_decoder"].get_outputs()]
    result = dict(zip(names, s["temporal_decoder"].run(None, {"latents": out["latents"], "chunk_position": position, **temporal})))
    temporal = {n.replace("present_", "past_"): v for n, v in result.items() if n != "features"}
    names = [o.name for o in s["context_cross_kv"].get_outputs()]
    new = s["context_cross_kv"].run(None, {"features": result["features"], "chunk_position": position, **cross})
    cross = {n.replace("present_", ""): v for n, v in zip(names, new)}
    return result["features"], (chunks + 1, temporal, cross, out.get("memory_out"))


def ort_answer(s, state, prompt, max_new_tokens, cfg):
    """Greedy decoding: a prefill from an empty fixed-size self cache, then one token at a time."""
    chunks, _, cross, _ = state
    hd = cfg.d_model // cfg.n_heads
    past = {f"past_{kind}.{i}": np.zeros((1, cfg.n_heads, cfg.max_text_len, hd), np.float32)
            for i in range(cfg.context_layers) for kind in ("key", "value")}
    names = [o.name for o in s["context_decoder"].get_outputs()]
    tokens, position, out = np.array([prompt], np.int64), 0, []
    for _ in range(min(max_new_tokens, cfg.max_text_len - len(prompt))):
        feeds = {"tokens": tokens, "text_position": np.array([position], np.int64),
                 "chunks_seen": np.array([chunks], np.int64), **past, **cross}
        result = dict(zip(names, s["context_decoder"].run(None, feeds)))
        past = {n.replace("present_", "past_"): v for n, v in result.items() if n != "logits"}
        position += tokens.shape[1]
        out.append(int(result["logits"][0, -1].argmax()))
        if out[-1] == tokenizer.EOS:
            break
        tokens = np.array([[out[-1]]], np.int64)
    return out


def ort_stream(s, model, waveform, frames):
    cfg = model.cfg
    ring = np.zeros((1, cfg.n_heads, WINDOW * cfg.combiner.latents, cfg.d_model // cfg.n_heads), np.float32)
    memory = np.zeros((1, cfg.combiner.memory, cfg.d_model), np.float32) if model.combiner.has_memory else None
    temporal = {f"past_{kind}.{i}": ring for i in range(cfg.temporal_layers) for kind in ("key", "value")}
    cross = {f"cross_{kind}.{i}": ring for i in range(cfg.context_layers) for kind in ("key", "value")}
    state, features = (0, temporal, cross, memory), []
    for k in range(waveform.shape[1]):
        f, state = ort_push(s, state, waveform[0, k].numpy(), frames[0, k].numpy())
        features.append(f)
    return np.concatenate(features, axis=1), state


@pytest.mark.parametrize("chunks", [WINDOW, WINDOW + 2])
@torch.no_grad()
def test_a_clip_streamed_through_onnx_runtime_matches_the_pytorch_whole_clip_forward(exported, chunks):
    model, bundle, _ = exported
    waveform, frames = random_chunks(model.cfg, batch=1, chunks=chunks, seed=5)
    prompt = model.prompt_tokens("what came first?")
    _, whole = model.encode(waveform, frames)  # block-causal over the window: the reference features
    features, state = ort_stream(sessions(bundle), model, waveform, frames)
    assert np.abs(features - whole.numpy()).max() <= 1e-4

    if chunks <= WINDOW:  # the cross cache holds every chunk: the whole-clip answer
        expected = model.generate(model.context_decoder.cross_keys_values(whole), prompt, max_new_tokens=12)
    else:  # the ring has dropped the oldest chunks: the answer of PyTorch streaming
        pt = model.init_stream()
        for k in range(chunks):
            pt = model.push_chunk(pt, waveform[:, k], frames[:, k])
        expected = model.generate(pt.cross, prompt, max_new_tokens=12, chunks=pt.chunks)
    expected = expected[0].tolist()
    got = ort_answer(sessions(bundle), state, prompt[0].tolist(), 12, model.cfg)
    assert len(expected) > 0 and got == expected


def test_the_manifest_catches_a_changed_byte(exported, tmp_path):
    _, bundle, _ = exported
    copy = shutil.copytree(bundle, tmp_path / "copy")
    assert verify_manifest(copy)["format"] == FORMAT
    graph = copy / "temporal_decoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="temporal_decoder.onnx has changed"):
        verify_manifest(copy)


def test_a_failed_validation_names_component_and_output_and_leaves_nothing(tmp_path, monkeypatch):
    from mirasol_edge.export import ValidationError, validate

    model = tiny_model()
    strict = validate.Tolerance(atol=0.0, rtol=0.0)
    real = validate.validate_component
    monkeypatch.setattr(validate, "validate_component", lambda c, p, prec: real(c, p, prec, tolerance=strict))
    with pytest.raises(ValidationError, match=r"audio_extractor: output audio_tokens differs from PyTorch"):
        export_bundle(model, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []

