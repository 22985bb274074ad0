"""Open an exported bundle (docs/bundle.md): check its manifest and every file's sha256.

Nothing here touches ONNX Runtime; `session.Runtime` turns a checked `Bundle` into sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from mirasol_edge.runtime import tokenizer
from mirasol_edge.runtime.chunking import ChunkSpec
from mirasol_edge.runtime.contract import COMPONENTS, FORMAT

MANIFEST = "manifest.json"
_HASH_BLOCK = 1 << 20  # hash in 1 MiB reads: large bundles never sit whole in memory


class BundleError(ValueError):
    """A bundle that cannot be used: missing, changed, or of an unknown format."""


@dataclass(frozen=True)
class Bundle:
    """A checked bundle directory and what the runtime needs from its manifest."""

    path: Path
    manifest: dict
    chunk: ChunkSpec

    @property
    def config(self) -> dict:
        """The model config as a plain dict (ModelConfig.to_dict())."""
        return self.manifest["config"]

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    @property
    def latents_per_chunk(self) -> int:
        """m: cache positions one chunk adds to the temporal and cross caches."""
        return int(self.config["combiner"]["latents"])

    @property
    def max_text_len(self) -> int:
        return int(self.config["max_text_len"])

    @property
    def temporal_window(self) -> int:
        """Chunks the caches keep by default."""
        defaults = self.manifest.get("runtime_defaults") or {}
        return int(defaults.get("temporal_window", self.config["temporal_window"]))

    @property
    def max_new_tokens(self) -> int:
        defaults = self.manifest.get("runtime_defaults") or {}
        return int(defaults.get("max_new_tokens", 16))

    def file(self, component: str) -> Path:
        return self.path / self.manifest["components"][component]["file"]


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read `path`/manifest.json, check the format version and (if verify) every file's sha256.

    Raises BundleError, in one sentence naming the file, for a missing directory or file, an
    unreadable manifest, an unknown format version, a missing component or a changed byte.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is a file, not a bundle directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle {root} {what}; pass the directory written by `mirasol-edge export`.")
    manifest = read_manifest(root / MANIFEST)
    components = manifest.get("components")
    if not isinstance(components, dict):
        raise BundleError(f"{root / MANIFEST} lists no components; re-export the bundle.")
    expected: dict[str, str] = {}  # file -> sha256: the graphs, and any external weights the manifest lists
    for name in COMPONENTS:
        entry = components.get(name)
        if not isinstance(entry, dict) or "file" not in entry:
            raise BundleError(f"{root / MANIFEST} has no '{name}' component; re-export the bundle.")
        expected[entry["file"]] = str(entry.get("sha256", ""))
    for name, entry in (manifest.get("files") or {}).items():
        expected.setdefault(name, str(entry.get("sha256", "")) if isinstance(entry, dict) else "")
    for name, digest in expected.items():
        file = root / name
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing; copy the whole bundle directory or re-export it.")
        if verify:
            actual = sha256_of(file)
            if actual != digest.lower():
                raise BundleError(
                    f"bundle file {file} has changed since export (its sha256 differs from the manifest's); "
                    f"the file is corrupt or was edited: re-export or re-copy the whole bundle."
                )
    _check_tokenizer(manifest, root)
    return Bundle(path=root, manifest=manifest, chunk=_chunk_spec(manifest, root))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(file: Path) -> dict:
    """A bundle's manifest.json as a dict: BundleError if missing, not JSON, or of another format version."""
    if not file.is_file():
        raise BundleError(f"bundle manifest {file} is missing; pass the directory written by `mirasol-edge export`.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle manifest {file} is not valid JSON ({e}); re-export the bundle.") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle manifest {file} is not a JSON object; re-export the bundle.")
    version = manifest.get("format")
    if version == "mirasol-edge-bundle/1":
        raise BundleError(
            f"bundle {file.parent} was exported by an older mirasol-edge (format 1: caches that grow every step); "
            f"re-export it from its checkpoint: mirasol-edge export CHECKPOINT {file.parent} --force."
        )
    if version != FORMAT:
        raise BundleError(
            f"bundle manifest {file} has format {version!r}, but this runtime reads {FORMAT!r} only; "
            f"re-export the bundle with this version of mirasol-edge, or upgrade mirasol-edge."
        )
    for key in ("config", "chunk"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"bundle manifest {file} has no '{key}' section; re-export the bundle.")
    return manifest


def _chunk_spec(manifest: dict, root: Path) -> ChunkSpec:
    known = {f.name for f in fields(ChunkSpec)}  # the manifest may add derived values (frames_per_chunk, ...)
    try:
        return ChunkSpec(**{k: v for k, v in manifest["chunk"].items() if k in known})
    except (TypeError, AssertionError) as e:
        raise BundleError(f"bundle manifest {root / MANIFEST} has an invalid chunk spec ({e}); re-export the bundle.") from None


def _check_tokenizer(manifest: dict, root: Path) -> None:
    """The runtime's tokenizer is built in; a bundle trained with another one would answer garbage."""
    spec = manifest.get("tokenizer") or {}
    expected = {"vocab_size": tokenizer.VOCAB_SIZE, "pad": tokenizer.PAD, "bos": tokenizer.BOS,
                "eos": tokenizer.EOS, "sep": tokenizer.SEP}
    for key, value in expected.items():
        got = spec.get(key, spec.get(f"{key}_id", value))
        if got != value:
            raise BundleError(
                f"bundle {root} was made with another tokenizer ({key} = {got}, this runtime has {value}); "
                f"re-export it with this version of mirasol-edge."
            )
