"""midilm's measures as local Hugging Face `evaluate` modules.

    import evaluate
    from midilm.evaluate_modules import path

    adherence = evaluate.load(path("composer_adherence"))
    adherence.compute(predictions=["bach_0.mid", "bach_1.mid"], references=["bach", "bach"],
                      dataset="data", tokenizer="tokenizer")
    music = evaluate.load(path("music_metrics"))
    music.compute(predictions=["bach_0.mid"], real=["chorale.mid"])

Each module is a folder holding `<name>/<name>.py` (the layout `evaluate.load` reads from a local
path, offline). Both take MIDI file paths, or token-id lists with the tokenizer folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

MODULES = ("composer_adherence", "music_metrics")


def path(name: str) -> str:
    """The folder of one module, for `evaluate.load(path(name))`."""
    if name not in MODULES:
        raise ValueError(f"no midilm evaluate module {name!r}; choose one of {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / name)


def load_tokenizer_arg(tokenizer):
    """A miditok tokenizer given as itself, or as a tokenizer or model folder (None stays None)."""
    if tokenizer is None or not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from midilm.core.tokenizer import load_tokenizer  # here: miditok is heavy, and `path()` is all a caller may need

    return load_tokenizer(tokenizer)[0]


def read_pieces(items: Sequence, tokenizer=None) -> tuple[list, list[list[int]] | None]:
    """(Scores, token ids or None) of MIDI paths or of token-id lists (which need the tokenizer)."""
    from midilm.evaluation.composer_classifier.pieces import (  # here: loaded only when a module computes
        scores_from_ids,
        scores_from_midi,
    )

    items = list(items)
    if all(isinstance(x, (str, Path)) for x in items):
        return scores_from_midi(items), None
    if tokenizer is None:
        raise ValueError(
            "token-id predictions need tokenizer= (a midilm tokenizer or model folder, or a miditok tokenizer)"
        )
    ids = [[int(i) for i in row] for row in items]
    return scores_from_ids(tokenizer, ids), ids
