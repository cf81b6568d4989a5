"""The tuning's record in words: the verdict of the two classifiers, the card's section, the before/after table."""

from __future__ import annotations

import numpy as np

TUNING_KEY = "midilm_tuning"  # config.json: what the tuning did (transformers never reads it)
TUNING_REPORT = "tuning_report.json"


def verdict(before: dict, after: dict, composers: list[str]) -> str:
    """Did both classifiers hear the tuned model's samples as their composer more often? A disagreement is
    said, never called a success."""

    def mean(side: dict, name: str) -> float | None:
        shares = [side[c][name]["share"] for c in composers if side[c].get(name)]
        return float(np.mean(shares)) if shares else None

    changes = {
        name: (mean(before, name), mean(after, name)) for name in ("reward_classifier", "independent_classifier")
    }
    text = "; ".join(
        f"{name.replace('_', ' ')} {b:.2f} -> {a:.2f}"
        for name, (b, a) in changes.items()
        if b is not None and a is not None
    )
    ups = [a > b for b, a in changes.values() if b is not None and a is not None]
    if len(ups) == 2 and ups[0] != ups[1]:
        return (
            f"the two classifiers disagree ({text}): not a success, the tuning may have learnt the reward "
            "classifier, not the music"
        )
    if ups and all(ups):
        return f"both classifiers hear the composers more often ({text})"
    return f"adherence did not rise ({text})"


def tuning_card(tuning: dict) -> str:
    """The card's section on the preference tuning."""
    weights = ", ".join(f"{k} {v:g}" for k, v in tuning["weights"].items())
    rows = "\n".join(
        f"| {h['round']} | {h['samples']} | {h['pairs']} | "
        + " / ".join(f"{c} {v['share']:.2f}" for c, v in h["adherence"].items())
        + f" | {h['dpo']['rewards/margins']:.3f} | {h['dpo']['rewards/accuracies']:.2f} |"
        for h in tuning["round_history"]
    )
    untuned = "".join(f"\n- {c} was left untuned: {reason}." for c, reason in tuning["untuned_composers"].items())
    header = (
        "| round | samples | pairs | reward classifier's adherence of the samples it tuned on | DPO reward margin "
        "| DPO reward accuracy |"
    )
    return f"""
## Preference tuning
Tuned from `{tuning["base_model"]}` with DPO (TRL, the base model as the reference) in {tuning["rounds"]} round(s) of
{tuning["samples_per_composer"]} samples per composer at guidance {tuning["guidance_scale"]:g}, scored by the composer
classifier, vertical seconds over the composer's real rate, copying, clusters, syntax and length (weights: {weights});
stopped {tuning["stopped"]}. config.json's `{TUNING_KEY}` holds the record, `{TUNING_REPORT}` the rounds.{untuned}

{header}
|---|---|---|---|---|---|
{rows}

Before and after ({tuning["samples_per_composer"]} samples per composer each; the independent classifier is the n-gram
naive Bayes of `midilm.evaluation.ngram_classifier`, which was not the reward): {tuning["before_after"]["verdict"]}.

{before_after_markdown(tuning["before_after"])}
Tuning moves what classifier-free guidance mixes: run `evaluate_samples.py --write_default_guidance` on this folder
to choose the guidance default again.
"""


def before_after_markdown(table: dict) -> str:
    """One row per composer and side: both classifiers' adherence with intervals, vertical seconds against
    real, notes, memorization."""

    def share(cell: dict | None) -> str:
        return "–" if not cell else f"{cell['share']:.2f} [{cell['interval'][0]:.2f}, {cell['interval'][1]:.2f}]"

    lines = [
        (
            "| composer | model | reward classifier | independent classifier | vertical seconds (real) "
            "| notes / sample | copied run max / median (real passages max) | clusters |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in table["before"]:
        for side in ("before", "after"):
            row = table[side].get(c)
            if row:
                lines.append(
                    f"| {c} | {side} | {share(row['reward_classifier'])} | {share(row['independent_classifier'])} | "
                    f"{row['vertical_seconds'] or 0:.3f} ({row['vertical_seconds_real'] or 0:.3f}) | "
                    f"{row['notes_per_sample']:.1f} | "
                    f"{row['memorization']['max']} / {row['memorization']['median']:g} "
                    f"({row['memorization']['real_passages_max']}) | {row['degenerate']}/{row['n']} |"
                )
    return "\n".join(lines) + "\n"
