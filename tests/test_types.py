"""runtime/ passes mypy as the package it installs as (mirasol_edge.runtime), with pyproject's settings."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_runtime_type_checks(tmp_path):
    pytest.importorskip("mypy")
    # mypy cannot follow setuptools' editable-install finder: lay the package out as it installs
    package = tmp_path / "mirasol_edge"
    package.mkdir()
    shutil.copy(REPO / "mirasol_edge" / "__init__.py", package)
    (package / "runtime").symlink_to(REPO / "runtime")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "mirasol_edge.runtime", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=tmp_path, env={"MYPYPATH": str(tmp_path), "PATH": ""}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
