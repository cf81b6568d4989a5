"""Is the composer classifier hearing the music? Its verdicts on an evaluation's samples beside those of
an independent classifier, and of the same classifier limited to pitch or to rhythm features.

    python bench/crosscheck_adherence.py --model_dir model_output --dataset_dir data --samples_dir samples/eval/samples

The report's classifier (`midilm.evaluation.composer_classifier`: logistic regression on 79 global statistics of a
crop) is refitted exactly as the report fits it. The independent one shares neither features nor model:
multinomial naive Bayes over counts of 1- to 3-grams of melodic steps (interval of the top line and of
the bass between successive onsets, with the log2 ratio of successive inter-onset times) and of
vertical events (notes per onset with their log2 duration). Both are trained on crops of the training
split's real pieces and validated on crops of held-out pieces (their ceilings). The pitch-only and
rhythm-only fits of the report's model say which kind of feature carries a verdict.

Every sample set under --samples_dir (`<composer>_<i>.mid`; `none_<i>.mid` are unconditional) is judged
on its first crop of --crop_length notes (default: the median sample's length, as the report does).
Prints one Markdown table: adherence per set and composer, for each classifier.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.preprocessing import StandardScaler

from midilm.core.modeling import load_midilm_dir
from midilm.evaluation.composer_classifier.features import (
    FEATURE_NAMES,
    Notes,
    crops,
    features,
    typical_length,
)
from midilm.evaluation.composer_classifier.fit import fit_classifier
from midilm.evaluation.composer_classifier.pieces import real_pieces, scores_from_midi
from midilm.evaluation.ngram_classifier import ngrams  # the independent classifier's features, now in the package

PITCH_PREFIXES = (
    "pc_rel",
    "minor",
    "key_fit",
    "harmonic_ic",
    "top_interval",
    "bass_interval",
    "top_up",
    "bass_up",
    "pitch_",
    "top_bass",
)
SKIP_SETS = ("random", "accompaniment")


def training_crops(train: dict[str, list], length: int, per_piece: int, seed: int) -> tuple[list[Notes], list[int]]:
    """Crops of every training piece (at most `per_piece` each, seeded) and their composer's index in sorted order."""
    rng = random.Random(seed)
    cs, labels = [], []
    for k, name in enumerate(sorted(train)):
        for piece in train[name]:
            for crop in crops(Notes.of(piece), length, "notes", per_piece, rng):
                cs.append(crop)
                labels.append(k)
    return cs, labels


class NgramBayes:
    """Multinomial naive Bayes over the n-gram counts of `steps`."""

    def __init__(self, train: dict[str, list], length: int, per_piece: int, seed: int):
        self.composers = sorted(train)
        cs, labels = training_crops(train, length, per_piece, seed)
        self.vectorizer = DictVectorizer()
        self.model = MultinomialNB(alpha=0.5).fit(self.vectorizer.fit_transform([ngrams(c) for c in cs]), labels)

    def predict(self, crops_: list[Notes]) -> list[str]:
        return [self.composers[k] for k in self.model.predict(self.vectorizer.transform([ngrams(c) for c in crops_]))]


class FeatureSubset:
    """The report's classifier (logistic regression, standardised) fitted on some of its features."""

    def __init__(self, train: dict[str, list], length: int, per_piece: int, seed: int, keep: np.ndarray):
        self.composers, self.keep = sorted(train), keep
        cs, y = training_crops(train, length, per_piece, seed)
        x = [features(c)[keep] for c in cs]
        self.scaler = StandardScaler().fit(x)
        self.model = LogisticRegression(max_iter=5000, class_weight="balanced").fit(self.scaler.transform(x), y)

    def predict(self, crops_: list[Notes]) -> list[str]:
        x = self.scaler.transform([features(c)[self.keep] for c in crops_])
        return [self.composers[k] for k in self.model.predict(x)]


def first_crop(score, length: int) -> Notes:
    return crops(Notes.of(score), length, "notes", max_crops=1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="The model folder (its tokenizer decodes the real pieces).")
    parser.add_argument("--dataset_dir", required=True, help="The model's prepared dataset.")
    parser.add_argument(
        "--samples_dir", required=True, help="evaluate_samples.py's samples/ folder: one sub-folder per sample set."
    )
    parser.add_argument("--crop_length", type=int, default=None, help="Notes per crop (default: the median sample's).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    _, tokenizer, _ = load_midilm_dir(args.model_dir)
    dataset = load_from_disk(args.dataset_dir)
    train = real_pieces(dataset["train"], tokenizer, seed=args.seed)
    heldout: dict[str, list] = {}
    for split in ("validation", "test"):
        for name, pieces in real_pieces(dataset[split], tokenizer, seed=args.seed).items():
            heldout.setdefault(name, []).extend(pieces)

    sets = {}
    for folder in sorted(Path(args.samples_dir).iterdir()):
        if folder.is_dir() and not folder.name.startswith(SKIP_SETS):
            paths = sorted(folder.glob("*.mid"))
            scores = [s for s in scores_from_midi(paths)]
            sets[folder.name] = ([re.sub(r"_\d+$", "", p.stem) for p in paths], scores)
    length = args.crop_length or typical_length(
        [s for _, scores in sets.values() for s in scores if len(Notes.of(s))], "notes"
    )

    report = fit_classifier(train, heldout, crop_length=length, crop_unit="notes", seed=args.seed)
    pitch = np.array([n.startswith(PITCH_PREFIXES) for n in FEATURE_NAMES])
    judges = {
        "report's classifier": lambda cs: [
            report.composers[k] for k in report.crop_probabilities(np.array([features(c) for c in cs])).argmax(1)
        ],
        "n-gram naive Bayes": NgramBayes(train, length, 4, args.seed).predict,
        "pitch features only": FeatureSubset(train, length, 4, args.seed, pitch).predict,
        "rhythm features only": FeatureSubset(train, length, 4, args.seed, ~pitch).predict,
    }
    held_crops, held_labels = [], []
    rng = random.Random(args.seed + 1)
    for name, pieces in heldout.items():
        for piece in pieces:
            for crop in crops(Notes.of(piece), length, "notes", 4, rng):
                held_crops.append(crop)
                held_labels.append(name)
    composers = report.composers
    rows = [("real held-out crops (ceiling)", held_labels, held_crops)]
    openings = [
        (name, first_crop(piece, length))
        for name, pieces in heldout.items()
        for piece in pieces
        if len(Notes.of(piece))
    ]
    rows.append(
        (
            "real held-out openings (first crop, as samples are judged)",
            [n for n, _ in openings],
            [c for _, c in openings],
        )
    )
    for set_name, (labels, scores) in sets.items():
        kept = [(lab, s) for lab, s in zip(labels, scores) if len(Notes.of(s))]
        rows.append((set_name, [lab for lab, _ in kept], [first_crop(s, length) for _, s in kept]))

    print(
        f"Crops of {length} notes; {platform.machine()}, {os.cpu_count()} cores, {datetime.date.today()}; samples: "
        f"{args.samples_dir}\n"
    )
    seconds = [FEATURE_NAMES.index("harmonic_ic_1"), FEATURE_NAMES.index("harmonic_ic_2")]

    def seconds_share(cs: list[Notes], labels: list[str]) -> str:
        by = {c: [features(x)[seconds].sum() for x, lab in zip(cs, labels) if lab == c] for c in [*composers, "none"]}
        return " / ".join(f"{np.mean(v):.3f}" for c, v in by.items() if v)

    print("| set | " + " | ".join(judges) + " | seconds among intervals at one onset |")
    print("|---|" + "---|" * (len(judges) + 1))
    for set_name, labels, cs in rows:
        cells = []
        for judge in judges.values():
            predicted = judge(cs)
            if set_name == "unconditional":
                counts = Counter(predicted)
                cells.append("heard as " + " / ".join(f"{c} {counts[c] / len(predicted):.2f}" for c in composers))
            else:
                per = [np.mean([p == c for p, lab in zip(predicted, labels) if lab == c]) for c in composers]
                overall = np.mean([p == lab for p, lab in zip(predicted, labels)])
                cells.append(f"{overall:.2f} (" + " / ".join(f"{v:.2f}" for v in per) + ")")
        print(f"| {set_name} | " + " | ".join(cells) + f" | {seconds_share(cs, labels)} |")
    print(
        f"\nA cell: share classified as the intended composer, all (then {' / '.join(composers)}). Seconds: the mean "
        "share of "
        "minor and major seconds (interval classes 1 and 2) among the intervals between notes that start together, "
        "per composer."
    )


if __name__ == "__main__":
    main()
