"""Sample sets and what is measured on them: drawn as generate.py draws them, or read from its files;
music metrics, distances to the real pieces, memorization."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from symusic import Score
from tqdm.auto import tqdm

from midilm.core.errors import InputError
from midilm.core.modeling import context_length
from midilm.evaluation.memorization import MemorizationIndex, PitchReader
from midilm.metrics.compare import compare, js_divergence, summary_distance
from midilm.metrics.piece import bar_windows, piece_metrics
from midilm.sampling.generation import build_plan, decode_ids
from midilm.sampling.grammar import count_syntax_errors
from midilm.sampling.sample_files import sample_stem
from midilm.sampling.settings import SamplingSettings


@dataclass
class Sampler:
    """Draws sample sets the way generate.py does (`build_plan` + `plan.run`: CFG, the grammar and
    the musical guard), every composer of a set in one batched call of at most `batch_samples` samples."""

    tokenizer: object
    composer_map: object
    config: object
    defaults: dict  # midilm.core.modeling.sampling_defaults
    max_new_tokens: int
    device: str
    batch_samples: int = 64

    def sample(
        self,
        model,
        composers: list[str],
        guidance_scale: float,
        seed: int,
        guard: bool = True,
        long_tokens: int | None = None,
    ) -> list[dict]:
        """One sample per entry of `composers` (names, or `none`). A batch's seed is `seed` plus its first
        sample's index, so the same call with the guard off draws the same tokens until the guard steps in.
        `long_tokens`: instead of `max_new_tokens`, exactly that many (EOS held off), written in windows
        beyond the context; each sample records the `windows` its batch took."""
        out, counts = [], {}
        length = {"max_new_tokens": self.max_new_tokens}
        if long_tokens is not None:
            length = {"max_new_tokens": long_tokens, "min_new_tokens": long_tokens}
        for start in range(0, len(composers), self.batch_samples):
            names = composers[start : start + self.batch_samples]
            settings = SamplingSettings(guidance_scale=guidance_scale, seed=seed + start, guard=guard, **length)
            settings = settings.resolve(self.defaults, context_length(self.config))
            plan = build_plan(self.tokenizer, self.composer_map, self.config, settings, names, device=self.device)
            for composer, row in zip(names, plan.sample_ids(plan.run(model))):
                index = counts[composer] = counts.get(composer, -1) + 1
                out.append(
                    {
                        "composer": composer,
                        "name": sample_stem(composer, index),
                        "ids": row,
                        "score": decode_ids(self.tokenizer, row),
                        "guard": plan.settings["guard"],
                        "windows": plan.windows,
                    }
                )
        return out


def read_samples(samples_dir: Path, composers: list[str], tokenizer) -> tuple[dict[str, list[dict]], list[float]]:
    """generate.py's `<composer>_<i>.mid` files (tokens from the .json beside each, if there), per composer;
    and the guidance scales recorded in those .json files."""
    if not samples_dir.is_dir():
        raise InputError(f"--samples_dir {samples_dir}: no such folder")
    found, scales = {}, []
    for composer in composers:
        stem = re.escape(sample_stem(composer, 0)[: -len("_0")])
        paths = sorted(
            (p for p in samples_dir.iterdir() if re.fullmatch(rf"{stem}_(\d+)\.mid", p.name)),
            key=lambda p: int(p.stem.rsplit("_", 1)[1]),
        )
        if not paths:
            raise InputError(
                f"--samples_dir {samples_dir}: no {sample_stem(composer, 0)}.mid (samples of {composer}); run "
                "generate.py --composer all first, or leave --samples_dir out to sample here"
            )
        samples = []
        for path in paths:
            try:
                score = Score(path)
            except Exception as err:  # symusic raises plain RuntimeError on a broken file
                raise InputError(f"--samples_dir: {path} is not a readable MIDI file ({err})") from err
            record = path.with_suffix(".json")
            info = json.loads(record.read_text()) if record.is_file() else {}
            ids = info.get("tokens") or tokenizer.encode(score).ids
            if "settings" in info:
                scales.append(
                    float(info["settings"].get("effective_guidance_scale", info["settings"].get("guidance_scale")))
                )
            samples.append(
                {"composer": composer, "name": path.stem, "ids": list(ids), "score": score, "file": str(path)}
            )
        found[composer] = samples
    return found, scales


def measure(pieces: list[dict], tokenizer, index: MemorizationIndex, desc: str) -> list[dict]:
    """Per piece: every `piece_metrics` value, the syntax error rate of its ids and the longest run of
    its pitch intervals that one training piece holds at any transposition (`midilm.evaluation.memorization`).
    Returns JSON-ready dicts (no ids, no Score)."""
    reader = PitchReader.for_tokenizer(tokenizer)
    rows = []
    for piece in tqdm(pieces, desc=desc, unit="piece", leave=False):
        metrics = piece_metrics(piece["score"], syntax_error_rate=count_syntax_errors(tokenizer, piece["ids"]))
        pitches = reader.pitches(piece["ids"])
        run = index.longest_run(pitches)
        rows.append(
            {
                "composer": piece["composer"],
                "name": piece["name"],
                "tokens": len(piece["ids"]),
                **metrics,
                "longest_training_run": run.length,
                "longest_training_run_share": run.length / (len(pitches) - 1) if len(pitches) > 1 else None,
                "longest_training_run_source": run.source,
            }
        )
    return rows


def passage_runs(pieces: list[dict], tokenizer, index: MemorizationIndex, n_notes: int) -> list[dict]:
    """`measure`'s longest shared interval run of `pieces` cut into successive passages of `n_notes` notes
    (a shorter remainder dropped, a shorter piece whole): real pieces measured at the samples' length, since a
    whole piece holds more chances to share a long run than a sample does."""
    reader = PitchReader.for_tokenizer(tokenizer)
    rows = []
    for piece in pieces:
        pitches = reader.pitches(piece["ids"])
        for start in range(0, max(len(pitches) - n_notes, 0) + 1, n_notes):
            window = pitches[start : start + n_notes]
            rows.append(
                {
                    "composer": piece["composer"],
                    "name": piece["name"],
                    "n_notes": len(window),
                    "longest_training_run": index.longest_run(window).length,
                }
            )
    return rows


def median_notes(pieces: list[dict]) -> int:
    """The median note count of measured pieces: the passage length real pieces are cut to for memorization."""
    return max(2, int(np.median([p["n_notes"] for p in pieces]))) if pieces else 2


def real_passages(real: list[dict], n_bars: int) -> list[dict]:
    """The music metrics of real pieces cut into passages of `n_bars` bars (`midilm.metrics.piece.bar_windows`),
    each with its piece's composer and name: the reference a set of samples that long is compared with."""
    return [
        {"composer": p["composer"], "name": p["name"], **piece_metrics(w)}
        for p in tqdm(real, desc=f"measuring real passages of {n_bars} bars", unit="piece", leave=False)
        for w in bar_windows(p["score"], n_bars)
    ]


def mean_histogram(pieces: list[dict], key: str) -> list[float] | None:
    hists = [p[key] for p in pieces if p.get(key) and sum(p[key]) > 0]
    return np.mean(hists, axis=0).tolist() if hists else None


def set_comparison(generated: list[dict], real: list[dict], composers: list[str]) -> dict:
    """`compare` per composer and pooled, with `summary_distance` of each, and its mean over composers;
    `real` is the reference (`real_passages` as long as the generated pieces)."""
    per_composer = {
        c: compare([p for p in generated if p["composer"] == c], [p for p in real if p["composer"] == c])
        for c in composers
    }
    distances = {c: summary_distance(v) for c, v in per_composer.items()}
    mean = {
        k: mean_or_none([d[k] for d in distances.values()])
        for k in ("mean_gap", "mean_overlap", "pitch_class_js", "duration_js")
    }
    pooled = compare(generated, real)
    return {
        "per_composer": per_composer,
        "pooled": pooled,
        "distance": {"per_composer": distances, "mean_over_composers": mean, "pooled": summary_distance(pooled)},
    }


def sweep_row(samples: list[dict], real: list[dict], composer: str, composers: list[str]) -> dict:
    """How far one composer's samples at one scale are from that composer's real pieces (and from the others')."""
    mine = [p for p in samples if p["composer"] == composer]
    own = [p for p in real if p["composer"] == composer]
    row = summary_distance(compare(mine, own))
    gen_pc = mean_histogram(mine, "pitch_class_histogram")
    others = [
        mean_histogram([p for p in real if p["composer"] == c], "pitch_class_histogram")
        for c in composers
        if c != composer
    ]
    others = [h for h in others if h is not None]
    row["pitch_class_js_other_composers"] = (
        mean_or_none([js_divergence(gen_pc, h) for h in others]) if gen_pc and others else None
    )
    row["syntax_error_rate"] = mean_or_none([p["syntax_error_rate"] for p in mine])
    row["notes"] = mean_or_none([p["n_notes"] for p in mine])
    runs = [p["longest_training_run"] for p in mine]
    row["longest_training_run_max"] = max(runs) if runs else None
    row["longest_training_run_median"] = float(np.median(runs)) if runs else None
    return row


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def memorization(pieces: list[dict], composers: list[str]) -> dict:
    """Longest shared interval runs (see `measure`) per composer and over all: count, max, median."""
    out = {}
    for c in [*composers, "all"]:
        runs = [p["longest_training_run"] for p in pieces if c == "all" or p["composer"] == c]
        notes = [p["n_notes"] for p in pieces if c == "all" or p["composer"] == c]
        out[c] = {
            "n": len(runs),
            "max": max(runs) if runs else None,
            "median": float(np.median(runs)) if runs else None,
            "median_notes": float(np.median(notes)) if notes else None,
        }
    return out
