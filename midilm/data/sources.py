"""Where the MIDI files come from and which composer each belongs to: a folder, a metadata file."""

from __future__ import annotations

import csv
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from midilm.core.errors import InputError
from midilm.core.tokenizer import OTHER

MIDI_SUFFIXES = {".mid", ".midi"}


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    source: str  # path relative to the corpus root, posix style: the split and dedup key
    composer: str


def composer_label(name: str) -> str:
    """A composer's name as the user wrote it, in one Unicode form: macOS writes folder names
    decomposed (`Dvor\u030ca\u0301k`), a CSV typed elsewhere composed (`Dvořák`); both are one composer."""
    return unicodedata.normalize("NFC", name.strip())


def find_midi_files(midi_dir: Path) -> list[SourceFile]:
    """Every .mid/.midi (any case) under `midi_dir`, labelled by its first sub-folder (`OTHER` at the top)."""
    if not midi_dir.is_dir():
        raise InputError(f"--midi_dir {midi_dir}: no such folder")
    files = []
    for path in sorted(midi_dir.rglob("*")):
        if path.suffix.lower() in MIDI_SUFFIXES and path.is_file():
            rel = path.relative_to(midi_dir)
            composer = composer_label(rel.parts[0]) if len(rel.parts) > 1 else OTHER
            files.append(SourceFile(path.resolve(), rel.as_posix(), composer))
    return files


def read_metadata(metadata: Path, midi_dir: Path | None) -> list[SourceFile]:
    """Rows `path,composer` from a CSV or JSONL file; relative paths are taken from `midi_dir`
    (or from the metadata file's own folder when no `--midi_dir` is given)."""
    if not metadata.is_file():
        raise InputError(f"--metadata {metadata}: no such file")
    root = midi_dir if midi_dir is not None else metadata.parent
    try:
        if metadata.suffix.lower() in {".jsonl", ".json"}:
            rows = [json.loads(line) for line in metadata.read_text().splitlines() if line.strip()]
        else:
            with metadata.open(newline="") as f:
                rows = list(csv.DictReader(f))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"--metadata {metadata}: cannot parse it ({err}); expected CSV or JSONL") from err
    files = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("path") or not row.get("composer"):
            raise InputError(f"--metadata {metadata}: row {number} needs non-empty 'path' and 'composer' columns")
        path = Path(row["path"])
        absolute = path if path.is_absolute() else root / path
        try:
            source = absolute.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            source = absolute.resolve().as_posix()
        files.append(SourceFile(absolute.resolve(), source, composer_label(str(row["composer"]))))
    return files


def relabel(files: list[SourceFile], labels: list[SourceFile]) -> list[SourceFile]:
    """Metadata labels override folder labels; files the metadata names that the folder lacks are added."""
    by_path = {f.path: f for f in files}
    for label in labels:
        by_path[label.path] = SourceFile(label.path, by_path.get(label.path, label).source, label.composer)
    return sorted(by_path.values(), key=lambda f: f.source)
