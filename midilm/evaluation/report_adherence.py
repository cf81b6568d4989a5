"""report.md's composer-adherence section: the table per guidance scale, how it is measured, the default it
chooses."""

from __future__ import annotations

from midilm.evaluation.adherence import UNCONDITIONAL
from midilm.evaluation.composer_classifier.markdown import render_markdown
from midilm.evaluation.report_format import fmt, rate_cell, share_cell, table


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
            f"{fmt(info['chance'], 2)}. Its "
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
        return ["not measurable" if c in not_measurable else share_cell(shares.get(c)) for c in composers]

    rows = [
        [
            "real held-out crops (ceiling)",
            share_cell(ceiling_overall.get("share"), ceiling_overall.get("interval")),
            fmt(ceiling_overall.get("mean_probability"), 2),
            *composer_cells({c: v.get("share") for c, v in per_composer_ceiling.items()}),
            rate_cell(real["degenerate"]) + " of real pieces",
            "–",
            fmt(real["syntax_error_rate_max"]),
            "–",
            "–",
            f"{fmt(real['memorization']['max'])} / {fmt(real['memorization']['median'], 1)}",
            _seconds_cell(real.get("vertical_seconds"), composers),
        ]
    ]
    base = section["groups"].get(UNCONDITIONAL, {}).get("unconditional") or {}
    rows.append(
        [
            "unconditional (share heard as each composer)",
            f"{fmt(info['chance'], 2)} by construction",
            "–",
            *composer_cells({c: v.get("share") for c, v in base.items()}),
            rate_cell(section["unconditional"]["degenerate_guard_on"]),
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
                share_cell(r["adherence"], r["interval"]),
                fmt(r["mean_probability"], 2),
                *composer_cells(r["per_composer"]),
                rate_cell(r["degenerate_guard_on"]),
                rate_cell(r["degenerate_guard_off"]),
                fmt(r["syntax_error_rate_max"]),
                fmt(r["metric_gap"]),
                fmt(r["notes_per_sample"], 1),
                f"{fmt(r['memorization']['max'])} / {fmt(r['memorization']['median'], 1)}",
                _seconds_cell(r.get("vertical_seconds"), composers),
            ]
        )
    return table(header, rows)


def _seconds_cell(shares: dict | None, composers: list[str]) -> str:
    """Vertical seconds per composer (a report written before the measure existed has none)."""
    return " / ".join(fmt((shares or {}).get(c), 3) for c in composers) if shares else "–"


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
