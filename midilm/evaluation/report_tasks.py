"""report.md's sections on the tasks beyond continuation: accompaniment, long pieces (drift), infilling."""

from __future__ import annotations

from midilm.evaluation.accompaniment import ACCOMPANIMENT_METRICS
from midilm.evaluation.report_format import fmt, percent, span_range, table


def accompaniment_section_markdown(report: dict) -> list[str]:
    """The accompaniment figures, or why there are none."""
    lines = []
    if report.get("accompaniment"):
        lines += accompaniment_markdown(report["accompaniment"])
    elif report.get("accompaniment_skipped"):
        lines += [f"Accompaniment: not evaluated, because {report['accompaniment_skipped']}.", ""]
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
    rows = [[m.replace("_", " ")] + [fmt(section["mean"][k][m]) for k in names] for m in ACCOMPANIMENT_METRICS]
    lines += table(["mean over pieces", *names.values()], rows)
    rows = []
    for e in section["pieces"]:
        for k in names:
            r = e[k]
            rows.append(
                [
                    e["source"],
                    str(e["bars"]),
                    names[k],
                    fmt(r["melody_adherence"]),
                    fmt(r["harmonic_fit"]),
                    fmt(r["beat_fit"]),
                    fmt(r["key_fit"]),
                    str(r["accompaniment_notes"]),
                    fmt(r.get("syntax_error_rate")),
                ]
            )
    lines += table(
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
            f"({section['sampling_s']:.1f} s); syntax error rate {fmt(section['syntax_error_rate_max'])} (max). "
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
                span_range(r["new_tokens"]),
                str(r["bars_per_window"]),
                f"**{fmt(r['drift_gap'], 2)}**",
                f"{fmt(ref['mean_gap'], 2)} [{fmt(ref['p10'], 2)}, {fmt(ref['p90'], 2)}] ({ref['pieces']} pieces)"
                if ref
                else "– (fewer than 2 held-out pieces)",
                {True: "yes", False: "no", None: "–"}[r["within_reference"]],
                fmt(r["first_vs_real"], 2),
                fmt(r["last_vs_real"], 2),
            ]
        )
    lines += table(
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
    lines += table(
        ["figure", "value", "reference"],
        [
            [
                "NLL per note, infill (before + after)",
                f"**{fmt(section['infill_nll_per_note'])}**",
                f"prefix only: {fmt(section['prefix_nll_per_note'])}",
            ],
            ["NLL reduction from the bars after", f"**{percent(section['nll_reduction'])}**", "issue target: ≥ 10%"],
            [
                "control: infill layout, no bars after",
                fmt(section["no_after_nll_per_note"]),
                f"the bars after alone: {percent(section['nll_reduction_from_the_bars_after'])} lower",
            ],
            [
                "metric gap, rewritten vs real spans",
                f"**{fmt(section['metric_gap'], 2)}**",
                f"real spans elsewhere vs real spans: {fmt(section['real_spans_gap'], 2)}",
            ],
            ["notes outside the span identical", f"{percent(section['outside_identical_share'])} of spans", "100%"],
            ["syntax error rate (max)", fmt(section["syntax_error_rate_max"]), "0"],
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
    lines += table(
        ["seam", "rewritten", "real"],
        [
            [f"{side} {SEAM_LABELS[m]}", fmt(v["infilled"], 2), fmt(v["real"], 2)]
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
            fmt(e["infill_nll_per_note"]),
            fmt(e["prefix_nll_per_note"]),
            str(e["new_notes"]),
            "yes" if e["outside_identical"] else "**no**",
        ]
        for e in section["per_span"]
    ]
    lines += table(
        ["composer", "piece", "bars", "notes", "NLL/note infill", "NLL/note prefix", "new notes", "outside identical"],
        rows,
    )
    return lines
