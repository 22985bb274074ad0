"""Hand-edited bundles: nothing is read outside the bundle, every fault is one sentence, never a traceback."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime_bundles import trained
from mirasol_edge.cli import app
from mirasol_edge.runtime.bundle import BundleError, load_bundle
from mirasol_edge.runtime.session import Runtime

_opened: list[str] | None = None  # paths opened while a test records them (audit hooks cannot be removed)


def _audit(event, args):
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def bundle(tmp_path):
    return Path(shutil.copytree(trained()[1], tmp_path / "bundle"))


def edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def opened_while(fn) -> list[str]:
    global _opened
    _opened = []
    try:
        fn()
    finally:
        seen, _opened = _opened, None
    return seen


def point_at(bundle: Path, name: str, sha256: str = "0" * 64, size: int = 0) -> None:
    """The manifest's audio graph (and its files entry) renamed to `name`."""
    def change(m):
        entry = m["files"].pop("audio_extractor.onnx")
        m["files"][name] = {**entry, "sha256": sha256, "bytes": size}
        m["components"]["audio_extractor"].update(file=name)
    edit(bundle, change)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.onnx", "sub/../../outside.onnx", "a\\..\\b.onnx", ""])
def test_a_manifest_naming_a_path_outside_the_bundle_is_refused_before_anything_is_opened(bundle, name):
    (bundle.parent / "outside.onnx").write_bytes(b"secret")
    point_at(bundle, name)
    opened = opened_while(lambda: pytest.raises(BundleError, load_bundle, bundle))
    assert not [p for p in opened if p.endswith(("outside.onnx", "passwd", "b.onnx"))], opened
    with pytest.raises(BundleError, match="not a file inside the bundle"):
        load_bundle(bundle)


def test_a_symlink_leaving_the_bundle_is_refused_and_its_target_never_opened(bundle):
    target = bundle.parent / "elsewhere.onnx"
    shutil.copy(bundle / "audio_extractor.onnx", target)  # a real graph, with the manifest's own sha256
    (bundle / "audio_extractor.onnx").unlink()
    (bundle / "audio_extractor.onnx").symlink_to(target)
    opened = opened_while(lambda: pytest.raises(BundleError, load_bundle, bundle))
    assert not [p for p in opened if "elsewhere" in p or p.endswith("audio_extractor.onnx")], opened
    with pytest.raises(BundleError, match="leads outside the bundle directory"):
        load_bundle(bundle)


def test_a_huge_file_in_place_of_a_graph_is_refused_by_its_size_without_hashing_it(bundle):
    graph = bundle / "combiner.onnx"
    graph.unlink()
    with open(graph, "wb") as f:  # sparse: 20 GB that take no disk
        f.truncate(20 << 30)
    opened = opened_while(lambda: pytest.raises(BundleError, load_bundle, bundle))
    assert str(graph) not in opened
    with pytest.raises(BundleError, match="changed since export"):
        load_bundle(bundle)


@pytest.mark.parametrize("change, needle", [
    (lambda m: m["components"].pop("combiner"), "no 'combiner' component"),
    (lambda m: m["config"]["chunk"].update(fps=0), "chunk.fps is 0"),
    (lambda m: m["config"].update(n_heads=0), "n_heads is 0"),
    (lambda m: m["config"].update(d_model=33), "multiple of n_heads"),
    (lambda m: m["config"]["combiner"].update(latents=7), "differ from what its config implies"),
    (lambda m: m["config"].pop("audio"), "no 'audio' section"),
    (lambda m: m["config"]["combiner"].update(kind="lstm"), "not transformer or ttm"),
    (lambda m: m["config"].update(temporal_window=0), "temporal_window is 0"),
    (lambda m: m["config"]["combiner"].update(kind="ttm"), "combiner.memory is None"),
    (lambda m: m["runtime_defaults"].update(max_new_tokens=0), "max_new_tokens is 0"),
    (lambda m: m["tokenizer"].update(eos=7), "tokenizer.eos is 7"),
    (lambda m: m["media"].update(keep_partial_fraction=0.25), "media.keep_partial_fraction is 0.25"),
    (lambda m: m.pop("media"), "no 'media' section"),
    (lambda m: m["components"]["context_decoder"]["outputs"]["logits"]["shape"].__setitem__(1, "text_len + 1"),
     "'context_decoder' outputs differ"),
    (lambda m: m["components"]["combiner"].update(external_data=[{"file": "elsewhere.data"}]), "external data is not"),
    (lambda m: m["files"].update({"x.onnx": "nope"}), "not {sha256, bytes}"),
    (lambda m: m["components"].update(summary_kv=m["components"]["combiner"]), "'summary_kv' component its config does not imply"),
])
def test_a_hand_edited_manifest_is_refused_in_one_sentence_and_inspect_lists_the_fault(bundle, change, needle):
    edit(bundle, change)
    with pytest.raises(BundleError, match="is invalid: .*" + needle.replace("(", r"\(").replace("{", r"\{")) as e:
        load_bundle(bundle)
    assert "\n" not in str(e.value)
    result = CliRunner().invoke(app, ["inspect", str(bundle)])
    assert result.exit_code == 1 and "Traceback" not in result.output and needle in result.output


def test_a_config_edited_past_what_the_graphs_were_exported_with_is_refused(bundle):
    edit(bundle, lambda m: m["config"].update(max_text_len=1000))  # within range, in no shape: the graphs' metadata tells
    with pytest.raises(BundleError, match="exported with another model config"):
        Runtime.load(bundle)
