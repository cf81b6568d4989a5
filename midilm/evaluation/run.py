"""The evaluation as a list of steps: `evaluate(args)` loads the model and the data once (`loading.Context`), then
runs the steps of `steps.py` in order, each taking what it reads and returning its section of the report and what a
later step needs; the sections that only summarize are here (see the package docstring). Writes nothing."""

from __future__ import annotations

import time
from dataclasses import asdict

from midilm.evaluation.adherence import sweep_key
from midilm.evaluation.arguments import EvaluateArguments
from midilm.evaluation.loading import Context, RealPassages, load_context
from midilm.evaluation.samples import memorization, sweep_row
from midilm.evaluation.steps import (
    MainSets,
    accompaniment_section,
    adherence_section,
    infilling_section,
    likelihood_section,
    long_pieces_section,
    sample_sets_section,
)
from midilm.sampling.guard import bounds_from_config
from midilm.training.finetune import new_composers_of


def evaluate(args: EvaluateArguments) -> dict:
    """Run the whole evaluation and return the report (see the package docstring); writes nothing."""
    started = time.perf_counter()
    timings = {}
    ctx = load_context(args, timings)
    passages = RealPassages(ctx.real, ctx.tokenizer, ctx.training.index)
    likelihood = likelihood_section(ctx, timings)
    sweep = adherence_section(ctx, passages, timings)
    main = sample_sets_section(ctx, sweep, passages, timings)
    accompaniment, accompanied = accompaniment_section(ctx, timings)
    long_pieces, long = long_pieces_section(ctx, main.main_scale, timings)
    infilling, rewritten = infilling_section(ctx, timings)
    timings["total_s"] = time.perf_counter() - started
    # the sweep's set at the main scale, when it became the trained set, is written once, as "trained"
    drawn = {k: v for k, v in sweep.drawn.items() if k != main.reused}
    drawn = {**drawn, **main.drawn, **accompanied, **long, **rewritten}
    measured = {"real": sweep.real, **main.measured}
    composers = ctx.composers
    return {
        "settings": settings_section(ctx, main),
        "data": data_section(ctx),
        "likelihood": likelihood,
        "pieces": {**measured, "sweep": {f"{s:g}": sweep.sets[s] for s in args.scales if sweep_key(s) in drawn}},
        "comparison": main.comparison,
        "adherence": sweep.adherence,
        "cfg_sweep": sweep_section(ctx, sweep.sets, passages.of_bars(main.window_bars)),
        **accompaniment,
        "long_pieces": long_pieces,
        **infilling,
        "memorization": {k: memorization(v, composers) for k, v in measured.items()},
        "memorization_real_passages": {
            "notes": main.window_notes,
            "runs": memorization(passages.runs(main.window_notes), composers),
        },
        "memorization_by_scale": {f"{s:g}": memorization(sweep.sets[s], composers) for s in args.scales},
        "checks": checks_section(measured),
        "timings": timings,
        "_midi": drawn,  # dropped before JSON; written as MIDI beside the report
    }


def sweep_section(ctx: Context, sweep_sets: dict[float, list[dict]], real: list[dict]) -> dict:
    """Histogram distances of each guarded sweep set, per composer, against the real passages `real` (the report's
    secondary table)."""
    return {
        f"{s:g}": {c: sweep_row(sweep_sets[s], real, c, ctx.composers) for c in ctx.composers} for s in ctx.args.scales
    }


def settings_section(ctx: Context, main: MainSets) -> dict:
    """The arguments, and what they resolved to."""
    settings = asdict(ctx.args)
    settings.update(
        {
            "main_guidance_scale": main.main_scale,
            "trained_samples_guidance_scale": main.trained_scale,
            "trained_samples_from": ctx.args.samples_dir or "sampled here",
            "max_new_tokens_used": ctx.max_new_tokens,
            "sampling": {k: ctx.defaults[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")},
            "grammar": True,
            "guard": bool(bounds_from_config(ctx.config)),
            "device": ctx.device,
            "composers_evaluated": ctx.composers,
            "new_composers": [c for c in new_composers_of(ctx.config) if c in ctx.composers],
        }
    )
    return settings


def data_section(ctx: Context) -> dict:
    names, training = ctx.composer_map.names, ctx.training
    return {
        "held_out_pieces": {c: sum(p["composer"] == c for p in ctx.real) for c in ctx.composers},
        "training_pieces": {c: int(training.pieces[names.index(c)]) for c in ctx.composers},
        "training_rows": training.rows,
        "memorization_index": {
            "pieces": training.index.pieces,
            "intervals": training.index.intervals,
            "bytes": training.index.nbytes,
        },
    }


def checks_section(measured: dict[str, list[dict]]) -> dict:
    real_errors = [p["syntax_error_rate"] for p in measured["real"]]
    return {
        "real_pieces_syntax_error_rate_max": max(real_errors),
        "real_pieces_have_no_syntax_errors": max(real_errors) == 0,
        "samples_syntax_error_rate_max": max(
            [p["syntax_error_rate"] for k in ("trained", "random") for p in measured[k]] or [0.0]
        ),
    }
