"""Preference tuning before and after: both classifiers, vertical seconds, metric gap, memorization, wall time.

    python bench/bench_preference.py --model_dir model_output --dataset_dir data --work_dir /tmp/bench_preference
    python bench/bench_preference.py --model_dir model_output --dataset_dir data --work_dir /tmp/bp \\
        --variants "rounds=1;rounds=2;rounds=2,pair_rule=best_worst"

Each variant (`;`-separated, each a comma-separated list of TuneArguments or ScoreWeights overrides,
e.g. "rounds=2,seconds_weight=20") runs tune.py's `tune()`
on the model from scratch (timed: the tuning wall time), then the model before tuning and each tuned model
draw --eval_samples per composer at the guidance the tuning used (same seeds for all), judged by the report's
classifier (the reward) and the independent n-gram classifier, with 95% Wilson intervals, vertical seconds
against the composer's real training pieces, the music-metric gap to real held-out passages as long as the
samples, notes per sample, memorization (max / median longest copied interval run against the real held-out
passages' max) and clusters. Prints one Markdown table and writes results.json under --work_dir.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import fields
from pathlib import Path

from midilm.core.modeling import context_length, load_midilm_dir, sampling_defaults
from midilm.core.tokenizer import load_tokenizer
from midilm.evaluation.ngram_classifier import fit_ngram_classifier
from midilm.evaluation.samples import Sampler, real_passages, set_comparison
from midilm.metrics.piece import median_bars, piece_metrics
from midilm.sampling.generation import load_model
from midilm.tuning.arguments import TuneArguments
from midilm.tuning.loop import describe_samples, tune
from midilm.tuning.score import ScoreWeights, build_reference


def parse_variant(text: str) -> tuple[dict, dict]:
    """`key=value,...` -> (TuneArguments overrides, ScoreWeights overrides)."""
    types = {f.name: (f.type, "args") for f in fields(TuneArguments)} | {
        f.name: (f.type, "weights") for f in fields(ScoreWeights)
    }
    out: dict[str, dict] = {"args": {}, "weights": {}}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, value = item.split("=")
        kind, target = types[key]
        kind = str(kind)
        out[target][key] = (
            int(value)
            if "int" in kind
            else float(value)
            if "float" in kind
            else (value.lower() == "true")
            if "bool" in kind
            else value
        )
    return out["args"], out["weights"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--work_dir", required=True, help="Tuned models and results.json go here.")
    parser.add_argument("--variants", default="rounds=2;rounds=1", help="Tunings to compare (see the docstring).")
    parser.add_argument("--eval_samples", type=int, default=64, help="Samples per composer judged before and after.")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    config, tokenizer, _ = load_midilm_dir(args.model_dir)
    _, composer_map = load_tokenizer(args.model_dir)
    defaults = sampling_defaults(args.model_dir)
    scale = defaults["guidance_scale"]
    sampler = Sampler(
        tokenizer, composer_map, config, defaults, min(args.max_new_tokens, context_length(config) - 2), "cpu", 64
    )
    composers = composer_map.names

    def draw(model_dir) -> list[dict]:
        return sampler.sample(
            load_model(model_dir), [c for c in composers for _ in range(args.eval_samples)], scale, args.seed + 77
        )

    tick = time.perf_counter()
    before = draw(args.model_dir)
    sample_seconds = time.perf_counter() - tick
    from midilm.evaluation.composer_classifier.features import typical_length

    crop = typical_length([s["score"] for s in before], "notes")
    bars = median_bars([piece_metrics(s["score"]) for s in before])
    reference = build_reference(args.dataset_dir, tokenizer, composer_map, crop, crop, bars, seed=args.seed)
    independent = fit_ngram_classifier(
        reference.train_pieces, reference.heldout_scores, crop_length=crop, seed=args.seed
    )
    measurable = [c for c in composers if c in reference.measurable]
    real = real_passages(
        [{"composer": c, "name": p["name"], "score": p["score"]} for c in measurable for p in reference.heldout[c]],
        bars,
    )

    def judge(samples: list[dict]) -> dict:
        described = describe_samples(samples, reference, tokenizer, independent, measurable)
        measured = [
            {"composer": s["composer"], **piece_metrics(s["score"])} for s in samples if s["composer"] in measurable
        ]
        gap = set_comparison(measured, real, measurable)["distance"]
        for c in measurable:
            described[c]["metric_gap"] = gap["per_composer"][c]["mean_gap"]
        described["metric_gap_mean"] = gap["mean_over_composers"]["mean_gap"]
        return described

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": str(datetime.date.today()),
        "model_dir": args.model_dir,
        "guidance_scale": scale,
        "eval_samples": args.eval_samples,
        "crop_notes": crop,
        "sample_seconds_before": sample_seconds,
        "ceiling": {
            "reward_classifier": {c: reference.classifier.ceiling["per_composer"][c]["share"] for c in measurable},
            "independent_classifier": {
                c: independent.ceiling["per_composer"][c]["share"] for c in measurable if c in independent.composers
            },
        },
        "copy_limit": reference.copy_limit,
        "before": judge(before),
        "variants": {},
    }
    for text in filter(None, (v.strip() for v in args.variants.split(";"))):
        overrides, weight_overrides = parse_variant(text)
        out = work / text.replace(",", "_").replace("=", "")
        tune_args = TuneArguments(
            model_dir=args.model_dir,
            dataset_dir=args.dataset_dir,
            output_dir=str(out),
            overwrite=True,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            **overrides,
        )
        tick = time.perf_counter()
        record = tune(tune_args, ScoreWeights(**weight_overrides))
        seconds = time.perf_counter() - tick
        results["variants"][text] = {
            "tune_seconds": seconds,
            "rounds": record["rounds"],
            "stopped": record["stopped"],
            "pairs_per_round": record["pairs_per_round"],
            "after": judge(draw(out)),
        }
        (work / "results.json").write_text(json.dumps(results, indent=2))
    print(markdown(results, measurable))


def markdown(results: dict, composers: list[str]) -> str:
    def cell(x: dict | None) -> str:
        return "–" if not x else f"{x['share']:.2f} [{x['interval'][0]:.2f}, {x['interval'][1]:.2f}]"

    lines = [
        f"{results['machine']}, {results['date']}; {results['eval_samples']} samples per composer at s = "
        f"{results['guidance_scale']:g}, "
        f"crops of {results['crop_notes']} notes; ceilings (reward / independent): "
        + ", ".join(
            (
                f"{c} {results['ceiling']['reward_classifier'][c]:.2f} / "
                f"{results['ceiling']['independent_classifier'].get(c, float('nan')):.2f}"
            )
            for c in composers
        )
        + f"; real held-out passages share at most {results['copy_limit']} intervals with a training piece.",
        "",
        (
            "| model | tuning wall time | composer | reward classifier | independent classifier | vertical seconds "
            "(real) | metric gap | notes / sample | copied run max / median | clusters |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sides = [("before tuning", None, results["before"])] + [
        (f"tuned: {k} ({v['rounds']} rounds, pairs {v['pairs_per_round']})", v["tune_seconds"], v["after"])
        for k, v in results["variants"].items()
    ]
    for name, seconds, side in sides:
        for c in composers:
            r = side[c]
            lines.append(
                f"| {name} | {'–' if seconds is None else f'{seconds:.0f} s'} | {c} | {cell(r['reward_classifier'])} "
                f"| {cell(r['independent_classifier'])} | "
                f"{r['vertical_seconds']:.3f} ({r['vertical_seconds_real']:.3f}) | {r['metric_gap']:.3f} | "
                f"{r['notes_per_sample']:.1f} | "
                f"{r['memorization']['max']} / {r['memorization']['median']:g} | {r['degenerate']}/{r['n']} |"
            )
        lines.append(f"| {name} | | mean metric gap | | | | {side['metric_gap_mean']:.3f} | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
