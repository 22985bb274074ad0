"""The wheel `pip install .[cpu]` builds: what it holds, and its runtime running without torch.

The wheel is unpacked in front of sys.path (as an install would place it), torch and its kin made
uninstallable (and ray), and the CLI run from it: `ask` answers, `info` names the extra to install.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime_bundles import trained

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchaudio", "torchvision", "onnx", "onnxscript", "ray")  # the runtime needs none of them


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the build backend (setuptools) is this venv's; nothing is fetched
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True, timeout=300, cwd=out)
    (path,) = out.glob("mirasol_edge-*.whl")
    site = out / "site"
    with zipfile.ZipFile(path) as z:
        z.extractall(site)
    return path, site


def run_installed(site: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    script = (f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
              f"import mirasol_edge.runtime.session as s\nassert s.__file__.startswith({str(site)!r}), s.__file__\n"
              f"from mirasol_edge.cli import main\nmain()")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={"PYTHONPATH": str(site), "PATH": ""})


@pytest.mark.slow
def test_the_wheel_holds_the_packages_and_their_type_marker(wheel):
    path, _ = wheel
    names = zipfile.ZipFile(path).namelist()
    for module in ("mirasol_edge/runtime/session.py", "mirasol_edge/export/bundle.py", "mirasol_edge/cli/app.py",
                   "mirasol_edge/train/loop.py", "mirasol_edge/data/synth/scene.py", "mirasol_edge/py.typed"):
        assert module in names, module
    assert not [n for n in names if n.startswith(("tests/", "runtime/", "export/"))]  # no generic top-level names


@pytest.mark.slow
def test_the_installed_runtime_answers_without_torch_and_torch_commands_name_their_extra(wheel, tmp_path):
    from mirasol_edge.data.synth import render_clip, write_clip_mp4
    from mirasol_edge.runtime.session import Runtime

    _, site = wheel
    bundle = trained()[1]
    runtime = Runtime.load(bundle, intra_op_threads=1)
    clip = str(write_clip_mp4(tmp_path / "clip.mp4", render_clip(41, runtime.chunk, 4, 5), runtime.chunk))
    stream = runtime.create_stream()
    stream.push_source(clip)
    question = "what shape is shown first?"
    asked = run_installed(site, "ask", str(bundle), clip, "-q", question, "--threads", "1", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip().endswith(stream.ask(question))
    info = run_installed(site, "info", cwd=tmp_path)
    assert info.returncode == 2 and info.stderr.splitlines() == [
        "error: `mirasol-edge info` needs PyTorch (torch is not installed): pip install 'mirasol-edge[train]'"]
