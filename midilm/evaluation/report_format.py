"""How report.md and the headline write numbers and tables: cells, shares, the verdict."""

from __future__ import annotations

import numpy as np

SETS = {"real": "real held-out", "trained": "trained model", "random": "random weights"}


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (
        ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        + ["| " + " | ".join(r) + " |" for r in rows]
        + [""]
    )


def verdict(trained: dict, random: dict) -> str:
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


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def share_cell(share: float | None, interval=None) -> str:
    if share is None:
        return "–"
    return f"{share:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def rate_cell(rate: dict | None) -> str:
    """`3/48 (0.06)`: a count of pieces out of n, and its share."""
    if not rate or not rate.get("n"):
        return "–"
    return f"{rate['count']}/{rate['n']} ({rate['share']:.2f})"


def span_range(values: list[int]) -> str:
    """`508`, or `470–508` when the values differ."""
    if not values:
        return "–"
    return str(min(values)) if min(values) == max(values) else f"{min(values)}–{max(values)}"
