"""Read an exported bundle (docs/bundle.md): its manifest, checked, and every file's sha256.

The one reader of bundles: the runtime, `inspect` and export's own checks all come here. Nothing
here touches ONNX Runtime; `session.Runtime` turns a checked `Bundle` into sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath

from mirasol_edge.runtime import contract, media, tokenizer
from mirasol_edge.runtime.chunking import KEEP_PARTIAL_FRACTION, ChunkSpec
from mirasol_edge.runtime.contract import COMPONENTS, READABLE_FORMATS

MANIFEST = "manifest.json"
_HASH_BLOCK = 1 << 20  # hash in 1 MiB reads: large bundles never sit whole in memory
_OLDER_FORMATS = {  # format -> what it was, for the one-sentence hint to re-export
    "mirasol-edge-bundle/1": "caches that grow every step",
    "mirasol-edge-bundle/2": "a manifest without the media rules and tokenizer a client needs",
    "mirasol-edge-bundle/3": "a summary memory's keys and values recomputed by context_cross_kv every chunk",
}


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
        """The model config as the bundle carries it: ModelConfig.to_dict() without training's fields."""
        return self.manifest["config"]

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def latents_per_chunk(self) -> int:
        """m: cache positions one chunk adds to the temporal and cross caches."""
        return int(self.config["combiner"]["latents"])

    @property
    def max_text_len(self) -> int:
        return int(self.config["max_text_len"])

    @property
    def temporal_window(self) -> int:
        """Chunks the caches keep by default: the window the model was trained with."""
        return int(self.config["temporal_window"])

    @property
    def max_new_tokens(self) -> int:
        return int(self.manifest["runtime_defaults"]["max_new_tokens"])

    def file(self, component: str) -> Path:
        return bundle_file(self.path, self.manifest["components"][component]["file"])


def tokenizer_spec() -> dict:
    """This runtime's tokenizer as a manifest states it: token id = UTF-8 byte + byte_offset, and the special ids."""
    return {"kind": "utf8-bytes", "byte_offset": tokenizer.NUM_SPECIAL, "pad": tokenizer.PAD, "bos": tokenizer.BOS,
            "eos": tokenizer.EOS, "sep": tokenizer.SEP}


def media_rules() -> dict:
    """The rules this runtime cuts media into chunks by, as a manifest states them (docs/bundle.md, Media)."""
    return {
        "keep_partial_fraction": KEEP_PARTIAL_FRACTION,
        "audio_gap_seconds": media.AUDIO_GAP_SECONDS,
        "max_timestamp_jump_seconds": media.MAX_TIMESTAMP_JUMP_SECONDS,
        "max_backward_step_seconds": media.MAX_BACKWARD_STEP_SECONDS,
        "duration_slack_seconds": media.DURATION_SLACK_SECONDS,
        "max_av_skew_seconds": media.MAX_AV_SKEW_SECONDS,
    }


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read `path`/manifest.json, check it (manifest_faults), and (if verify) every file's size and sha256.

    Raises BundleError, in one sentence naming the file, for a missing directory or file, an
    unreadable or invalid manifest, an unknown format version, a file outside the bundle, or a
    changed byte. Every file is checked to lie inside the bundle before anything is opened.
    """
    root = Path(path)
    manifest = read_manifest(root)
    faults = manifest_faults(manifest)
    if faults:
        raise BundleError(f"bundle manifest {root / MANIFEST} is invalid: {faults[0]}; re-export the bundle.")
    files = {name: bundle_file(root, name) for name in manifest["files"]}  # all checked before any is opened
    for file in files.values():
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing; copy the whole bundle directory or re-export it.")
    if verify:
        for name, file in files.items():
            if _file_status(file, manifest["files"][name]) != "ok":
                raise BundleError(
                    f"bundle file {file} has changed since export (its size or sha256 differs from the manifest's); "
                    f"the file is corrupt or was edited: re-export or re-copy the whole bundle."
                )
    known = {f.name for f in fields(ChunkSpec)}
    return Bundle(path=root, manifest=manifest, chunk=ChunkSpec(**{k: v for k, v in manifest["config"]["chunk"].items() if k in known}))


def verify_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the bundle at `path` once load_bundle has checked it and every file's sha256."""
    return load_bundle(path).manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """`path`/manifest.json as a dict, unchecked beyond its format version; BundleError, in one sentence,
    if `path` is not a bundle directory or its manifest is missing, not JSON, or of another format."""
    root = Path(path)
    if not root.is_dir():
        what = "is a file, not a bundle directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle {root} {what}; pass the directory written by `mirasol-edge export`.")
    file = root / MANIFEST
    if not file.is_file():
        raise BundleError(f"bundle manifest {file} is missing; pass the directory written by `mirasol-edge export`.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle manifest {file} is not valid JSON ({e}); re-export the bundle.") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle manifest {file} is not a JSON object; re-export the bundle.")
    version = manifest.get("format")
    if version in _OLDER_FORMATS:
        raise BundleError(
            f"bundle {root} was exported by an older mirasol-edge (format {version.rsplit('/', 1)[1]}: "
            f"{_OLDER_FORMATS[version]}); re-export it from its checkpoint: mirasol-edge export CHECKPOINT {root} --force."
        )
    if version not in READABLE_FORMATS:
        raise BundleError(
            f"bundle manifest {file} has format {version!r}, but this runtime reads {' and '.join(map(repr, READABLE_FORMATS))} only; "
            f"re-export the bundle with this version of mirasol-edge, or upgrade mirasol-edge."
        )
    return manifest


def manifest_faults(manifest: dict) -> list[str]:
    """What is wrong with a manifest of this format, one sentence each; [] if nothing. Nothing is opened."""
    config = manifest.get("config")
    faults = contract.config_faults(config)
    model = config if not faults else None  # a config safe to read further
    files = manifest.get("files")
    if not isinstance(files, dict):
        faults.append("it lists no 'files'")
        files = {}
    for name, entry in files.items():
        if not (isinstance(entry, dict) and _is_sha256(entry.get("sha256")) and _is_count(entry.get("bytes"))):
            faults.append(f"its entry for file {name!r} is not {{sha256, bytes}}")
    faults += _rule_faults("tokenizer", manifest.get("tokenizer"), tokenizer_spec())
    faults += _rule_faults("media", manifest.get("media"), media_rules())
    if model is not None and model["vocab_size"] != tokenizer.VOCAB_SIZE:
        faults.append(f"its config vocab_size is {model['vocab_size']}, but its tokenizer has {tokenizer.VOCAB_SIZE} tokens")
    value = _get(manifest, "runtime_defaults", "max_new_tokens")
    if not (_is_count(value) and 1 <= value <= (model["max_text_len"] if model is not None else contract.MAX_DIM)):
        faults.append(f"its runtime_defaults.max_new_tokens is {value!r}, not a count from 1 to config max_text_len")
    if not isinstance(manifest.get("precision"), str):
        faults.append("it states no 'precision'")
    components = manifest.get("components")
    if not isinstance(components, dict):
        return faults + ["it lists no 'components'"]
    specs = None
    if model is not None:
        nv = _get(components, "video_extractor", "outputs", "video_tokens", "shape")
        specs = contract.graph_specs(contract.Dims.from_config(model, nv[1] if _is_shape(nv) and isinstance(nv[1], int) else None))
    if specs is not None:
        faults += [f"it has a '{name}' component its config does not imply" for name in components if name not in specs]
    for name in specs or COMPONENTS:
        entry = components.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            faults.append(f"it has no '{name}' component")
            continue
        if entry["file"] not in files:
            faults.append(f"its '{name}' file {entry['file']!r} is not among its files")
        extra = entry.get("external_data")
        if not isinstance(extra, list) or not all(isinstance(e, dict) and e.get("file") in files for e in extra):
            faults.append(f"its '{name}' external data is not a list of its files")
        if specs is not None:
            for kind in ("inputs", "outputs"):
                want = {n: t.to_dict() for n, t in getattr(specs[name], kind).items()}
                if entry.get(kind) != want:
                    faults.append(f"its '{name}' {kind} differ from what its config implies (docs/bundle.md)")
    return faults


def _rule_faults(section: str, got, want: dict) -> list[str]:
    """A section the runtime implements rather than reads (tokenizer, media): it must state exactly this runtime's."""
    if not isinstance(got, dict):
        return [f"it has no '{section}' section"]
    return [f"its {section}.{key} is {got.get(key)!r}, but this runtime has {value!r} (made by another version)"
            for key, value in want.items() if got.get(key) != value]


def check_files(path: str | os.PathLike, manifest: dict) -> dict[str, str]:
    """Every file the manifest lists -> "ok", "missing", "changed" (size or sha256 differs) or
    "outside" (the name leads out of the bundle: never opened). Every name is checked before any file is opened."""
    root = Path(path)
    located: dict[str, Path | None] = {}
    for name in manifest["files"]:
        try:
            located[str(name)] = bundle_file(root, name)
        except BundleError:
            located[str(name)] = None
    return {name: "outside" if file is None else _file_status(file, manifest["files"][name]) for name, file in located.items()}


def _file_status(file: Path, entry) -> str:
    if not file.is_file():
        return "missing"
    # The size first: a huge file that is not ours is never hashed.
    if not isinstance(entry, dict) or file.stat().st_size != entry.get("bytes") or sha256_of(file) != str(entry.get("sha256")).lower():
        return "changed"
    return "ok"


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


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
