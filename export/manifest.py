"""A bundle's manifest.json: writing it, reading it, and checking every file's sha256.

Imports only the standard library (hashlib, json): `mirasol-edge inspect` and the runtime can use
it where torch and onnx are not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = "mirasol-edge-bundle/1"
MANIFEST = "manifest.json"
_HASH_BLOCK = 1 << 20  # hash in 1 MiB reads: a multi-GB weights file never sits whole in memory


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(bundle: Path, manifest: dict) -> Path:
    path = Path(bundle) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(bundle: str | os.PathLike) -> dict:
    """`bundle`/manifest.json as a dict; ValueError, in one sentence, if it is not a bundle of this format."""
    root = Path(bundle)
    if not root.is_dir():
        what = "is a file, not a bundle directory" if root.exists() else "does not exist"
        raise ValueError(f"bundle {root} {what}; pass a directory written by `mirasol-edge export`.")
    path = root / MANIFEST
    if not path.is_file():
        raise ValueError(f"{root} has no {MANIFEST}, so it is not a bundle; pass a directory written by `mirasol-edge export`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-export the bundle.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{path} has format {got!r}, expected {FORMAT!r}; re-export the bundle with this mirasol-edge.")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("components"), dict):
        raise ValueError(f"{path} lists no files or components; re-export the bundle.")
    return manifest


def check_files(bundle: str | os.PathLike, manifest: dict) -> dict[str, str]:
    """Every file the manifest lists -> "ok", "missing" or "changed" (its sha256 differs)."""
    root = Path(bundle)
    status = {}
    for name, entry in manifest["files"].items():
        path = root / name
        if not path.is_file():
            status[name] = "missing"
        elif path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            status[name] = "changed"
        else:
            status[name] = "ok"
    return status


def verify_manifest(bundle: str | os.PathLike) -> dict:
    """Read the manifest and check the sha256 of every file it lists (graphs and external weights).

    Returns the manifest; raises ValueError naming the first missing or changed file.
    """
    manifest = read_manifest(bundle)
    bad = {name: s for name, s in check_files(bundle, manifest).items() if s != "ok"}
    if bad:
        name, status = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        what = "is missing" if status == "missing" else "has changed since export (sha256 differs)"
        raise ValueError(f"bundle file {Path(bundle) / name} {what}{more}; re-export or re-copy the whole bundle.")
    return manifest
