"""Labelled example files: JSONL (one ``{"text": ..., "label": ...}`` per line) or CSV with ``text`` and
``label`` columns. Blank lines are skipped; anything else malformed is an error naming file and line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path


def read_examples(paths: Iterable[Path | str]) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if path.suffix.lower() == ".csv":
            _read_csv(path, texts, labels)
        else:
            _read_jsonl(path, texts, labels)
    if not texts:
        raise ValueError("no examples found in " + ", ".join(str(p) for p in paths))
    return texts, labels


def _add(where: str, text: object, label: object, texts: list[str], labels: list[str]) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: 'text' must be a non-empty string")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: 'label' must be a non-empty string")
    texts.append(text)
    labels.append(label.strip())


def _read_jsonl(path: Path, texts: list[str], labels: list[str]) -> None:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected an object with 'text' and 'label'")
            _add(f"{path}:{n}", row.get("text"), row.get("label"), texts, labels)


def _read_csv(path: Path, texts: list[str], labels: list[str]) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: CSV needs 'text' and 'label' columns, has {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            _add(f"{path}:{n}", row.get("text"), row.get("label"), texts, labels)


def write_jsonl(path: Path, texts: Iterable[str], labels: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for text, label in zip(texts, labels, strict=True):
            fh.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
