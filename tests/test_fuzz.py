"""Damaged media through the `ask` path is answered or refused in one sentence: never a traceback,
a hang or a crash (a seeded mutation fuzz, tests/fuzz_media.py; `make fuzz` runs a longer one)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime_bundles import trained

REPO = Path(__file__).resolve().parents[1]
FUZZ = Path(__file__).with_name("fuzz_media.py")
MUTANTS = 200  # about 10 s on 2 shared cores; the slowest undamaged mutant takes under 0.1 s
MUTANT_TIMEOUT_S = 5  # a mutant past this is a hang ("other"), reported with its id
RUN_TIMEOUT_S = 55  # the whole run, bundle excluded; a crash or an uninterruptible hang ends here


@pytest.mark.slow
def test_damaged_media_is_answered_or_refused(tmp_path):
    bundle = trained()[1]
    report = tmp_path / "fuzz.json"
    command = [sys.executable, str(FUZZ), str(bundle), "--mutants", str(MUTANTS), "--seed", "0",
               "--timeout", str(MUTANT_TIMEOUT_S), "--json", str(report)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        progress = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        pytest.fail(f"the fuzz ran past {RUN_TIMEOUT_S} s; last progress line: {progress[-1:] or 'none'}")
    # A signal (negative code) names its mutant in the last "fuzz: seed:index" line before the traceback.
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    summary = json.loads(report.read_text())
    counts = summary["counts"]
    assert summary["mutants"] == MUTANTS and sum(counts.values()) == MUTANTS
    assert counts["other"] == 0 and f"{MUTANTS} mutants of seed 0" in result.stdout and ", 0 other" in result.stdout
    assert counts["answered"] > 0 and counts["refused"] > 0, counts  # both paths exercised
