"""The adherence report as Markdown tables (per composer, base rates, confusion)."""

from __future__ import annotations


def _cell(rate: dict | None) -> str:
    if not rate or rate.get("share") is None:
        return "–"
    lo, hi = rate["interval"]
    return f"{rate['share']:.2f} [{lo:.2f}, {hi:.2f}] (n={rate['n']})"


def render_markdown(report: dict) -> str:
    """The adherence table (rows: real held-out crops, then each group; a cell is the share classified
    as the intended composer, its 95% Wilson interval and n), the not-measurable composers with their
    reasons, and the confusion matrices."""
    info = report["classifier"]
    composers = info["composers"]
    not_measurable = info["not_measurable"]
    lines = []
    if not composers:
        lines.append(
            "Composer adherence is not measurable: " + "; ".join(f"{c}: {r}" for c, r in sorted(not_measurable.items()))
        )
        return "\n".join(lines) + "\n"
    columns = composers + sorted(not_measurable)
    lines.append("| | " + " | ".join(columns) + " | all | mean p(intended) |")
    lines.append("|---" * (len(columns) + 3) + "|")

    def row(label: str, result: dict, per: str = "per_composer") -> str:
        cells = []
        for c in columns:
            if c in not_measurable:
                cells.append("not measurable")
            else:
                cells.append(_cell((result.get(per) or {}).get(c)))
        p = result["overall"].get("mean_probability")
        return (
            f"| {label} | "
            + " | ".join(cells)
            + f" | {_cell(result['overall'])} | {'–' if p is None else f'{p:.2f}'} |"
        )

    lines.append(row("real held-out crops (ceiling)", report["ceiling"]))
    for label, result in report["groups"].items():
        if result["unconditional"] and not result["per_composer"]:
            cells = [
                "not measurable" if c in not_measurable else _cell(result["unconditional"].get(c)) for c in columns
            ]
            lines.append(
                f"| {label}: share classified as each composer (base rate) | "
                + " | ".join(cells)
                + f" | {1 / len(composers):.2f} by construction | – |"
            )
        else:
            lines.append(row(label, result))
    lines.append("")
    lines.append(
        f"A cell: share of pieces classified as their intended composer [95% Wilson interval] (n); crops of "
        f"{info['crop']['length']} {info['crop']['unit']}; chance {1 / len(composers):.2f}."
    )
    for c, reason in sorted(not_measurable.items()):
        lines.append(f"- {c}: not measurable ({reason}).")
    lines.append("")
    for label, result in [("real held-out crops", report["ceiling"])] + list(report["groups"].items()):
        conf = result["confusion"]
        if not conf["rows"]:
            continue
        lines.append(f"Confusion, {label} (rows: intended, columns: classified as):")
        lines.append("")
        lines.append("| intended \\ classified | " + " | ".join(conf["labels"]) + " |")
        lines.append("|---" * (len(conf["labels"]) + 1) + "|")
        for name, counts in zip(conf["rows"], conf["matrix"]):
            lines.append(f"| {name} | " + " | ".join(str(x) for x in counts) + " |")
        lines.append("")
    return "\n".join(lines)
