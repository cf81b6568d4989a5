"""Judging samples: the share classified as the intended composer, with Wilson intervals, beside base rates
(unconditional samples) and the ceiling (held-out real crops)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from symusic import Score

from midilm.evaluation.composer_classifier.classifier import ComposerClassifier

NONE_LABELS = {None, "", "none", "composer_none"}  # intended composer of an unconditional sample (case-insensitive)


def wilson_interval(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """95% (by default) Wilson score interval of a proportion hits / n; None when n = 0."""
    if n == 0:
        return None
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(hits: int, n: int) -> dict:
    interval = wilson_interval(hits, n)
    return {"n": n, "hits": hits, "share": hits / n if n else None, "interval": list(interval) if interval else None}


# Judging samples -------------------------------------------------------------------------------


def _is_unconditional(label: str | None) -> bool:
    return label is None or label.strip().casefold() in NONE_LABELS


def judge(classifier: ComposerClassifier, probabilities: np.ndarray, intended: Sequence[str | None]) -> dict:
    """Adherence of pieces whose composer probabilities are given, against their intended composers.

    Returns a JSON-ready dict:
      ``per_composer``: for each intended composer, ``n``, ``hits`` (classified as it), ``share``,
        ``interval`` (95% Wilson) and ``mean_probability`` of it; or ``{"measurable": False, "reason"}``;
      ``overall``: the same pooled over every measurable intended composer;
      ``unconditional``: for unconditional pieces (intended None / "none"), per composer the share
        classified as it (its base rate, with interval) and its mean probability;
      ``confusion``: ``labels`` (the classes), ``rows`` (intended composers, "none" last) and ``matrix``
        (counts, rows intended, columns predicted).
    """
    classes = classifier.composers
    if len(intended) != len(probabilities):
        raise ValueError(f"{len(probabilities)} pieces but {len(intended)} intended composers")
    predicted = probabilities.argmax(axis=1) if len(classes) else np.zeros(len(intended), dtype=np.int64)
    per_composer: dict[str, dict] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    unconditional: list[int] = []
    for i, label in enumerate(intended):
        if _is_unconditional(label):
            unconditional.append(i)
        else:
            groups[label].append(i)
    hits_all = n_all = 0
    probs_all: list[float] = []
    for label, members in sorted(groups.items()):
        if label not in classes:
            reason = classifier.not_measurable.get(label, "no such composer among the classifier's training composers")
            per_composer[label] = {"measurable": False, "reason": reason, "n": len(members)}
            continue
        k = classes.index(label)
        hits = int((predicted[members] == k).sum())
        probs = probabilities[members, k]
        per_composer[label] = {"measurable": True, **_rate(hits, len(members)), "mean_probability": float(probs.mean())}
        hits_all += hits
        n_all += len(members)
        probs_all += probs.tolist()
    overall = {**_rate(hits_all, n_all), "mean_probability": float(np.mean(probs_all)) if probs_all else None}
    base = None
    if unconditional and classes:
        base = {
            c: {
                **_rate(int((predicted[unconditional] == k).sum()), len(unconditional)),
                "mean_probability": float(probabilities[unconditional, k].mean()),
            }
            for k, c in enumerate(classes)
        }
    rows = sorted(groups) + (["none"] if unconditional else [])
    matrix = []
    for row in rows:
        members = unconditional if row == "none" else groups[row]
        matrix.append(np.bincount(predicted[members], minlength=len(classes)).tolist() if classes else [])
    return {
        "per_composer": per_composer,
        "overall": overall,
        "unconditional": base,
        "confusion": {"labels": list(classes), "rows": rows, "matrix": matrix},
    }


def adherence(classifier: ComposerClassifier, scores: Sequence[Score], intended: Sequence[str | None]) -> dict:
    """`judge` on samples: each Score is judged on its first crop; `intended` holds each sample's
    composer name, None or "none" for an unconditional sample."""
    if not classifier.composers:
        probabilities = np.zeros((len(scores), 0))
    else:
        probabilities = classifier.probabilities(scores)
    result = judge(classifier, probabilities, intended)
    result["predicted"] = (
        [classifier.composers[k] for k in probabilities.argmax(axis=1)]
        if classifier.composers
        else [None] * len(scores)
    )
    return result


def adherence_report(
    classifier: ComposerClassifier, groups: dict[str, tuple[Sequence[Score], Sequence[str | None]]]
) -> dict:
    """The adherence table's data: the classifier (composers, not measurable ones with their reasons,
    training counts), its ceiling on real held-out crops, and `adherence` for each named group of
    samples (e.g. "unconditional", "s=1", "s=3"): group label -> (scores, intended composers)."""
    return {
        "classifier": {
            "composers": classifier.composers,
            "not_measurable": classifier.not_measurable,
            "crop": {"length": classifier.crop_length, "unit": classifier.crop_unit},
            "training": classifier.training,
            "chance": 1 / len(classifier.composers) if classifier.composers else None,
        },
        "ceiling": classifier.ceiling,
        "groups": {label: adherence(classifier, scores, intended) for label, (scores, intended) in groups.items()},
    }
