"""The steps of `run.evaluate` that draw or score: each takes the loaded `Context` and what an earlier step made,
records its seconds in `timings`, and returns its section of the report with whatever a later step needs (the
sweep's sets and window lengths, the main guidance scale) and the sample sets it drew, to be written as MIDI."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from midilm.core.modeling import TASKS_KEY, context_length, model_tasks
from midilm.core.rows import body_room, with_composer
from midilm.core.tokenizer import bar_start_table
from midilm.data.held_out import source_root
from midilm.evaluation.accompaniment import accompaniment_pieces, evaluate_accompaniment
from midilm.evaluation.adherence import UNCONDITIONAL, composer_adherence, sweep_key
from midilm.evaluation.infilling import evaluate_infill
from midilm.evaluation.likelihood import likelihood_summary, model_nll, unigram_from_counts, unigram_nll
from midilm.evaluation.loading import Context, RealPassages, timed
from midilm.evaluation.long_pieces import drift
from midilm.evaluation.samples import measure, median_notes, set_comparison
from midilm.metrics.piece import median_bars
from midilm.sampling.grammar import count_syntax_errors
from midilm.sampling.guard import bounds_from_config
from midilm.sampling.settings import SamplingSettings


@dataclass(frozen=True)
class Sweep:
    """What `adherence_section` drew and measured."""

    drawn: dict[str, list[dict]]  # the sweep's sample sets by `sweep_key` (and UNCONDITIONAL)
    real: list[dict]  # the real pieces' metrics
    sets: dict[float, list[dict]]  # the metrics of the guarded set at each scale
    window_bars: int | None  # the sweep's median length in bars: the real passages samples are compared with
    window_notes: int | None  # its median in notes: the real passages memorization is measured on
    adherence: dict | None  # the report's section (None without --adherence_scales)


@dataclass(frozen=True)
class MainSets:
    """What `sample_sets_section` drew and measured."""

    drawn: dict[str, list[dict]]  # "trained" and "random"
    measured: dict[str, list[dict]]  # their metrics
    main_scale: float  # the guidance scale of the main sets
    trained_scale: float | None  # the scale the trained set was drawn at (None: generate.py's files disagree)
    reused: str | None  # the sweep set taken as the trained set (`sweep_key(main_scale)`), if one was
    window_bars: int  # the sweep's, else the trained set's median length in bars
    window_notes: int  # likewise in notes
    comparison: dict  # the report's section


def likelihood_section(ctx: Context, timings: dict) -> dict:
    """Likelihood of the held-out rows: the model, the same architecture with random weights, a unigram
    model, and the model again with COMPOSER_NONE in the composer's place (what the composer token is worth)."""
    with timed(timings, "likelihood_s"):
        args, config = ctx.args, ctx.config
        rows = [r["input_ids"] for r in ctx.held_rows]
        notes = sum(r["n_notes"] for r in ctx.held_rows)
        trained_nll, tokens = model_nll(
            ctx.model, rows, args.batch_size, config.pad_token_id, desc="likelihood (trained)"
        )
        random_nll, _ = model_nll(
            ctx.random_model, rows, args.batch_size, config.pad_token_id, desc="likelihood (random weights)"
        )
        unconditional_rows = [with_composer(ids, ctx.composer_map.none_id) for ids in rows]
        uncond_nll, _ = model_nll(
            ctx.model, unconditional_rows, args.batch_size, config.pad_token_id, desc="likelihood (unconditional)"
        )
        counts = np.zeros(config.vocab_size, dtype=np.int64)  # smoothed over the model's vocabulary, as before
        counts[: min(len(counts), len(ctx.training.token_counts))] = ctx.training.token_counts[: len(counts)]
        unigram_total, _ = unigram_nll(unigram_from_counts(counts), rows)
        likelihood = {
            "split": args.split,
            "rows": len(rows),
            "scored_tokens": tokens,
            "notes": notes,
            "trained": likelihood_summary(trained_nll, tokens, notes),
            "random_weights": likelihood_summary(random_nll, tokens, notes),
            "unigram": likelihood_summary(unigram_total, tokens, notes),
            "trained_unconditional": likelihood_summary(uncond_nll, tokens, notes),
            "composer_information_nats_per_token": (uncond_nll - trained_nll) / tokens if tokens else None,
            "windowed_rows": sum(len(r) > context_length(config) for r in rows),
        }
        likelihood["perplexity_ratio_trained_to_unigram"] = (
            likelihood["trained"]["perplexity"] / likelihood["unigram"]["perplexity"]
        )
    return likelihood


def adherence_section(ctx: Context, passages: RealPassages, timings: dict) -> Sweep:
    """The guidance sweep: every composer at each scale with the musical guard on and off (the same
    seeds, so an unguarded sample is its guarded twin until the guard first steps in) and unconditional
    samples for the classifier's base rate; the real pieces and the guarded sets measured; composer
    adherence at each scale and the guidance default it chooses (None without --adherence_scales)."""
    args, tokenizer, index = ctx.args, ctx.tokenizer, ctx.training.index
    drawn = {}
    with timed(timings, "sweep_sampling_s"):
        sweep_names = [c for c in ctx.composers for _ in range(args.adherence_samples_per_composer)]
        jobs = [(UNCONDITIONAL, ["none"] * len(sweep_names), 1.0, True)] if args.scales else []
        jobs += [(sweep_key(s, guard), sweep_names, s, guard) for s in args.scales for guard in (True, False)]
        for name, names, scale, guard in tqdm(jobs, desc="sampling the guidance sweep", unit="set"):
            drawn[name] = ctx.sampler.sample(ctx.model, names, scale, args.seed, guard)
    with timed(timings, "metrics_s"):
        real = measure(ctx.real, tokenizer, index, "measuring real pieces")
        sets = {s: measure(drawn[sweep_key(s)], tokenizer, index, f"measuring s={s:g}") for s in args.scales}
    if not args.scales:
        return Sweep(drawn, real, sets, None, None, None)
    guided = [p for s in args.scales for p in sets[s]]
    window_bars, window_notes = median_bars(guided), median_notes(guided)
    with timed(timings, "adherence_s"):
        # A composer with no original training piece borrows the largest onset of all.
        onset_max = ctx.training.max_notes_per_onset
        thresholds = {c: int(onset_max[ctx.composer_map.names.index(c)]) or int(onset_max.max()) for c in ctx.composers}
        adherence = composer_adherence(
            args,
            tokenizer,
            ctx.composers,
            ctx.real,
            real,
            drawn,
            sets,
            thresholds,
            bounds_from_config(ctx.config),
            window_bars,
            passages.runs(window_notes),
            dataset=ctx.dataset if args.base_dataset_dir else None,
        )
        adherence["choice"]["written_to"] = None
        if args.write_default_guidance and adherence["choice"]["scale"] is not None:
            # written once the report is (evaluate_samples.py)
            adherence["choice"]["written_to"] = str(Path(args.model_dir) / "config.json")
    return Sweep(drawn, real, sets, window_bars, window_notes, adherence)


def sample_sets_section(ctx: Context, sweep: Sweep, passages: RealPassages, timings: dict) -> MainSets:
    """The main sample sets, compared with the real pieces: the trained model at the main scale
    (generate.py's files, the sweep's set at that scale, or sampled now) and the same architecture with random
    weights."""
    args, tokenizer, index = ctx.args, ctx.tokenizer, ctx.training.index
    chosen = sweep.adherence["choice"]["scale"] if sweep.adherence else None
    # --guidance_scale, else the default this evaluation is about to write, else the model's
    given = (
        args.guidance_scale if args.guidance_scale is not None else (chosen if args.write_default_guidance else None)
    )
    main_scale = SamplingSettings(guidance_scale=given).resolve(ctx.defaults).guidance_scale
    reused = None
    with timed(timings, "sampling_s"):
        per_composer = [c for c in ctx.composers for _ in range(args.num_samples_per_composer)]
        if ctx.samples_from_dir is not None:
            trained = [s for c in ctx.composers for s in ctx.samples_from_dir[0][c]]
            recorded = sorted(set(ctx.samples_from_dir[1]))
            trained_scale = recorded[0] if len(recorded) == 1 else None
            trained_metrics = measure(trained, tokenizer, index, "measuring trained samples")
        elif main_scale in sweep.sets:
            reused = sweep_key(main_scale)
            trained, trained_scale, trained_metrics = sweep.drawn[reused], main_scale, sweep.sets[main_scale]
        else:
            trained = ctx.sampler.sample(ctx.model, per_composer, main_scale, args.seed)
            trained_scale = main_scale
            trained_metrics = measure(trained, tokenizer, index, "measuring trained samples")
        random = ctx.sampler.sample(ctx.random_model, per_composer, main_scale, args.seed)
        random_metrics = measure(random, tokenizer, index, "measuring random-weight samples")
    if max(p["syntax_error_rate"] for p in sweep.real) > 0:
        print(
            f"warning: real {args.split} pieces read back with syntax errors; was the dataset built with this "
            "model's tokenizer?"
        )
    # both sets against the same real passages: as long as the sweep's samples (one reference in the whole report), else
    # the trained samples
    window_bars = sweep.window_bars or median_bars(trained_metrics)
    window_notes = sweep.window_notes or median_notes(trained_metrics)
    measured = {"trained": trained_metrics, "random": random_metrics}
    comparison = {k: set_comparison(measured[k], passages.of_bars(window_bars), ctx.composers) for k in measured}
    return MainSets(
        {"trained": trained, "random": random},
        measured,
        main_scale,
        trained_scale,
        reused,
        window_bars,
        window_notes,
        {**comparison, "real_window_bars": window_bars},
    )


def accompaniment_section(ctx: Context, timings: dict) -> tuple[dict, dict[str, list[dict]]]:
    """The trained and the random-weight model write the music around real held-out melodies, when the
    model was trained on accompaniment; else why not (`accompaniment_skipped`). Also returns the accompaniments."""
    args, config = ctx.args, ctx.config
    skipped = None
    if args.accompaniment_pieces == 0:
        skipped = "--accompaniment_pieces 0"
    elif "accompaniment" not in ctx.dataset["train"].unique("task"):
        skipped = (
            "the dataset holds no accompaniment rows (prepare_dataset.py --tasks continuation,accompaniment adds them)"
        )
    elif "accompaniment" not in model_tasks(config):
        skipped = (
            f"the model was trained on {', '.join(model_tasks(config))} rows only (config.json's {TASKS_KEY}), "
            "never on accompaniment"
        )
    if skipped:
        return {"accompaniment": None, "accompaniment_skipped": skipped}, {}
    with timed(timings, "accompaniment_s"):
        section, accompanied = evaluate_accompaniment(
            {"trained": ctx.model, "random": ctx.random_model},
            ctx.tokenizer,
            ctx.composer_map,
            accompaniment_pieces(ctx.real, ctx.composers, args.accompaniment_pieces),
            source_root(args.dataset_dir),
            ctx.defaults,
            args.seed,
        )
    return {"accompaniment": section, "accompaniment_skipped": None}, accompanied


def long_pieces_section(ctx: Context, main_scale: float, timings: dict) -> tuple[dict | None, dict[str, list[dict]]]:
    """With --long_tokens: long pieces of every composer at the main guidance scale, in one batched
    windowed run, and their drift against the real-pieces reference (`midilm.evaluation.long_pieces`). Also
    returns the pieces ("long")."""
    args = ctx.args
    if not args.long_tokens:
        return None, {}
    names = [c for c in ctx.composers for _ in range(args.long_samples_per_composer)]
    with timed(timings, "long_pieces_s"):
        tick = time.perf_counter()
        long = ctx.sampler.sample(ctx.model, names, main_scale, args.seed, long_tokens=args.long_tokens)
        seconds = time.perf_counter() - tick
        section = drift(
            long,
            ctx.real,
            ctx.composers,
            ctx.tokenizer,
            np.asarray(bar_start_table(ctx.tokenizer)),
            body_room(context_length(ctx.config)),
            ctx.config.eos_token_id,
            args.seed,
        )
    syntax = [count_syntax_errors(ctx.tokenizer, s["ids"]) for s in long]
    return {
        "long_tokens": args.long_tokens,
        "samples_per_composer": args.long_samples_per_composer,
        "guidance_scale": main_scale,
        "window_tokens": body_room(context_length(ctx.config)),
        "windows": max(s["windows"] for s in long),
        "syntax_error_rate_max": max(syntax),
        "sampling_s": seconds,
        **section,
    }, {"long": long}


def infilling_section(ctx: Context, timings: dict) -> tuple[dict, dict[str, list[dict]]]:
    """For a model trained with the infill task: held-out spans scored and rewritten (`midilm.evaluation.infilling`);
    else why not (`infilling_skipped`). Also returns the rewritten pieces."""
    args = ctx.args
    skipped = None
    if 0 in (args.infill_pieces, args.infill_spans_per_piece, args.infill_max_bars):
        skipped = "--infill_pieces, --infill_spans_per_piece or --infill_max_bars is 0"
    elif "infill" not in model_tasks(ctx.config):
        skipped = (
            f"the model was trained on {', '.join(model_tasks(ctx.config))} rows only (config.json's {TASKS_KEY}), "
            "never on infill"
        )
    if skipped:
        return {"infilling": None, "infilling_skipped": skipped}, {}
    with timed(timings, "infilling_s"):
        section, rewritten = evaluate_infill(
            ctx.model,
            ctx.tokenizer,
            ctx.composer_map,
            ctx.real,
            ctx.composers,
            ctx.defaults,
            pieces_per_composer=args.infill_pieces,
            spans_per_piece=args.infill_spans_per_piece,
            max_span_bars=args.infill_max_bars,
            seed=args.seed,
        )
    return {"infilling": section, "infilling_skipped": None}, rewritten
