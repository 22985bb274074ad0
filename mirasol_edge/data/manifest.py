"""Dataset manifests: one JSON object per line, one (video, question, answer) per row.

    {"video": "clips/000000.mp4", "question": "how many beeps are there?", "answer": "3",
     "family": "audio", "template": "audio_beeps", "seed": 123}

"video" is relative to the manifest's folder (or absolute). "question" and "answer" are
required; "family" and "template" default to "unknown"; "seed" is optional; other keys
are kept in ManifestRow.extra. Blank lines are skipped. See docs/data.md.

Needs only the standard library (no torch, no numpy).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

REQUIRED = ("video", "question", "answer")
KNOWN = (*REQUIRED, "family", "template", "seed")


@dataclass(frozen=True)
class ManifestRow:
    video: Path  # absolute
    question: str
    answer: str
    family: str = "unknown"
    template: str = "unknown"
    seed: int | None = None
    extra: dict = field(default_factory=dict, compare=False)


def _parse_row(obj: Any, base: Path, where: str, check_files: bool) -> ManifestRow:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a row must be a JSON object, got {type(obj).__name__}.")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"{where}: the row lacks {', '.join(repr(k) for k in missing)} (needs {', '.join(REQUIRED)}).")
    for k in ("video", "question", "answer"):
        if not isinstance(obj[k], str) or not obj[k].strip():
            raise ValueError(f"{where}: {k!r} must be a non-empty string, got {obj[k]!r}.")
    for k in ("family", "template"):
        if k in obj and not isinstance(obj[k], str):
            raise ValueError(f"{where}: {k!r} must be a string, got {obj[k]!r}.")
    seed = obj.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{where}: 'seed' must be an integer or absent, got {seed!r}.")
    video = Path(obj["video"])
    video = (video if video.is_absolute() else base / video).resolve()
    if check_files and not video.is_file():
        raise ValueError(f"{where}: the video {obj['video']!r} does not exist (looked for {video}).")
    return ManifestRow(
        video=video, question=obj["question"], answer=obj["answer"],
        family=obj.get("family", "unknown"), template=obj.get("template", "unknown"), seed=seed,
        extra={k: v for k, v in obj.items() if k not in KNOWN},
    )


def load_manifest(path: str | os.PathLike, check_files: bool = True) -> list[ManifestRow]:
    """Read a .jsonl manifest; video paths are resolved against the manifest's folder.

    Raises ValueError naming the file and line for a malformed row, or (check_files) a
    video file that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest {path} does not exist.")
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from None
            rows.append(_parse_row(obj, base, where, check_files))
    return rows


def _as_dict(row: ManifestRow | Mapping) -> dict:
    if isinstance(row, ManifestRow):
        d = {"video": row.video, "question": row.question, "answer": row.answer,
             "family": row.family, "template": row.template}
        if row.seed is not None:
            d["seed"] = row.seed
        d.update(row.extra)
        return d
    return dict(row)


def write_manifest(rows: Iterable[ManifestRow | Mapping], path: str | os.PathLike) -> Path:
    """Write rows as .jsonl; video paths inside the manifest's folder are stored relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            d = _as_dict(row)
            video = Path(d["video"])
            if video.is_absolute():
                try:
                    video = video.resolve().relative_to(base)
                except ValueError:
                    pass  # outside the manifest's folder: keep absolute
            d["video"] = video.as_posix()
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _get(row: Any, key: str, default: str = "unknown") -> str:
    if isinstance(row, Mapping):
        return row.get(key, default)
    return getattr(row, key, default)


def majority_baseline(train_rows: Iterable, test_rows: Iterable) -> dict[str, float]:
    """Accuracy per family of answering every question with its template's most frequent train answer.

    The question-only floor: a model that beats it uses the media. Rows may be
    ManifestRow, dicts, or synth.QA. Templates unseen in train fall back to the family's
    (then the overall) most frequent answer. Ties break on the answer text (deterministic).
    """
    by_tpl: dict[str, Counter] = defaultdict(Counter)
    by_family: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for r in train_rows:
        a = _get(r, "answer")
        by_tpl[_get(r, "template")][a] += 1
        by_family[_get(r, "family")][a] += 1
        overall[a] += 1

    def top(c: Counter) -> str | None:
        return min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] if c else None

    guess_tpl = {t: top(c) for t, c in by_tpl.items()}
    guess_family = {f: top(c) for f, c in by_family.items()}
    fallback = top(overall)
    hits: dict[str, int] = Counter()
    total: dict[str, int] = Counter()
    for r in test_rows:
        fam, tpl = _get(r, "family"), _get(r, "template")
        guess = guess_tpl.get(tpl) or guess_family.get(fam) or fallback
        hits[fam] += int(guess == _get(r, "answer"))
        total[fam] += 1
    return {f: hits[f] / total[f] for f in sorted(total)}
