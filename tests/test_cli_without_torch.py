"""Where torch is not installed, a command that needs it names the extra to install in one line
(exit 2, no traceback); every --help, and data synth, still work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchaudio", "torchvision", "onnx", "onnxscript")
# sys.modules[name] = None makes `import name` raise ModuleNotFoundError(name=name), as when it is not installed
CLI = f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\nfrom mirasol_edge.cli import main\nmain()"
HINT = "needs PyTorch (torch is not installed): pip install 'mirasol-edge[train]'"
COMMANDS = ["info", "init", "train", "train-memory", "eval", "demo", "export", "inspect", "ask", "stream", "bench", "data synth"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("args", [["info", "--preset", "tiny"], ["export", "some.pt", "bundle"]], ids=["info", "export"])
def test_a_torch_command_names_the_extra_in_one_line(args):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: `mirasol-edge {args[0]}` {HINT}"]
    assert result.stdout == ""


def test_every_help_works():
    for command in ["--help", *(f"{c} --help" for c in COMMANDS)]:
        result = run(*command.split())
        assert result.returncode == 0 and "--help" in result.stdout, (command, result.stderr)


def test_data_synth_needs_no_torch(tmp_path):
    result = run("data", "synth", str(tmp_path / "set"), "--n", "1", "--preset", "tiny", "--max-seconds", "4",
                 "--json", str(tmp_path / "synth.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "synth.json").read_text())
    assert report["clips"] == 1 and report["questions"] >= 1 and Path(report["manifest"]).is_file()
