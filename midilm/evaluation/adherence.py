"""The guidance sweep's verdict: composer adherence by the independent classifier
(midilm.evaluation.composer_classifier, through the `composer_adherence` evaluate module) beside degenerate
samples at every scale, and the guidance default it chooses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import evaluate
import numpy as np

from midilm.core.modeling import GUIDANCE_KEY, TRAINING_CONFIG_FILE
from midilm.evaluate_modules import path
from midilm.evaluation.composer_classifier.features import typical_length
from midilm.evaluation.samples import mean_or_none
from midilm.metrics.piece import pooled_vertical_seconds
from midilm.sampling.guard import onset_counts
from midilm.training.hub import rewrite_model_card

UNCONDITIONAL = "unconditional"


def sweep_key(scale: float, guard: bool = True) -> str:
    """The name of one sweep sample set (also its folder of MIDI files beside the report)."""
    return f"sweep {scale:g}" if guard else f"sweep_unguarded {scale:g}"


def degenerate(pieces: list[dict], tokenizer, thresholds: dict[str, int]) -> dict:
    """How many pieces start more notes at one onset than `thresholds` allows their composer (the most
    any training piece of that composer holds; `none`: the most of any composer), with the largest
    onset of each piece (`midilm.sampling.guard.onset_counts`)."""
    overall = max(thresholds.values(), default=0)
    largest = [onset_counts(tokenizer, p["ids"])[0] for p in pieces]
    over = [n > thresholds.get(p["composer"], overall) for p, n in zip(pieces, largest)]
    return {
        "count": int(sum(over)),
        "n": len(pieces),
        "share": sum(over) / len(pieces) if pieces else None,
        "max_notes_per_onset": max(largest, default=None),
        "pieces": [p["name"] for p, o in zip(pieces, over) if o],
    }


def choose_guidance(rows: list[dict], real_rate: float | None) -> dict:
    """The default guidance scale from the sweep: the highest overall adherence among the scales whose
    share of degenerate samples with the guard on is at most the real held-out pieces' (ties go to the
    smaller scale, so s = 1 unless guidance measurably helps). Without such a scale, the one with the
    fewest degenerate samples. Returns the scale (None when adherence is not measurable) and the reason."""
    measured = [r for r in rows if r["adherence"] is not None]
    if not measured:
        return {
            "scale": None,
            "reason": (
                "composer adherence is not measurable here (see the classifier's reasons), so the data cannot "
                "choose a scale"
            ),
        }
    limit = real_rate or 0.0
    allowed = [r for r in measured if r["degenerate_guard_on"]["share"] <= limit + 1e-12]
    if allowed:
        best = max(allowed, key=lambda r: (r["adherence"], -r["scale"]))
        reason = (
            f"s = {best['scale']:g} has the highest composer adherence ({best['adherence']:.2f}) of the scales whose "
            "share of "
            f"degenerate samples with the guard on is at most the real held-out pieces' ({limit:.2f})"
        )
        excluded = [r for r in measured if r not in allowed]
        if excluded:
            reason += "; " + ", ".join(f"s = {r['scale']:g}" for r in excluded) + " exceeded it"
        if best["scale"] == 1.0:
            reason += "; guidance did not beat the composer token alone, so the default is no guidance (s = 1)"
    else:
        best = min(measured, key=lambda r: (r["degenerate_guard_on"]["share"], -r["adherence"], r["scale"]))
        reason = (
            f"no scale kept degenerate samples at or below the real pieces' rate ({limit:.2f}); s = "
            f"{best['scale']:g} had the fewest "
            f"({best['degenerate_guard_on']['share']:.2f}), then the highest adherence ({best['adherence']:.2f})"
        )
    return {"scale": best["scale"], "reason": reason}


class Judges:
    """midilm's `evaluate` modules, called as a user would: the first adherence call trains the
    classifier on the dataset's real pieces (crops as long as `crop` says), which the module keeps for
    the later calls of this process; the music-metric gap to each composer's real pieces."""

    def __init__(self, dataset_dir, tokenizer, composers: list[str], real: list[dict], crop: dict):
        self.dataset_dir, self.tokenizer, self.composers, self.crop = dataset_dir, tokenizer, composers, crop
        self.adherence = evaluate.load(path("composer_adherence"), keep_in_memory=True)
        self.music = evaluate.load(path("music_metrics"), keep_in_memory=True)
        self.real_ids = {c: [p["ids"] for p in real if p["composer"] == c] for c in composers}

    def judge(self, samples: list[dict]) -> dict:
        return self.adherence.compute(
            predictions=[p["ids"] for p in samples],
            references=[p["composer"] for p in samples],
            dataset=self.dataset_dir,
            tokenizer=self.tokenizer,
            **self.crop,
        )

    def metric_gap(self, samples: list[dict], window_bars: int) -> float | None:
        """The mean over composers of the standardised gap to the composer's real passages of `window_bars` bars."""
        gaps = []
        for c in self.composers:
            mine = [p["ids"] for p in samples if p["composer"] == c]
            if mine and self.real_ids[c]:
                result = self.music.compute(
                    predictions=mine, real=self.real_ids[c], tokenizer=self.tokenizer, real_windows=window_bars
                )
                gaps.append(result["distance"]["mean_gap"])
        return mean_or_none(gaps)


def seconds_by_composer(measured: list[dict], composers: list[str]) -> dict:
    """The share of vertical seconds (pairs of notes that start together a second apart) per composer, pooled
    over pairs."""
    return {c: pooled_vertical_seconds([p for p in measured if p["composer"] == c]) for c in composers}


def run_summary(measured: list[dict]) -> dict:
    """The longest shared interval runs of measured pieces: max and median."""
    runs = [p["longest_training_run"] for p in measured]
    return {"max": max(runs, default=None), "median": float(np.median(runs)) if runs else None}


def scale_row(
    scale: float,
    result: dict,
    guarded: list[dict],
    unguarded: list[dict],
    measured: list[dict],
    gap: float | None,
    tokenizer,
    thresholds: dict[str, int],
) -> dict:
    """One row of the adherence table: the classifier's verdict at `scale` beside what the samples are made of."""
    return {
        "scale": scale,
        "adherence": result["adherence"],
        "interval": result["adherence_interval"],
        "n": result["overall"]["n"],
        "mean_probability": result["mean_probability"],
        "per_composer": {c: v.get("share") if v.get("measurable") else None for c, v in result["per_composer"].items()},
        "degenerate_guard_on": degenerate(guarded, tokenizer, thresholds),
        "degenerate_guard_off": degenerate(unguarded, tokenizer, thresholds),
        "syntax_error_rate_max": max((p["syntax_error_rate"] for p in measured), default=None),
        "metric_gap": gap,
        "notes_per_sample": mean_or_none([p["n_notes"] for p in measured]),
        "memorization": run_summary(measured),
        "vertical_seconds": seconds_by_composer(measured, list(result["per_composer"])),
    }


def composer_adherence(
    args,
    tokenizer,
    composers: list[str],
    real: list[dict],
    real_measured: list[dict],
    drawn: dict[str, list[dict]],
    sweep_sets: dict[float, list[dict]],
    thresholds: dict[str, int],
    guard: dict | None,
    window_bars: int,
    real_runs: list[dict],
    dataset=None,
) -> dict:
    """The adherence table: the composer classifier's ceiling on real held-out crops, the unconditional
    base rate, and at every sweep scale adherence beside degenerate samples (guard on and off), syntax
    errors, the music-metric gap to the composer's real passages of `window_bars` bars (the samples'
    median length), notes per sample and memorization (the real pieces' as `real_runs`: passages as long as the
    samples).
    Adherence and the metric gap come from midilm's `evaluate` modules (`Judges`); the classifier's
    crops are as long as the median sample. The classifier learns from `dataset` (a DatasetDict: a
    fine-tuning dataset joined with its base's), else from --dataset_dir."""
    guided = [p for s in args.scales for p in drawn[sweep_key(s)]]
    crop = {
        "crop_length": typical_length([p["score"] for p in guided], "notes"),
        "crop_unit": "notes",
        "seed": args.seed,
    }
    judges = Judges(args.dataset_dir if dataset is None else dataset, tokenizer, composers, real, crop)
    groups = {UNCONDITIONAL: judges.judge(drawn[UNCONDITIONAL])}
    rows = []
    for s in args.scales:
        result = groups[f"s = {s:g}"] = judges.judge(drawn[sweep_key(s)])
        gap = judges.metric_gap(drawn[sweep_key(s)], window_bars)
        rows.append(
            scale_row(
                s,
                result,
                drawn[sweep_key(s)],
                drawn[sweep_key(s, guard=False)],
                sweep_sets[s],
                gap,
                tokenizer,
                thresholds,
            )
        )
    first = groups[UNCONDITIONAL]
    real_rate = degenerate(real, tokenizer, thresholds)
    return {
        "settings": {
            "scales": args.scales,
            "samples_per_composer": args.adherence_samples_per_composer,
            **crop,
            "real_window_bars": window_bars,
        },
        "classifier": {
            **first["classifier"],
            "chance": 1 / len(first["classifier"]["composers"]) if first["classifier"]["composers"] else None,
        },
        "ceiling": first["ceiling"],
        "groups": {
            k: {key: v[key] for key in ("per_composer", "overall", "unconditional", "confusion", "predicted")}
            for k, v in groups.items()
        },
        "rows": rows,
        "real": {
            "degenerate": real_rate,
            "syntax_error_rate_max": max((p["syntax_error_rate"] for p in real_measured), default=None),
            "memorization": run_summary(real_runs),
            "vertical_seconds": seconds_by_composer(real_measured, composers),
        },
        "unconditional": {"degenerate_guard_on": degenerate(drawn[UNCONDITIONAL], tokenizer, thresholds)},
        "degenerate_threshold": thresholds,
        "guard": guard,
        "choice": choose_guidance(rows, real_rate["share"]),
    }


def write_default_guidance(model_dir: str | Path, scale: float) -> Path:
    """Set config.json's `midilm_guidance_scale` in a model folder: written whole under a temporary name,
    then renamed over the old file, so a reader never sees half a config."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config[GUIDANCE_KEY] = float(scale)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
    if (Path(model_dir) / TRAINING_CONFIG_FILE).is_file():  # a folder train.py wrote: its card states the default too
        rewrite_model_card(model_dir)
    return path
