"""The benchmark runs end to end on the tiny preset (its numbers are not asserted: they are timings)."""

import json

from typer.testing import CliRunner

from mirasol_edge.checkpoint import save_checkpoint
from mirasol_edge.cli import app


def test_bench_runs_torch_and_ort_side_by_side_and_writes_json_and_plot(tmp_path):
    from runtime_bundles import trained

    model, bundle = trained()
    save_checkpoint(tmp_path / "tiny.pt", model)
    result = CliRunner().invoke(app, [
        "bench", str(bundle), "--torch", str(tmp_path / "tiny.pt"), "--chunks", "4", "--tokens", "4", "--streams", "3", "--quiet",
        "--json", str(tmp_path / "bench.json"), "--plot", str(tmp_path / "bench.png"),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [e["label"] for e in report["engines"]] == ["torch-eager", "ort-fp32"]
    assert all(len(e["per_chunk_ms"]) == 4 for e in report["engines"])
    assert len(report["decode"]["per_chunk_ms"]) == 4
    assert "ort-fp32 vs torch-eager" in result.output
    summary = report["summary"]
    for key in ("ort_vs_eager_chunk", "ort_vs_eager_token", "batched_vs_one_by_one_chunk", "batched_vs_one_by_one_token",
                "rtf_model", "state_bytes_per_stream", "realtime_streams_model"):
        assert summary[key] > 0, key
    assert summary["streams"] == 3 and summary["ort_vs_compile_chunk"] is None and summary["rtf_end_to_end"] is None
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_bench_runs_a_real_source_end_to_end(tmp_path):
    from runtime_bundles import trained

    from mirasol_edge.benchmarks.sources import write_test_source

    _, bundle = trained()
    source = write_test_source(tmp_path / "src.mp4", 160, 96, 12, 3)
    result = CliRunner().invoke(app, ["bench", str(bundle), "--chunks", "2", "--tokens", "2", "--streams", "2", "--quiet",
                                      "--source", str(source), "--json", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    real = json.loads((tmp_path / "bench.json").read_text())["sources"][0]
    assert (real["width"], real["height"], real["chunks"]) == (160, 96, 3)
    assert real["rtf_end_to_end"] > 0 and real["rtf_end_to_end_skip_nonref"] > 0


def test_bench_refuses_fewer_than_two_chunks(tmp_path):
    from runtime_bundles import trained

    _, bundle = trained()
    result = CliRunner().invoke(app, ["bench", str(bundle), "--chunks", "1", "--quiet"])
    assert result.exit_code == 2 and "at least 2" in result.output
