"""Options are checked before anything is decoded; SIGTERM cleans up like Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime_bundles import trained
from mirasol_edge.cli import app

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("option, needle", [
    (["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    (["--seed", "-1"], "seed must be between 0"),
    (["--threads", "100000"], "thread count must be between 0"),
    (["--temperature", "-1"], "temperature must be >= 0"),
])
def test_bad_options_are_refused_before_the_source_is_touched(option, needle):
    # The source does not exist: were it decoded first, the error would be about it.
    result = CliRunner().invoke(app, ["ask", str(trained()[1]), "/nonexistent/clip.mp4", "-q", "what?", *option])
    assert result.exit_code == 2 and needle in result.stderr and "clip.mp4" not in result.stderr, result.stderr


def test_sigterm_during_export_leaves_no_partial_bundle(tmp_path):
    from mirasol_edge.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", trained()[0])
    out = tmp_path / "out" / "bundle"
    proc = subprocess.Popen([sys.executable, "-c", "from mirasol_edge.cli import main; main()", "export",
                             str(tmp_path / "m.pt"), str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(600):  # until the staging directory exists: the export is under way
        if list(out.parent.glob(".bundle.partial-*")) or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the export ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err.decode()[-2000:]
    assert not out.exists() and not list(out.parent.glob(".bundle.*")), os.listdir(out.parent)


def test_a_sigterm_dropped_in_a_finaliser_still_stops_the_export_without_its_bundle(tmp_path, monkeypatch):
    """Python prints and drops an exception raised while a finaliser runs: the export then finishes,
    and the command must still stop, leaving nothing behind."""
    from mirasol_edge.checkpoint import save_checkpoint
    import mirasol_edge.export

    def export_bundle(model, out_dir, **kwargs):  # writes a bundle; SIGTERM comes and is swallowed meanwhile
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "manifest.json").write_text("{}")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        return Path(out_dir)

    monkeypatch.setattr(mirasol_edge.export, "export_bundle", export_bundle)
    save_checkpoint(tmp_path / "m.pt", trained()[0])
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "m.pt"), str(out)])
    assert result.exit_code != 0
    assert not out.exists()


@pytest.mark.parametrize("made", [".bundle.partial-", "out"])
def test_an_interrupt_just_after_the_staging_directory_is_made_leaves_nothing(tmp_path, monkeypatch, made):
    """The narrowest window: the directory exists (the staging one, or a parent made for it), the call that
    made it has not returned yet (CI once sent SIGTERM there and found `.bundle.partial-*` left behind)."""
    from mirasol_edge.export import export_bundle

    model = trained()[0]  # before the patch: trained() exports its own bundle the first time
    make_dir = os.mkdir

    def mkdir_then_interrupt(path, *args, **kwargs):
        make_dir(path, *args, **kwargs)
        if os.path.basename(path).startswith(made):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "mkdir", mkdir_then_interrupt)
    out = tmp_path / "out" / "bundle"
    with pytest.raises(KeyboardInterrupt):
        export_bundle(model, out)
    assert not (tmp_path / "out").exists()  # neither the staging directory nor the parent it made
