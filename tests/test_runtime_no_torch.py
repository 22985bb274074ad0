"""The runtime and its CLI run where importing torch (or onnx) fails."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime_bundles import trained
from mirasol_edge.data.synth import render_clip, write_clip_mp4
from mirasol_edge.runtime.session import Runtime

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchaudio", "torchvision", "onnx", "onnxscript")
QUESTIONS = ["what shape is shown first?", "is the tone high or low?"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    _, bundle = trained()
    root = tmp_path_factory.mktemp("no-torch")
    runtime = Runtime.load(bundle, intra_op_threads=1)
    mp4 = str(write_clip_mp4(root / "clip.mp4", render_clip(21, runtime.chunk, 5, 5), runtime.chunk))
    blocker = root / "blocker"
    for name in BLOCKED:  # a package of that name that refuses to import, found before the real one
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    stream = runtime.create_stream()
    stream.push_source(mp4)
    expected = [stream.ask(q) for q in QUESTIONS]
    return bundle, mp4, env, expected


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_the_blocker_blocks(setup):
    _, _, env, _ = setup
    result = run(env, "-c", "import torch")
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_the_runtime_api_works_without_torch(setup):
    bundle, mp4, env, expected = setup
    script = textwrap.dedent(f"""
        import json, sys
        from mirasol_edge.runtime import Runtime
        from mirasol_edge.runtime.media import read_clip
        runtime = Runtime.load({str(bundle)!r}, intra_op_threads=1)
        stream = runtime.create_stream()
        chunks = stream.push_source({mp4!r})
        answers = [stream.ask(q) for q in {QUESTIONS!r}]
        frames, waveform = read_clip({mp4!r}, runtime.chunk)  # the same clip pushed as arrays
        arrays = runtime.create_stream()
        for f, w in zip(frames, waveform):
            arrays.push(f, w)
        pieces = list(arrays.ask_stream({QUESTIONS[0]!r}))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        print(json.dumps({{"chunks": chunks, "answers": answers, "pieces": pieces, "loaded": loaded}}))
    """)
    result = run(env, "-c", script)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["loaded"] == []
    assert report["chunks"] == 5
    assert report["answers"] == expected
    assert "".join(report["pieces"]) == expected[0]


def test_the_cli_works_without_torch(setup):
    bundle, mp4, env, expected = setup
    cli = "from mirasol_edge.cli import main; main()"
    args = ["-c", cli, "ask", str(bundle), mp4, "--json", "--threads", "1"]
    for q in QUESTIONS:
        args += ["-q", q]
    result = run(env, *args)
    assert result.returncode == 0, result.stderr
    assert [a["answer"] for a in json.loads(result.stdout)["answers"]] == expected
    result = run(env, "-c", cli, "stream", str(bundle), mp4, "-q", QUESTIONS[0], "--every", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("decode+push") == 5 and f"A: {expected[0]}" in result.stdout
    for command in ("ask", "stream"):
        result = run(env, "-c", cli, command, "--help")
        assert result.returncode == 0 and "--question" in result.stdout, result.stderr


def test_eval_of_a_bundle_works_without_torch(setup, tmp_path):
    bundle, _, env, _ = setup
    cli = "from mirasol_edge.cli import main; main()"
    result = run(env, "-c", cli, "data", "synth", str(tmp_path / "set"), "--n", "2", "--preset", "tiny", "--max-seconds", "5")
    assert result.returncode == 0, result.stderr
    report = tmp_path / "eval.json"
    result = run(env, "-c", cli, "eval", str(bundle), str(tmp_path / "set" / "manifest.jsonl"), "--json", str(report))
    assert result.returncode == 0, result.stderr
    scores = json.loads(report.read_text())
    assert scores["n_clips"] == 2 and 0 <= scores["accuracy"] <= 1
