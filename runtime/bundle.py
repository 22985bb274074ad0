"""Open an exported bundle (docs/bundle.md): check its manifest and every file's sha256.

Nothing here touches ONNX Runtime; `session.Runtime` turns a checked `Bundle` into sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath

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
        return bundle_file(self.path, self.manifest["components"][component]["file"])


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read `path`/manifest.json, check it (manifest_faults), and (if verify) every file's sha256.

    Raises BundleError, in one sentence naming the file, for a missing directory or file, an
    unreadable or invalid manifest, an unknown format version, a file outside the bundle, or a
    changed byte. Every file is checked to lie inside the bundle before anything is opened.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is a file, not a bundle directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle {root} {what}; pass the directory written by `mirasol-edge export`.")
    manifest = read_manifest(root / MANIFEST)
    faults = manifest_faults(manifest)
    if faults:
        raise BundleError(f"bundle manifest {root / MANIFEST} is invalid: {faults[0]}; re-export the bundle.")
    files = {name: bundle_file(root, name) for name in manifest["files"]}  # all checked before any is opened
    for name, file in files.items():
        entry = manifest["files"][name]
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing; copy the whole bundle directory or re-export it.")
        if verify:
            if file.stat().st_size != entry["bytes"] or sha256_of(file) != entry["sha256"].lower():
                raise BundleError(
                    f"bundle file {file} has changed since export (its size or sha256 differs from the manifest's); "
                    f"the file is corrupt or was edited: re-export or re-copy the whole bundle."
                )
    _check_tokenizer(manifest, root)
    return Bundle(path=root, manifest=manifest, chunk=_chunk_spec(manifest, root))


def bundle_file(root: Path, name) -> Path:
    """The file a manifest names, as a path inside `root`; nothing is opened.

    BundleError unless `name` is a relative path of plain parts that stays inside the bundle
    directory once symlinks are followed: a manifest may not point at /etc/passwd, ../secret or
    a link leaving the bundle.
    """
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if (not parts or "\0" in name or "\\" in name or PurePosixPath(name).is_absolute()
            or any(p in ("..", ".") for p in parts)):
        raise BundleError(f"bundle manifest {root / MANIFEST} names {name!r}, which is not a file inside the bundle; re-export the bundle.")
    file = root.joinpath(*parts)
    if not file.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"bundle file {file} leads outside the bundle directory (a link); copy the real file into the bundle or re-export it.")
    return file


def manifest_faults(manifest: dict) -> list[str]:
    """What is wrong with a manifest of this format, one sentence each; [] if nothing. Nothing is opened."""
    from mirasol_edge.runtime import contract

    faults = contract.config_faults(manifest.get("config"))
    files = manifest.get("files")
    if not isinstance(files, dict):
        faults.append("it lists no 'files'")
        files = {}
    for name, entry in files.items():
        if not (isinstance(entry, dict) and _is_sha256(entry.get("sha256")) and _is_count(entry.get("bytes"))):
            faults.append(f"its entry for file {name!r} is not {{sha256, bytes}}")
    components = manifest.get("components")
    if not isinstance(components, dict):
        return faults + ["it lists no 'components'"]
    specs = None
    if not faults:
        video = components.get("video_extractor", {})
        nv = _get(video, "outputs", "video_tokens", "shape")
        specs = contract.graph_specs(contract.Dims.from_config(manifest["config"], nv[1] if _is_shape(nv) and isinstance(nv[1], int) else None))
    for name in COMPONENTS:
        entry = components.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            faults.append(f"it has no '{name}' component")
            continue
        if entry["file"] not in files or entry.get("sha256") != files[entry["file"]].get("sha256"):
            faults.append(f"its '{name}' file {entry['file']!r} is not among its files with the same sha256")
        for extra in entry.get("external_data") or []:
            if not isinstance(extra, dict) or extra.get("file") not in files:
                faults.append(f"its '{name}' external data is not among its files")
        if specs is not None:
            for kind in ("inputs", "outputs"):
                want = {n: t.to_dict() for n, t in getattr(specs[name], kind).items()}
                if entry.get(kind) != want:
                    faults.append(f"its '{name}' {kind} differ from what its config implies (docs/bundle.md)")
    chunk, config = manifest.get("chunk"), manifest.get("config")
    if isinstance(chunk, dict) and isinstance(config, dict) and any(chunk.get(k) != v for k, v in (config.get("chunk") or {}).items()):
        faults.append("its chunk spec differs from its model config's")
    defaults = manifest.get("runtime_defaults", {})
    max_text = config.get("max_text_len") if isinstance(config, dict) else None
    for key, high in (("temporal_window", contract.MAX_DIM), ("max_new_tokens", max_text if isinstance(max_text, int) else 1)):
        value = defaults.get(key) if isinstance(defaults, dict) else None
        if value is not None and not (_is_count(value) and 1 <= value <= high):
            faults.append(f"its runtime_defaults.{key} is {value!r}, outside 1..{high}")
    return faults


def _get(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _is_shape(value) -> bool:
    return isinstance(value, list) and len(value) > 1


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


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
