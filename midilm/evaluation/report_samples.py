"""report.md's sections on the likelihood and the sample sets: the intro, the headline table, music metrics per
composer, histogram distances per guidance scale, memorization, and how the numbers are made."""

from __future__ import annotations

import numpy as np

from midilm.evaluation.report_format import SETS, fmt, table, verdict
from midilm.metrics.compare import DISTANCE_METRICS
from midilm.metrics.piece import HISTOGRAM_METRICS, SCALAR_METRICS


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


def likelihood_rows(s: dict, lik: dict) -> list[list[str]]:
    """The headline table's likelihood rows: trained, random weights, unigram."""
    return [
        [
            f"perplexity per token ({s['split']})",
            fmt(lik["trained"]["perplexity"]),
            fmt(lik["random_weights"]["perplexity"]),
            fmt(lik["unigram"]["perplexity"]),
        ],
        [
            "perplexity / unigram perplexity",
            fmt(lik["perplexity_ratio_trained_to_unigram"]),
            fmt(lik["random_weights"]["perplexity"] / lik["unigram"]["perplexity"]),
            "1.000",
        ],
        [
            "NLL per token (nats)",
            fmt(lik["trained"]["nll_per_token"]),
            fmt(lik["random_weights"]["nll_per_token"]),
            fmt(lik["unigram"]["nll_per_token"]),
        ],
        [
            "NLL per note (nats)",
            fmt(lik["trained"]["nll_per_note"]),
            fmt(lik["random_weights"]["nll_per_note"]),
            fmt(lik["unigram"]["nll_per_note"]),
        ],
        [
            "NLL per token with COMPOSER_NONE for the composer (nats)",
            fmt(lik["trained_unconditional"]["nll_per_token"]),
            "–",
            "–",
        ],
        [
            "composer information: NLL per token without the composer minus with it (nats)",
            fmt(lik["composer_information_nats_per_token"], 4),
            "–",
            "–",
        ],
    ]


def sample_set_rows(report: dict, t_dist: dict, r_dist: dict) -> list[list[str]]:
    """The headline table's rows on the sample sets: syntax, distances to the real pieces (`t_dist`, `r_dist`: the
    trained and the random-weight set's means over composers), memorization."""
    mem = report["memorization"]
    samples = {k: report["pieces"][k] for k in ("trained", "random")}
    return [
        [
            "syntax error rate of samples (max)",
            fmt(max(p["syntax_error_rate"] for p in samples["trained"])),
            fmt(max(p["syntax_error_rate"] for p in samples["random"])),
            "–",
        ],
        [
            "music metrics: mean standardised gap to real (lower is closer)",
            fmt(t_dist["mean_gap"]),
            fmt(r_dist["mean_gap"]),
            "–",
        ],
        [
            "music metrics: mean distribution overlap with real (higher is closer)",
            fmt(t_dist["mean_overlap"]),
            fmt(r_dist["mean_overlap"]),
            "–",
        ],
        [
            "pitch-class histogram JS divergence to real (bits)",
            fmt(t_dist["pitch_class_js"]),
            fmt(r_dist["pitch_class_js"]),
            "–",
        ],
        [
            "duration histogram JS divergence to real (bits)",
            fmt(t_dist["duration_js"]),
            fmt(r_dist["duration_js"]),
            "–",
        ],
        [
            "longest interval run shared with a training piece, any transposition (max / median)",
            f"{mem['trained']['all']['max']} / {fmt(mem['trained']['all']['median'], 1)}",
            f"{mem['random']['all']['max']} / {fmt(mem['random']['all']['median'], 1)}",
            "–",
        ],
    ]


def headline_markdown(report: dict) -> list[str]:
    """The trained model beside random weights and the unigram model; the verdict."""
    s, comp = report["settings"], report["comparison"]
    t_dist, r_dist = (
        comp["trained"]["distance"]["mean_over_composers"],
        comp["random"]["distance"]["mean_over_composers"],
    )
    lines = []
    rows = likelihood_rows(s, report["likelihood"]) + sample_set_rows(report, t_dist, r_dist)
    lines += table(["", "trained model", "random weights", "unigram"], rows)
    lines += [
        (
            f"Verdict, averaged over composers: {verdict(t_dist, r_dist)}. "
            f"Real {s['split']} pieces read back with syntax error rate "
            f"{fmt(report['checks']['real_pieces_syntax_error_rate_max'])} (expected 0)."
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
                cells.append("–" if k == "real" else fmt(js))
            rows.append(cells)
        passages = comp["trained"]["per_composer"][c].get("notes_per_bar", {}).get("real_n", 0)
        rows.append(
            ["pieces"]
            + [
                f"{passages} passages ({len(by_set['real'])} pieces)" if k == "real" else str(len(by_set[k]))
                for k in SETS
            ]
        )
        lines += table(["metric", *SETS.values()], rows)
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
                    fmt(r["pitch_class_js"]),
                    fmt(r["duration_js"]),
                    fmt(r["mean_gap"]),
                    fmt(r["pitch_class_js_other_composers"]),
                    fmt(r["notes"], 1),
                    f"{fmt(r.get('longest_training_run_max'))} / {fmt(r.get('longest_training_run_median'), 1)}",
                ]
            )
    lines += table(
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
        return [name, composer, str(v["n"]), str(v["max"]), fmt(v["median"], 1), fmt(v["median_notes"], 1)]

    rows = [row(SETS["real"], c, v) for c, v in mem["real"].items()]
    rows += [row(f"real held-out, passages of {passages['notes']} notes", c, v) for c, v in passages["runs"].items()]
    rows += [row(SETS[k], c, v) for k in ("trained", "random") for c, v in mem[k].items()]
    rows += [
        row(f"trained, s = {scale}", "all", by_composer["all"])
        for scale, by_composer in report.get("memorization_by_scale", {}).items()
    ]
    lines += table(["set", "composer", "pieces", "max run", "median run", "median notes"], rows)
    rows = [
        [
            p["name"],
            str(p["n_notes"]),
            str(p["longest_training_run"]),
            fmt(p["longest_training_run_share"], 2),
            p.get("longest_training_run_source") or "–",
            fmt(p["syntax_error_rate"]),
        ]
        for p in samples["trained"]
    ]
    lines += ["Trained-model samples:", ""] + table(
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
