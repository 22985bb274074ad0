"""`batch` on a local Ray: the answers are ask's, a bad file is an error row, a killed run resumes
with every (source, question) answered exactly once."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from runtime_bundles import trained  # noqa: E402

from mirasol_edge.batch import ClusterOptions, Job, answer_corpus, finished_pairs, list_sources  # noqa: E402
from mirasol_edge.data.synth import render_clip, write_clip_mp4  # noqa: E402
from mirasol_edge.runtime.session import Runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ("what shape is shown first?", "is the tone high or low?")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    bundle = trained()[1]
    runtime = Runtime.load(bundle, intra_op_threads=1)
    root = tmp_path_factory.mktemp("corpus")
    for i in range(8):
        write_clip_mp4(root / f"clip{i}.mp4", render_clip(200 + i, runtime.chunk, 4, 6), runtime.chunk)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing a decoder wants")
    expected = {}
    for source in sorted(map(str, root.glob("clip*.mp4"))):
        stream = runtime.create_stream()
        stream.push_source(source)
        for q in QUESTIONS:
            expected[(source, q)] = stream.ask(q)
    return bundle, root, expected


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_batch_answers_as_ask_does_and_a_bad_file_is_an_error_row(corpus, tmp_path):
    bundle, root, expected = corpus
    out = tmp_path / "answers.jsonl"
    jobs = [Job(s, QUESTIONS) for s in list_sources(str(root))]
    summary = answer_corpus(bundle, jobs, out, ClusterOptions(actors=2, batch_size=3))
    lines = read_lines(out)
    assert summary["written"] == len(lines) == 9 * len(QUESTIONS) and summary["failed_sources"] == 1
    errors = [line for line in lines if "error" in line]
    assert {line["source"] for line in errors} == {str(root / "broken.mp4")} and len(errors) == len(QUESTIONS)
    assert "broken.mp4" in errors[0]["error"] and "answer" not in errors[0]
    answers = {(line["source"], line["question"]): line["answer"] for line in lines if "error" not in line}
    assert answers == expected
    assert all(line["complete"] and line["chunks"] >= 4 for line in lines if "error" not in line)


@pytest.mark.slow
def test_a_killed_run_resumes_answering_each_pair_once(corpus, tmp_path):
    bundle, root, expected = corpus
    out = tmp_path / "answers.jsonl"
    command = [sys.executable, "-m", "mirasol_edge", "batch", str(bundle), str(root / "clip*.mp4"),
               *[a for q in QUESTIONS for a in ("-q", q)], "--out", str(out), "--actors", "1", "--batch-size", "1"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # kill once some, not all, pairs are written
        if out.exists() and len(out.read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = len(finished_pairs(out))
    assert 0 < written_before < len(expected)
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = read_lines(out)
    pairs = [(line["source"], line["question"]) for line in lines]
    assert len(pairs) == len(set(pairs)) == len(expected)  # each pair once: none lost, none twice
    assert {p: line["answer"] for p, line in zip(pairs, lines)} == expected


def test_sources_are_listed_from_a_folder_a_glob_a_list_and_a_manifest(tmp_path):
    for name in ("b.mp4", "a.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    media = [str(tmp_path / "a.mkv"), str(tmp_path / "b.mp4")]
    assert list_sources(str(tmp_path)) == media
    assert list_sources(str(tmp_path / "*.mp4")) == media[1:]
    (tmp_path / "list.txt").write_text("# cameras\nb.mp4\n\nhttps://example.com/live.m3u8\n")
    assert list_sources(str(tmp_path / "list.txt")) == [str(tmp_path / "b.mp4"), "https://example.com/live.m3u8"]
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "a.mkv", "question": "q?", "answer": "x"}) + "\n")
    assert list_sources(str(tmp_path / "m.jsonl")) == [str((tmp_path / "a.mkv").resolve())]
    with pytest.raises(ValueError, match="matches no file"):
        list_sources(str(tmp_path / "*.webm"))


def test_a_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text(json.dumps({"source": "a.mp4", "question": "q?", "answer": "x"}) + '\n{"source": "b.mp4", "quest')
    assert finished_pairs(out) == {("a.mp4", "q?")}
    assert out.read_text().endswith("}\n")


@pytest.mark.slow
def test_eval_on_ray_scores_as_eval_does(tmp_path):
    from mirasol_edge.data.manifest import load_manifest
    from mirasol_edge.data.synth import write_dataset
    from mirasol_edge.evaluate_runtime import evaluate_bundle, evaluate_bundle_on_ray

    bundle = trained()[1]
    spec = Runtime.load(bundle, intra_op_threads=1).chunk
    rows = load_manifest(write_dataset(tmp_path / "set", n_clips=4, seed=31, spec=spec, min_seconds=4, max_seconds=6,
                                       progress=False))
    summary, predictions = evaluate_bundle(bundle, rows, streams=2)
    on_ray, ray_predictions = evaluate_bundle_on_ray(bundle, rows, ClusterOptions(actors=2, batch_size=2))
    assert sorted(ray_predictions, key=str) == sorted(predictions, key=str)
    assert on_ray["accuracy"] == summary["accuracy"] and on_ray["ray_start_s"] >= 0
