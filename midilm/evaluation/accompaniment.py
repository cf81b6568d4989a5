"""Accompaniment figures: the trained and the random-weight model accompany real held-out melodies;
melody adherence and harmonic fit beside the real piece's."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from symusic import Score
from tqdm.auto import tqdm

from midilm.core.errors import InputError
from midilm.core.modeling import context_length
from midilm.evaluation.samples import mean_or_none
from midilm.metrics.accompaniment import accompaniment_metrics
from midilm.sampling.accompaniment import accompany, check_melody_fits, melody_prompt
from midilm.sampling.sample_files import sample_stem
from midilm.sampling.settings import SamplingSettings

ACCOMPANIMENT_METRICS = ("melody_adherence", "harmonic_fit", "beat_fit", "key_fit")


def accompaniment_pieces(pieces: list[dict], composers: list[str], per_composer: int) -> list[dict]:
    """The `per_composer` held-out pieces of each composer with the fewest notes (then by name): the
    ones a CPU accompanies in reasonable time."""
    chosen = []
    for c in composers:
        chosen += sorted((p for p in pieces if p["composer"] == c), key=lambda p: (p["n_notes"], p["source"]))[
            :per_composer
        ]
    return chosen


def evaluate_accompaniment(
    models: dict, tokenizer, composer_map, pieces: list[dict], root: Path, defaults: dict, seed: int
) -> tuple[dict, dict]:
    """Accompany the melody of each real piece (its marked melody track, else its top voice) with each
    model in `models`, under the piece's composer; measure melody adherence and harmonic fit of each
    result and of the real piece around the same melody. Returns the report section and the MIDI to write."""
    context = context_length(next(iter(models.values())).config)
    entries, midi = [], defaultdict(list)
    for piece in tqdm(pieces, desc="accompanying held-out melodies", unit="piece"):
        path = root / piece["source"]
        try:
            real = Score(path)
            melody = melody_prompt(tokenizer, real, name=str(path))
            check_melody_fits(melody, context)
        except (InputError, RuntimeError, OSError, ValueError) as err:  # symusic: RuntimeError broken, ValueError gone
            print(f"warning: {path}: {err}; left out of the accompaniment figures")
            continue
        entry = {
            "composer": piece["composer"],
            "source": piece["source"],
            "bars": melody.num_bars,
            "melody": melody.source,
            "real": accompaniment_metrics(melody.melody, real),
        }
        stem = sample_stem(piece["composer"], sum(e["composer"] == piece["composer"] for e in entries))
        for name, model in models.items():
            result = accompany(
                model,
                tokenizer,
                composer_map,
                melody,
                [piece["composer"]],
                SamplingSettings(seed=seed),
                defaults=defaults,
            )[0]
            entry[name] = {
                **result.metrics(),
                "syntax_error_rate": result.syntax_error_rate,
                "cut_bars": result.cut_bars,
                "windows": result.windows,
            }
            midi[f"accompaniment_{name}"].append({"name": stem, "score": result.score})
        entries.append(entry)
    sets = ["trained", "random", "real"]
    mean = {k: {m: mean_or_none([e[k][m] for e in entries]) for m in ACCOMPANIMENT_METRICS} for k in sets}
    return {"pieces": entries, "mean": mean}, dict(midi)
