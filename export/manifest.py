"""A bundle's manifest.json: writing it, reading it, and checking every file's sha256.

The format itself (version, file name, hashing, reading) is the runtime's, which this builds on:
like the runtime, it needs neither torch nor onnx, so `mirasol-edge inspect` works without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mirasol_edge.runtime.bundle import FORMAT, MANIFEST, BundleError, bundle_file, sha256_of
from mirasol_edge.runtime.bundle import read_manifest as read_manifest_file

__all__ = ["FORMAT", "MANIFEST", "file_entry", "write_manifest", "read_manifest", "check_files", "verify_manifest"]


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


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
    manifest = read_manifest_file(path)
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("components"), dict):
        raise ValueError(f"{path} lists no files or components; re-export the bundle.")
    return manifest


def check_files(bundle: str | os.PathLike, manifest: dict) -> dict[str, str]:
    """Every file the manifest lists -> "ok", "missing", "changed" (size or sha256 differs) or
    "outside" (the name leads out of the bundle: never opened)."""
    root = Path(bundle)
    status = {}
    for name, entry in manifest["files"].items():
        try:
            path = bundle_file(root, name)
        except BundleError:
            status[str(name)] = "outside"
            continue
        if not path.is_file():
            status[name] = "missing"
        elif not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes") or sha256_of(path) != entry.get("sha256"):
            status[name] = "changed"  # the size first: a huge file that is not ours is never hashed
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
        what = {"missing": "is missing", "outside": "is not inside the bundle"}.get(status, "has changed since export (sha256 differs)")
        raise ValueError(f"bundle file {Path(bundle) / name} {what}{more}; re-export or re-copy the whole bundle.")
    return manifest
