"""The independent composer classifier: multinomial naive Bayes over melodic and vertical n-grams.

The report's classifier (`midilm.evaluation.composer_classifier`) reads 79 global statistics of a crop. Preference
tuning makes that classifier its reward, so it can no longer be the only judge: a model can learn the
statistics a linear model weighs without writing more like the composer. This one shares neither
features nor model with it. A crop becomes a sequence of symbols, per onset:

* the chord: notes at the onset (1..6+) and the log2 of its longest duration;
* the step from the previous onset: the top line's and the bass's intervals (semitones, clipped to an
  octave) with the log2 ratio of successive inter-onset times;

and the classifier counts 1- to 3-grams of those symbols (scikit-learn's MultinomialNB, alpha 0.5).
Both are key-blind (intervals only), so transposed training copies do not teach either the key.

Fitted like the report's classifier: on crops of the training split's original pieces, its ceiling
measured on crops of the held-out pieces. Promoted from bench/crosscheck_adherence.py, where it first
disagreed with the report's classifier (bench/RESULTS.md).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from symusic import Score

from midilm.evaluation.composer_classifier.features import Notes, crops
from midilm.evaluation.composer_classifier.judging import judge


def steps(notes: Notes) -> list[str]:
    """The crop as symbols: per onset the chord (size, log2 duration), and between onsets the top line's
    and the bass's steps with the log2 ratio of inter-onset times."""
    onsets = np.unique(notes.start)
    symbols, previous, previous_ioi = [], None, None
    for k, onset in enumerate(onsets):
        at = notes.start == onset
        chord = notes.pitch[at]
        duration = float(np.max(notes.end[at] - onset))
        top, bass = int(chord.max()), int(chord.min())
        symbols.append(f"v{min(len(chord), 6)}d{round(np.log2(max(duration, 1 / 16)))}")
        if previous is not None:
            ioi = onset - onsets[k - 1]
            ratio = 0 if previous_ioi is None else round(np.log2(ioi / previous_ioi))
            symbols.append(f"t{np.clip(top - previous[0], -12, 12)}b{np.clip(bass - previous[1], -12, 12)}r{ratio}")
            previous_ioi = ioi
        previous = (top, bass)
    return symbols


def ngrams(notes: Notes, orders: Sequence[int] = (1, 2, 3)) -> Counter:
    s = steps(notes)
    return Counter("|".join(s[i : i + n]) for n in orders for i in range(len(s) - n + 1))


@dataclass
class NgramClassifier:
    """A fitted n-gram naive Bayes composer classifier (`fit_ngram_classifier`)."""

    composers: list[str]
    crop_length: int
    vectorizer: object = field(repr=False)
    model: object = field(repr=False)
    ceiling: dict = field(default_factory=dict)  # `judge` on the held-out real crops

    def probabilities(self, pieces: Sequence[Score | Notes]) -> np.ndarray:
        """[N, K] probability of each composer, each piece judged on its first crop (as the report's classifier
        judges)."""
        first = []
        for piece in pieces:
            notes = piece if isinstance(piece, Notes) else Notes.of(piece)
            first.append(crops(notes, self.crop_length, "notes", max_crops=1)[0] if len(notes) else notes)
        return self.crop_probabilities(first)

    def crop_probabilities(self, cut: Sequence[Notes]) -> np.ndarray:
        if not cut:
            return np.zeros((0, len(self.composers)))
        return self.model.predict_proba(self.vectorizer.transform([ngrams(c) for c in cut]))

    def adherence(self, pieces: Sequence[Score | Notes], intended: Sequence[str | None]) -> dict:
        """`midilm.evaluation.composer_classifier.judging.judge` with this classifier's verdicts: the same shares,
        intervals and confusion."""
        return judge(self, self.probabilities(pieces), intended)

    @property
    def not_measurable(self) -> dict:
        return {}


def fit_ngram_classifier(
    train: dict[str, Sequence[Score | Notes]],
    heldout: dict[str, Sequence[Score | Notes]],
    *,
    crop_length: int,
    crops_per_piece: int = 4,
    seed: int = 0,
) -> NgramClassifier:
    """Fit on crops of `crop_length` notes of the `train` pieces (at most `crops_per_piece` each, seeded) and
    measure the ceiling on crops of the `heldout` pieces; composers are those present in both."""
    from sklearn.feature_extraction import DictVectorizer  # scikit-learn: heavy, needed only here
    from sklearn.naive_bayes import MultinomialNB

    composers = sorted(c for c in train if train[c] and heldout.get(c))
    rng = random.Random(seed)

    def cut(pieces) -> list[Notes]:
        out = []
        for piece in pieces:
            notes = piece if isinstance(piece, Notes) else Notes.of(piece)
            if len(notes):
                out += crops(notes, crop_length, "notes", crops_per_piece, rng)
        return out

    train_crops = {c: cut(train[c]) for c in composers}
    held_crops = {c: cut(heldout[c]) for c in composers}
    vectorizer = DictVectorizer()
    x = vectorizer.fit_transform([ngrams(crop) for c in composers for crop in train_crops[c]])
    y = [k for k, c in enumerate(composers) for _ in train_crops[c]]
    model = MultinomialNB(alpha=0.5).fit(x, y)
    classifier = NgramClassifier(composers, crop_length, vectorizer, model)
    held = [crop for c in composers for crop in held_crops[c]]
    classifier.ceiling = judge(
        classifier, classifier.crop_probabilities(held), [c for c in composers for _ in held_crops[c]]
    )
    return classifier
