"""A prepared dataset's pieces as MIDI files: the folder its `source` paths are relative to, and the first piece
of a split (the melody the demo accompanies, the real pieces the evaluation reads)."""

from __future__ import annotations

import json
from pathlib import Path

from midilm.core.errors import InputError
from midilm.data.corpus import default_cache_dir


def source_root(dataset_dir: str | Path) -> Path:
    """The folder a prepared dataset's `source` paths are relative to (--midi_dir, or the corpus cache)."""
    from midilm.data.prepare import CONFIG_FILE

    prepare_args = json.loads((Path(dataset_dir) / CONFIG_FILE).read_text())["prepare"]
    return Path(prepare_args.get("midi_dir") or prepare_args.get("cache_dir") or default_cache_dir())


def held_out_piece(dataset_dir: str | Path, split: str = "validation", composer: str | None = None) -> Path:
    """The MIDI file of the first piece (by source name) of a split of a prepared dataset, e.g. a
    validation-split Bach chorale whose soprano the demo accompanies (`--melody_midi` takes the
    marked melody track of a whole score)."""
    from datasets import load_from_disk  # here: heavy, and sampling never needs it

    dataset_dir = Path(dataset_dir)
    rows = load_from_disk(str(dataset_dir))[split].select_columns(["source", "composer"])
    names = rows.features["composer"].names
    sources = sorted(
        {r["source"] for r in rows if composer is None or names[r["composer"]].lower() == composer.lower()}
    )
    if not sources:
        raise InputError(f"{dataset_dir}: no {split} piece" + (f" of {composer}" if composer else ""))
    return source_root(dataset_dir) / sources[0]
