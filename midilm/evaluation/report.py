"""The report: report.json, report.md (one section per part of the evaluation) and the evaluated
samples as MIDI; a headline for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from midilm.core.errors import InputError
from midilm.core.outputs import replace_dir, staging_dir
from midilm.evaluation.accompaniment import ACCOMPANIMENT_METRICS
from midilm.evaluation.adherence import UNCONDITIONAL
from midilm.evaluation.composer_classifier.markdown import render_markdown
from midilm.metrics.compare import DISTANCE_METRICS
from midilm.metrics.piece import HISTOGRAM_METRICS, SCALAR_METRICS

SETS = {"real": "real held-out", "trained": "trained model", "random": "random weights"}


def write_report(report: dict, output_dir: Path, overwrite: bool) -> Path:
    """report.json, report.md and every evaluated sample as MIDI, built aside and swapped in whole."""
    midi = report.pop("_midi", {})
    if output_dir.exists() and not overwrite:
        raise InputError(f"--output_dir {output_dir} already exists; pass --overwrite to replace it")
    with staging_dir(output_dir) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown_report(report))
        for name, samples in midi.items():
            folder = tmp / "samples" / name.replace(" ", "_s")
            folder.mkdir(parents=True, exist_ok=True)
            for sample in samples:
                sample["score"].dump_midi(folder / f"{sample['name']}.mid")
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, output_dir)
    return output_dir


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (
        ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        + ["| " + " | ".join(r) + " |" for r in rows]
        + [""]
    )


def _verdict(trained: dict, random: dict) -> str:
    better = [
        k
        for k in ("mean_gap", "pitch_class_js", "duration_js")
        if trained.get(k) is not None and random.get(k) is not None and trained[k] < random[k]
    ]
    higher_overlap = (
        trained.get("mean_overlap") is not None
        and random.get("mean_overlap") is not None
        and trained["mean_overlap"] > random["mean_overlap"]
    )
    score = len(better) + higher_overlap
    return (
        f"the trained model's samples are closer to the real pieces than the random-weight samples on {score} of "
        "4 distances"
    )


def headline(report: dict) -> str:
    """A few lines for the terminal."""
    lik, comp = report["likelihood"], report["comparison"]
    t_dist, r_dist = (
        comp["trained"]["distance"]["mean_over_composers"],
        comp["random"]["distance"]["mean_over_composers"],
    )
    lines = [
        (
            f"{lik['split']} perplexity {_f(lik['trained']['perplexity'])} (unigram "
            f"{_f(lik['unigram']['perplexity'])}, "
            f"ratio {_f(lik['perplexity_ratio_trained_to_unigram'])}); NLL per note "
            f"{_f(lik['trained']['nll_per_note'])} nats"
        ),
        (
            f"metric gap to real: trained {_f(t_dist['mean_gap'])}, random weights {_f(r_dist['mean_gap'])}; "
            f"pitch-class JS: trained {_f(t_dist['pitch_class_js'])}, random weights {_f(r_dist['pitch_class_js'])}"
        ),
        _verdict(t_dist, r_dist),
    ]
    long = report.get("long_pieces")
    if long and long["mean_over_composers"]["composers"]:
        mean = long["mean_over_composers"]
        lines.append(
            f"long pieces ({long['long_tokens']} tokens, {long['windows']} windows): "
            f"drift gap {_f(mean['drift_gap'])}, "
            f"real pieces vs real pieces {_f(mean['real_pieces_gap'])}; within it for {mean['within_reference']} of "
            f"{mean['composers']} composers"
        )
    infilling = report.get("infilling")
    if infilling and infilling["spans"]:
        lines.append(
            f"infilling ({infilling['spans']} held-out spans): NLL per note {_f(infilling['infill_nll_per_note'])} "
            f"given both sides vs {_f(infilling['prefix_nll_per_note'])} given the bars before only "
            f"({_percent(infilling['nll_reduction'])} lower); metric gap to the real spans "
            f"{_f(infilling['metric_gap'], 2)} (real vs real {_f(infilling['real_spans_gap'], 2)}); notes outside "
            f"identical in {_percent(infilling['outside_identical_share'])} of spans; syntax error rate "
            f"{_f(infilling['syntax_error_rate_max'])} (max)"
        )
    adherence = report.get("adherence")
    if adherence and adherence["rows"]:
        ceiling = (adherence["ceiling"] or {}).get("overall", {}).get("share")
        scales = ", ".join(f"s={r['scale']:g} {_share_cell(r['adherence'])}" for r in adherence["rows"])
        lines.append(
            f"composer adherence (classifier ceiling {_share_cell(ceiling)}, chance "
            f"{_f(adherence['classifier']['chance'], 2)}): {scales}"
        )
        choice = adherence["choice"]
        if choice["scale"] is not None:
            lines.append(
                f"guidance default: s = {choice['scale']:g}"
                + (f", written to {choice['written_to']}" if choice.get("written_to") else " (not written)")
            )
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """report.md: one section after another."""
    new = set(report["settings"].get("new_composers", []))
    named = [f"{c} (new)" if c in new else c for c in report["settings"]["composers_evaluated"]]
    sections = [
        intro_markdown(report),
        headline_markdown(report),
        adherence_markdown(report.get("adherence"), report["settings"]["composers_evaluated"], named),
        per_composer_markdown(report),
        sweep_markdown(report),
        accompaniment_section_markdown(report),
        long_pieces_markdown(report),
        infilling_markdown(report),
        memorization_markdown(report),
        method_markdown(report),
    ]
    return "\n".join(line for section in sections for line in section)


def intro_markdown(report: dict) -> list[str]:
    """What was evaluated, and how the sample sets were drawn."""
    s = report["settings"]
    samples = {k: report["pieces"][k] for k in ("trained", "random")}
    lines = [
        "# Evaluation report",
        "",
        f"Model `{s['model_dir']}`, dataset `{s['dataset_dir']}` ({s['split']} split: "
        + ", ".join(f"{c} {n}" for c, n in report["data"]["held_out_pieces"].items())
        + " held-out pieces). "
        + (
            f"The model is fine-tuned from another; composers new to it: {', '.join(s['new_composers'])}. "
            if s.get("new_composers")
            else ""
        )
        + f"Trained-model samples: {'read from `' + s['samples_dir'] + '`' if s['samples_dir'] else 'sampled here'}"
        + (
            f" (guidance scale {s['trained_samples_guidance_scale']:g})"
            if s["trained_samples_guidance_scale"] is not None
            else ""
        )
        + (
            f", {len(samples['trained'])} in all; random-weight samples: the same architecture, initialised with seed "
            f"{s['seed']}, "
        )
        + f"{len(samples['random'])} in all, sampled with guidance scale {s['main_guidance_scale']:g}; "
        + (
            f"{s['num_samples_per_composer']} samples per composer and call, up to {s['max_new_tokens_used']} tokens "
            "each. "
        )
        + "Both are sampled with the REMI grammar on, so both have valid syntax: the grammar alone gives that.",
        "",
        "## Headline",
        "",
    ]
    return lines


def headline_markdown(report: dict) -> list[str]:
    """The trained model beside random weights and the unigram model; the verdict."""
    s, lik, comp = report["settings"], report["likelihood"], report["comparison"]
    t_dist, r_dist = (
        comp["trained"]["distance"]["mean_over_composers"],
        comp["random"]["distance"]["mean_over_composers"],
    )
    mem = report["memorization"]
    samples = {k: report["pieces"][k] for k in ("trained", "random")}
    lines = []
    rows = [
        [
            f"perplexity per token ({s['split']})",
            _f(lik["trained"]["perplexity"]),
            _f(lik["random_weights"]["perplexity"]),
            _f(lik["unigram"]["perplexity"]),
        ],
        [
            "perplexity / unigram perplexity",
            _f(lik["perplexity_ratio_trained_to_unigram"]),
            _f(lik["random_weights"]["perplexity"] / lik["unigram"]["perplexity"]),
            "1.000",
        ],
        [
            "NLL per token (nats)",
            _f(lik["trained"]["nll_per_token"]),
            _f(lik["random_weights"]["nll_per_token"]),
            _f(lik["unigram"]["nll_per_token"]),
        ],
        [
            "NLL per note (nats)",
            _f(lik["trained"]["nll_per_note"]),
            _f(lik["random_weights"]["nll_per_note"]),
            _f(lik["unigram"]["nll_per_note"]),
        ],
        [
            "NLL per token with COMPOSER_NONE for the composer (nats)",
            _f(lik["trained_unconditional"]["nll_per_token"]),
            "–",
            "–",
        ],
        [
            "composer information: NLL per token without the composer minus with it (nats)",
            _f(lik["composer_information_nats_per_token"], 4),
            "–",
            "–",
        ],
        [
            "syntax error rate of samples (max)",
            _f(max(p["syntax_error_rate"] for p in samples["trained"])),
            _f(max(p["syntax_error_rate"] for p in samples["random"])),
            "–",
        ],
        [
            "music metrics: mean standardised gap to real (lower is closer)",
            _f(t_dist["mean_gap"]),
            _f(r_dist["mean_gap"]),
            "–",
        ],
        [
            "music metrics: mean distribution overlap with real (higher is closer)",
            _f(t_dist["mean_overlap"]),
            _f(r_dist["mean_overlap"]),
            "–",
        ],
        [
            "pitch-class histogram JS divergence to real (bits)",
            _f(t_dist["pitch_class_js"]),
            _f(r_dist["pitch_class_js"]),
            "–",
        ],
        ["duration histogram JS divergence to real (bits)", _f(t_dist["duration_js"]), _f(r_dist["duration_js"]), "–"],
        [
            "longest interval run shared with a training piece, any transposition (max / median)",
            f"{mem['trained']['all']['max']} / {_f(mem['trained']['all']['median'], 1)}",
            f"{mem['random']['all']['max']} / {_f(mem['random']['all']['median'], 1)}",
            "–",
        ],
    ]
    lines += _table(["", "trained model", "random weights", "unigram"], rows)
    lines += [
        (
            f"Verdict, averaged over composers: {_verdict(t_dist, r_dist)}. "
            f"Real {s['split']} pieces read back with syntax error rate "
            f"{_f(report['checks']['real_pieces_syntax_error_rate_max'])} (expected 0)."
        ),
        "",
    ]
    return lines


def per_composer_markdown(report: dict) -> list[str]:
    """Music metrics per composer and sample set."""
    composers, comp = report["settings"]["composers_evaluated"], report["comparison"]
    lines = [
        "## Music metrics per composer",
        "",
        (
            f"Mean ± std. Real: the held-out pieces cut into passages of {comp['real_window_bars']} bars, the samples' "
            "median length (`midilm.metrics.piece.bar_windows`; the guidance sweep's when there is one), since "
            "pitch range and the like grow with length; for the sample sets, the standardised gap "
            "|mean − real mean| / real std in brackets."
        ),
        "",
    ]
    for c in composers:
        lines += [f"### {c}", ""]
        by_set = {k: [p for p in report["pieces"][k] if p["composer"] == c] for k in SETS}
        rows = []
        for metric in SCALAR_METRICS:
            cells = [metric]
            for k in SETS:
                if k == "real":
                    ref = comp["trained"]["per_composer"][c].get(metric)
                    cells.append(f"{ref['real_mean']:.3f} ± {ref['real_std']:.3f}" if ref else "–")
                    continue
                values = [p[metric] for p in by_set[k] if p[metric] is not None]
                cell = f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"
                gap = comp[k]["per_composer"][c].get(metric, {}).get("mean_gap")
                cells.append(cell + (f" ({gap:.2f})" if gap is not None else ""))
            rows.append(cells)
        for hist in HISTOGRAM_METRICS:
            cells = [f"{hist} JS to real"]
            for k in SETS:
                js = comp[k]["per_composer"][c].get(hist, {}).get("js_divergence") if k != "real" else None
                cells.append("–" if k == "real" else _f(js))
            rows.append(cells)
        passages = comp["trained"]["per_composer"][c].get("notes_per_bar", {}).get("real_n", 0)
        rows.append(
            ["pieces"]
            + [
                f"{passages} passages ({len(by_set['real'])} pieces)" if k == "real" else str(len(by_set[k]))
                for k in SETS
            ]
        )
        lines += _table(["metric", *SETS.values()], rows)
    return lines


def sweep_markdown(report: dict) -> list[str]:
    """The histogram distances per guidance scale (secondary)."""
    lines = [
        "## Histogram distances per guidance scale (secondary)",
        "",
        (
            "The composer-adherence sweep's samples (guard on), per composer, against that composer's real pieces: "
            "Jensen–Shannon divergence (bits) of the mean pitch-class and duration histograms, the mean standardised "
            "metric gap (the real pieces as passages as long as the samples), and the pitch-class JS to the other "
            "composers' real pieces. Pitch-class histograms mostly encode "
            "key and mode, which the transposition augmentation scrambles, so these distances are not a test of "
            "conditioning: whether samples sound like their composer is read from the composer-adherence table above."
        ),
        "",
    ]
    rows = []
    for scale, per_composer in report["cfg_sweep"].items():
        for c, r in per_composer.items():
            rows.append(
                [
                    scale,
                    c,
                    _f(r["pitch_class_js"]),
                    _f(r["duration_js"]),
                    _f(r["mean_gap"]),
                    _f(r["pitch_class_js_other_composers"]),
                    _f(r["notes"], 1),
                    f"{_f(r.get('longest_training_run_max'))} / {_f(r.get('longest_training_run_median'), 1)}",
                ]
            )
    lines += _table(
        [
            "s",
            "composer",
            "pitch-class JS (own)",
            "duration JS (own)",
            "mean gap (own)",
            "pitch-class JS (others)",
            "notes per sample",
            "shared run with training (max / median)",
        ],
        rows,
    )
    return lines


def accompaniment_section_markdown(report: dict) -> list[str]:
    """The accompaniment figures, or why there are none."""
    lines = []
    if report.get("accompaniment"):
        lines += accompaniment_markdown(report["accompaniment"])
    elif report.get("accompaniment_skipped"):
        lines += [f"Accompaniment: not evaluated, because {report['accompaniment_skipped']}.", ""]
    return lines


def _span(values: list[int]) -> str:
    """`508`, or `470–508` when the values differ."""
    if not values:
        return "–"
    return str(min(values)) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def long_pieces_markdown(report: dict) -> list[str]:
    """Drift over long pieces (--long_tokens): last window against first, beside two sets of real pieces."""
    section = report.get("long_pieces")
    if not section:
        return [
            "Long pieces: not sampled (--long_tokens 0; e.g. --long_tokens 4x the context measures their drift).",
            "",
        ]
    lines = [
        f"## Long pieces: drift over {section['long_tokens']} tokens",
        "",
        (
            f"{section['samples_per_composer']} samples per composer of {section['long_tokens']} new tokens "
            "(EOS held off), "
            f"guidance scale {section['guidance_scale']:g}, in one batched run of {section['windows']} windows "
            f"({section['sampling_s']:.1f} s); syntax error rate {_f(section['syntax_error_rate_max'])} (max). "
            f"Each sample's first and last {section['window_tokens']} new tokens (one window's worth), "
            "cut to whole bars, "
            "measured with `midilm.metrics`. Drift: the mean standardised metric gap of the last windows against the "
            "first. Reference: the same gap between two sets of as many real passages (as long as the windows) drawn "
            "from two halves of the composer's held-out pieces, split at random, mean [10th, 90th percentile] over "
            "the draws. The target: a drift no larger than the reference."
        ),
        "",
    ]
    rows = []
    for c, r in section["per_composer"].items():
        ref = r["real_pieces_gap"]
        rows.append(
            [
                c,
                str(r["samples"]),
                _span(r["new_tokens"]),
                str(r["bars_per_window"]),
                f"**{_f(r['drift_gap'], 2)}**",
                f"{_f(ref['mean_gap'], 2)} [{_f(ref['p10'], 2)}, {_f(ref['p90'], 2)}] ({ref['pieces']} pieces)"
                if ref
                else "– (fewer than 2 held-out pieces)",
                {True: "yes", False: "no", None: "–"}[r["within_reference"]],
                _f(r["first_vs_real"], 2),
                _f(r["last_vs_real"], 2),
            ]
        )
    lines += _table(
        [
            "composer",
            "samples",
            "new tokens",
            "bars per window",
            "drift: last vs first",
            "real pieces vs real pieces",
            "drift within it",
            "first window vs real",
            "last window vs real",
        ],
        rows,
    )
    return lines


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


SEAM_LABELS = {
    "top_voice_leap": "top-voice leap (semitones)",
    "register_shift": "register shift (semitones)",
    "density_jump": "density jump (absolute log2 ratio of the two bars' notes + 1)",
}


def infilling_markdown(report: dict) -> list[str]:
    """Held-out spans: likelihood with and without the bars after them, the rewrites' metric gap and seams, checks."""
    section = report.get("infilling")
    if not section:
        reason = report.get("infilling_skipped")
        return [f"Infilling: not evaluated, because {reason}.", ""] if reason else []
    lines = [
        f"## Infilling: {section['spans']} held-out spans of {section['pieces']} pieces",
        "",
        (
            "Seeded spans of whole bars, each with at least one bar on each side. Likelihood: the real span's tokens "
            "per note of the span, given the bars before and after it (the infill layout) and given the same bars "
            "before only (a continuation). Rewrites: one per span with generate.py's infill path, under the piece's "
            f"composer ({section['seconds']:.1f} s in all, scoring included)."
        ),
        "",
    ]
    lines += _table(
        ["figure", "value", "reference"],
        [
            [
                "NLL per note, infill (before + after)",
                f"**{_f(section['infill_nll_per_note'])}**",
                f"prefix only: {_f(section['prefix_nll_per_note'])}",
            ],
            ["NLL reduction from the bars after", f"**{_percent(section['nll_reduction'])}**", "issue target: ≥ 10%"],
            [
                "control: infill layout, no bars after",
                _f(section["no_after_nll_per_note"]),
                f"the bars after alone: {_percent(section['nll_reduction_from_the_bars_after'])} lower",
            ],
            [
                "metric gap, rewritten vs real spans",
                f"**{_f(section['metric_gap'], 2)}**",
                f"real spans elsewhere vs real spans: {_f(section['real_spans_gap'], 2)}",
            ],
            ["notes outside the span identical", f"{_percent(section['outside_identical_share'])} of spans", "100%"],
            ["syntax error rate (max)", _f(section["syntax_error_rate_max"]), "0"],
            ["bars the model left unfinished (filled empty)", str(section["cut_bars"]), "0"],
        ],
    )
    lines += [
        (
            "Seams: the jump across the bar line into the span (entry) and out of it (exit), mean over spans, the "
            "rewritten piece beside the real piece at the same bar lines (smaller or equal: the rewrite joins its "
            "neighbours as smoothly as the original did)."
        ),
        "",
    ]
    lines += _table(
        ["seam", "rewritten", "real"],
        [
            [f"{side} {SEAM_LABELS[m]}", _f(v["infilled"], 2), _f(v["real"], 2)]
            for key, v in section["seams"].items()
            for side, m in [key.split("_", 1)]
        ],
    )
    rows = [
        [
            e["composer"],
            e["source"],
            f"{e['bars'][0]}–{e['bars'][1]}",
            str(e["span_notes"]),
            _f(e["infill_nll_per_note"]),
            _f(e["prefix_nll_per_note"]),
            str(e["new_notes"]),
            "yes" if e["outside_identical"] else "**no**",
        ]
        for e in section["per_span"]
    ]
    lines += _table(
        ["composer", "piece", "bars", "notes", "NLL/note infill", "NLL/note prefix", "new notes", "outside identical"],
        rows,
    )
    return lines


def memorization_markdown(report: dict) -> list[str]:
    """Shared interval runs with the training pieces, per set and scale, and per trained sample."""
    mem, passages = report["memorization"], report["memorization_real_passages"]
    samples = {k: report["pieces"][k] for k in ("trained", "random")}
    lines = [
        "## Memorization",
        "",
        (
            "Longest run of successive pitch intervals (notes in onset order, lowest first within an onset) that a "
            "piece "
            "shares with one training piece at any transposition, so the augmented (transposed) copies count as their "
            "original does; a run of k intervals is a passage of k + 1 notes. Real held-out pieces give the level that "
            "shared idioms (scales, cadences) reach by themselves. A whole piece has more chances to share a long "
            "run than "
            f"a sample as long as a passage, so the real pieces are also cut into passages of {passages['notes']} "
            "notes, the samples' "
            "median length: that is the level to read the samples against. Index: "
            f"{report['data']['memorization_index']['pieces']} "
            f"original training pieces, {report['data']['memorization_index']['intervals']} intervals."
        ),
        "",
    ]

    def row(name: str, composer: str, v: dict) -> list[str]:
        return [name, composer, str(v["n"]), str(v["max"]), _f(v["median"], 1), _f(v["median_notes"], 1)]

    rows = [row(SETS["real"], c, v) for c, v in mem["real"].items()]
    rows += [row(f"real held-out, passages of {passages['notes']} notes", c, v) for c, v in passages["runs"].items()]
    rows += [row(SETS[k], c, v) for k in ("trained", "random") for c, v in mem[k].items()]
    rows += [
        row(f"trained, s = {scale}", "all", by_composer["all"])
        for scale, by_composer in report.get("memorization_by_scale", {}).items()
    ]
    lines += _table(["set", "composer", "pieces", "max run", "median run", "median notes"], rows)
    rows = [
        [
            p["name"],
            str(p["n_notes"]),
            str(p["longest_training_run"]),
            _f(p["longest_training_run_share"], 2),
            p.get("longest_training_run_source") or "–",
            _f(p["syntax_error_rate"]),
        ]
        for p in samples["trained"]
    ]
    lines += ["Trained-model samples:", ""] + _table(
        [
            "sample",
            "notes",
            "longest shared run (intervals)",
            "share of its intervals",
            "found in",
            "syntax error rate",
        ],
        rows,
    )
    return lines


def method_markdown(report: dict) -> list[str]:
    """How the numbers are made."""
    s, lik = report["settings"], report["likelihood"]
    lines = [
        "## How these numbers are made",
        "",
        (
            f"- Likelihood: {lik['rows']} {s['split']} rows, {lik['scored_tokens']} tokens after BOS and the composer "
            f"token (EOS included), {lik['notes']} notes; NLL per note = total NLL / notes. Rows longer than the "
            f"model's context ({lik['windowed_rows']} here) are scored in windows that restart from [BOS, composer]. "
            "The unigram model is fitted on the training split's tokens (augmented copies included, as the model saw "
            "them) "
            "with add-one smoothing over the whole vocabulary."
        ),
        (
            "- Music metrics: `midilm.metrics.piece_metrics`; distances: `midilm.metrics.compare` per composer, "
            "averaged over "
            f"composers (metrics: {', '.join(DISTANCE_METRICS)}), against the real held-out pieces cut into passages "
            "as long as "
            "the samples (`midilm.metrics.piece.bar_windows`)."
        ),
        "- Timings (s): "
        + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in report["timings"].items())
        + f", on {s['device']}.",
        "",
    ]
    return lines


def accompaniment_markdown(section: dict) -> list[str]:
    """The accompaniment figures: means over pieces per set, then one row per piece."""
    names = {"trained": "trained model", "random": "random weights", "real": "real piece"}
    lines = [
        "## Accompaniment",
        "",
        (
            "Each listed held-out piece's melody (its marked melody track, else its top voice) accompanied under its "
            "composer by the trained model and by the random-weight model, one sample each, beside the real piece "
            "around "
            "the same melody. Melody adherence: share of melody notes the full-piece section sounds at the same "
            "onset and "
            "pitch (1 for the real piece by construction). Harmonic fit: share of accompaniment note-time in a pitch "
            "class "
            "the melody sounds in that beat or in the melody's key; beat fit and key fit are its two halves."
        ),
        "",
    ]
    rows = [[m.replace("_", " ")] + [_f(section["mean"][k][m]) for k in names] for m in ACCOMPANIMENT_METRICS]
    lines += _table(["mean over pieces", *names.values()], rows)
    rows = []
    for e in section["pieces"]:
        for k in names:
            r = e[k]
            rows.append(
                [
                    e["source"],
                    str(e["bars"]),
                    names[k],
                    _f(r["melody_adherence"]),
                    _f(r["harmonic_fit"]),
                    _f(r["beat_fit"]),
                    _f(r["key_fit"]),
                    str(r["accompaniment_notes"]),
                    _f(r.get("syntax_error_rate")),
                ]
            )
    lines += _table(
        [
            "piece",
            "bars",
            "set",
            "melody adherence",
            "harmonic fit",
            "beat fit",
            "key fit",
            "accompaniment notes",
            "syntax error rate",
        ],
        rows,
    )
    return lines


def _rate_cell(rate: dict | None) -> str:
    """`3/48 (0.06)`: a count of pieces out of n, and its share."""
    if not rate or not rate.get("n"):
        return "–"
    return f"{rate['count']}/{rate['n']} ({rate['share']:.2f})"


def _share_cell(share: float | None, interval=None) -> str:
    if share is None:
        return "–"
    return f"{share:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def adherence_markdown(section: dict | None, composers: list[str], labels: list[str] | None = None) -> list[str]:
    """The composer-adherence table (one row per guidance scale, between the classifier's ceiling and
    the unconditional base rate), the guidance default and why, then per-composer intervals and the
    confusion matrices (`midilm.evaluation.composer_classifier.markdown.render_markdown`). `labels`: the composers'
    column headers (a fine-tuned model's new composers marked), default their names."""
    lines = ["## Composer adherence and the guidance default", ""]
    if section is None:
        return lines + ["Not measured: no guidance scales were given (--adherence_scales).", ""]
    info = section["classifier"]
    if not info["composers"]:
        reasons = "; ".join(f"{c}: {r}" for c, r in sorted(info["not_measurable"].items()))
        lines += [f"Composer adherence is not measurable: {reasons}.", ""]
    lines += (
        adherence_method_markdown(section)
        + adherence_table_markdown(section, composers, labels or composers)
        + guidance_choice_markdown(section["choice"])
    )
    labels = {k: ("unconditional" if k == UNCONDITIONAL else k) for k in section["groups"]}
    detail = {
        "classifier": info,
        "ceiling": section["ceiling"],
        "groups": {labels[k]: v for k, v in section["groups"].items()},
    }
    lines += ["### Per composer, with intervals, and the confusion matrices", "", render_markdown(detail).rstrip(), ""]
    return lines


def adherence_method_markdown(section: dict) -> list[str]:
    """How adherence and degenerate samples are measured."""
    info, settings = section["classifier"], section["settings"]
    return [
        (
            "An independent composer classifier (`midilm.evaluation.composer_classifier`: logistic regression on "
            "key-independent symbolic features, "
            "trained on the training split's real pieces, through the `composer_adherence` evaluate module) judges "
            "each sample on "
            f"its first {settings['crop_length']} {settings['crop_unit']} (the median sample's length). Adherence is "
            "the share of "
            "samples classified as their intended composer, with its 95% Wilson interval; chance is "
            f"{_f(info['chance'], 2)}. Its "
            "accuracy on crops of held-out real pieces is the ceiling; unconditional samples (`COMPOSER_NONE`) show "
            "how often "
            f"each composer is heard by default. {settings['samples_per_composer']} samples per composer at each "
            "scale, sampled "
            "with the REMI grammar, and the musical guard on (and again off with the same seeds)."
        ),
        "",
        (
            "Degenerate: a piece with more notes starting at one onset than any training piece of its composer holds ("
            + ", ".join(f"{c} {n}" for c, n in section["degenerate_threshold"].items())
            + "). "
            + (
                "The guard's bounds (config.json's `midilm_guard`, learnt from the training split): "
                f"{section['guard']['max_notes_per_onset']} "
                f"notes per onset, {section['guard']['max_notes_per_bar']} per bar. "
                if section.get("guard")
                else (
                    "This model carries no guard bounds (`midilm_guard`), so the guard never ran: retrain it with "
                    "this train.py to get them. "
                )
            )
            + "Metric gap: the music metrics' mean standardised gap to the composer's real held-out pieces cut into "
            "passages of "
            f"{settings['real_window_bars']} bars, the samples' median length (`music_metrics` evaluate module, "
            "`real_windows`), "
            "averaged over composers. Shared run: the longest run of pitch intervals shared with one training "
            "piece at any transposition (max / median); the real pieces' is measured on passages as long as the "
            "median sample "
            "(see Memorization). Vertical seconds: the share of pairs of notes that start together a minor or major "
            "second "
            "apart (interval class 1 or 2), pooled over each composer's pieces; the ceiling's row gives the real "
            "held-out pieces'."
        ),
        "",
    ]


def adherence_table_markdown(section: dict, composers: list[str], labels: list[str]) -> list[str]:
    """The ceiling, the unconditional base rate, then one row per guidance scale."""
    info, real, choice = section["classifier"], section["real"], section["choice"]
    not_measurable = info["not_measurable"]
    ceiling = section["ceiling"] or {}
    ceiling_overall = ceiling.get("overall") or {}
    header = [
        "s",
        "adherence [95% interval]",
        "mean p(intended)",
        *labels,
        "degenerate, guard on",
        "degenerate, guard off",
        "syntax errors (max)",
        "metric gap to real",
        "notes / sample",
        "shared run (max / median)",
        f"vertical seconds ({' / '.join(labels)})",
    ]
    per_composer_ceiling = ceiling.get("per_composer", {})

    def composer_cells(shares: dict) -> list[str]:
        return ["not measurable" if c in not_measurable else _share_cell(shares.get(c)) for c in composers]

    rows = [
        [
            "real held-out crops (ceiling)",
            _share_cell(ceiling_overall.get("share"), ceiling_overall.get("interval")),
            _f(ceiling_overall.get("mean_probability"), 2),
            *composer_cells({c: v.get("share") for c, v in per_composer_ceiling.items()}),
            _rate_cell(real["degenerate"]) + " of real pieces",
            "–",
            _f(real["syntax_error_rate_max"]),
            "–",
            "–",
            f"{_f(real['memorization']['max'])} / {_f(real['memorization']['median'], 1)}",
            _seconds_cell(real.get("vertical_seconds"), composers),
        ]
    ]
    base = section["groups"].get(UNCONDITIONAL, {}).get("unconditional") or {}
    rows.append(
        [
            "unconditional (share heard as each composer)",
            f"{_f(info['chance'], 2)} by construction",
            "–",
            *composer_cells({c: v.get("share") for c, v in base.items()}),
            _rate_cell(section["unconditional"]["degenerate_guard_on"]),
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
        ]
    )
    for r in section["rows"]:
        mark = " (default)" if choice.get("scale") == r["scale"] else ""
        rows.append(
            [
                f"{r['scale']:g}{mark}",
                _share_cell(r["adherence"], r["interval"]),
                _f(r["mean_probability"], 2),
                *composer_cells(r["per_composer"]),
                _rate_cell(r["degenerate_guard_on"]),
                _rate_cell(r["degenerate_guard_off"]),
                _f(r["syntax_error_rate_max"]),
                _f(r["metric_gap"]),
                _f(r["notes_per_sample"], 1),
                f"{_f(r['memorization']['max'])} / {_f(r['memorization']['median'], 1)}",
                _seconds_cell(r.get("vertical_seconds"), composers),
            ]
        )
    return _table(header, rows)


def _seconds_cell(shares: dict | None, composers: list[str]) -> str:
    """Vertical seconds per composer (a report written before the measure existed has none)."""
    return " / ".join(_f((shares or {}).get(c), 3) for c in composers) if shares else "–"


def guidance_choice_markdown(choice: dict) -> list[str]:
    if choice.get("scale") is None:
        return [f"Guidance default: unchanged, because {choice['reason']}.", ""]
    else:
        where = (
            f"written to `{choice['written_to']}` (`midilm_guidance_scale`), which generate.py now uses by default"
            if choice.get("written_to")
            else "not written to the model folder (evaluate_samples.py --write_default_guidance writes it)"
        )
        return [f"Guidance default: **s = {choice['scale']:g}**, {where}. Why: {choice['reason']}.", ""]
