"""`train --json` reports where the checkpoint is and the last logged metrics."""

import json
import math

from typer.testing import CliRunner

from mirasol_edge.cli import app


def test_train_json_reports_the_checkpoint_and_the_last_log_line(tmp_path):
    report = tmp_path / "train.json"
    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--durations", "4",
                                      "--threads", "1", "--out", str(tmp_path / "run"), "--json", str(report)])
    assert result.exit_code == 0, result.output
    trained = json.loads(report.read_text())
    assert trained["checkpoint"] == str(tmp_path / "run" / "checkpoint.pt") and (tmp_path / "run" / "checkpoint.pt").is_file()
    last = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert trained == {"checkpoint": trained["checkpoint"], "log": str(tmp_path / "run" / "log.jsonl"), **last}
    assert trained["step"] == 2 and math.isfinite(trained["answer_loss"])
