"""The report: report.json, report.md (assembled from the sections of `report_samples`, `report_adherence`
and `report_tasks`) and the evaluated samples as MIDI; a headline for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from midilm.core.errors import InputError
from midilm.core.outputs import replace_dir, staging_dir
from midilm.evaluation.report_adherence import adherence_markdown
from midilm.evaluation.report_format import fmt, percent, share_cell, verdict
from midilm.evaluation.report_samples import (
    headline_markdown,
    intro_markdown,
    memorization_markdown,
    method_markdown,
    per_composer_markdown,
    sweep_markdown,
)
from midilm.evaluation.report_tasks import accompaniment_section_markdown, infilling_markdown, long_pieces_markdown


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


def headline(report: dict) -> str:
    """A few lines for the terminal."""
    lik, comp = report["likelihood"], report["comparison"]
    t_dist, r_dist = (
        comp["trained"]["distance"]["mean_over_composers"],
        comp["random"]["distance"]["mean_over_composers"],
    )
    lines = [
        (
            f"{lik['split']} perplexity {fmt(lik['trained']['perplexity'])} (unigram "
            f"{fmt(lik['unigram']['perplexity'])}, "
            f"ratio {fmt(lik['perplexity_ratio_trained_to_unigram'])}); NLL per note "
            f"{fmt(lik['trained']['nll_per_note'])} nats"
        ),
        (
            f"metric gap to real: trained {fmt(t_dist['mean_gap'])}, random weights {fmt(r_dist['mean_gap'])}; "
            f"pitch-class JS: trained {fmt(t_dist['pitch_class_js'])}, random weights {fmt(r_dist['pitch_class_js'])}"
        ),
        verdict(t_dist, r_dist),
    ]
    long = report.get("long_pieces")
    if long and long["mean_over_composers"]["composers"]:
        mean = long["mean_over_composers"]
        lines.append(
            f"long pieces ({long['long_tokens']} tokens, {long['windows']} windows): "
            f"drift gap {fmt(mean['drift_gap'])}, "
            f"real pieces vs real pieces {fmt(mean['real_pieces_gap'])}; within it for {mean['within_reference']} of "
            f"{mean['composers']} composers"
        )
    infilling = report.get("infilling")
    if infilling and infilling["spans"]:
        lines.append(
            f"infilling ({infilling['spans']} held-out spans): NLL per note {fmt(infilling['infill_nll_per_note'])} "
            f"given both sides vs {fmt(infilling['prefix_nll_per_note'])} given the bars before only "
            f"({percent(infilling['nll_reduction'])} lower); metric gap to the real spans "
            f"{fmt(infilling['metric_gap'], 2)} (real vs real {fmt(infilling['real_spans_gap'], 2)}); notes outside "
            f"identical in {percent(infilling['outside_identical_share'])} of spans; syntax error rate "
            f"{fmt(infilling['syntax_error_rate_max'])} (max)"
        )
    adherence = report.get("adherence")
    if adherence and adherence["rows"]:
        ceiling = (adherence["ceiling"] or {}).get("overall", {}).get("share")
        scales = ", ".join(f"s={r['scale']:g} {share_cell(r['adherence'])}" for r in adherence["rows"])
        lines.append(
            f"composer adherence (classifier ceiling {share_cell(ceiling)}, chance "
            f"{fmt(adherence['classifier']['chance'], 2)}): {scales}"
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
