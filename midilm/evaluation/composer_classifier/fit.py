"""Fitting the classifier on real pieces' crops and validating it on held-out pieces' crops (fit_classifier,
train_classifier)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from symusic import Score

from midilm.evaluation.composer_classifier.classifier import ComposerClassifier
from midilm.evaluation.composer_classifier.features import FEATURE_NAMES, Notes, crops, features
from midilm.evaluation.composer_classifier.judging import judge
from midilm.evaluation.composer_classifier.pieces import real_pieces


def _crop_features(
    pieces: Sequence[Score | Notes], length: int, unit: str, per_piece: int | None, rng: random.Random
) -> np.ndarray:
    rows = []
    for piece in pieces:
        notes = piece if isinstance(piece, Notes) else Notes.of(piece)
        rows += [features(c) for c in crops(notes, length, unit, per_piece, rng)]
    return np.array(rows).reshape(len(rows), len(FEATURE_NAMES))


def fit_classifier(
    train: dict[str, Sequence[Score | Notes]],
    heldout: dict[str, Sequence[Score | Notes]],
    *,
    crop_length: int = 256,
    crop_unit: str = "notes",
    crops_per_piece: int | None = 4,
    min_train_pieces: int = 5,
    min_heldout_pieces: int = 2,
    regularization: float = 1.0,
    seed: int = 0,
) -> ComposerClassifier:
    """Fit on crops of the `train` pieces and measure the ceiling on crops of the `heldout` pieces.

    Both map composer name to its pieces (Scores, or `Notes`); a composer missing from one of them, or
    with fewer than the minimum pieces there, is not measurable. With fewer than two measurable
    composers nothing is fitted: the classifier has no classes and every composer carries its reason.
    `crops_per_piece` caps the crops of one piece (seeded draw), so a long piece does not outweigh the
    others; `regularization` is the inverse strength C of the logistic regression.
    """
    rng = random.Random(seed)
    names = sorted(set(train) | set(heldout))
    not_measurable = _too_few_pieces(names, train, heldout, min_train_pieces, min_heldout_pieces)
    measurable = [n for n in names if n not in not_measurable]
    data = _crop_data(train, heldout, measurable, crop_length, crop_unit, crops_per_piece, rng, not_measurable)
    measurable = [n for n in measurable if n in data]
    if len(measurable) < 2:
        for name in measurable:
            not_measurable[name] = "the only measurable composer: a classifier needs two"
        return _empty_classifier(crop_length, crop_unit, not_measurable)
    mean, scale, coef, intercept = _fit_logistic(data, measurable, regularization)
    classifier = ComposerClassifier(
        composers=measurable,
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        crop_length=crop_length,
        crop_unit=crop_unit,
        not_measurable=not_measurable,
        training={
            "model": (
                f"logistic regression (C={regularization}, balanced classes) on {len(FEATURE_NAMES)} "
                "standardised features"
            ),
            "train_pieces": {n: len(train[n]) for n in measurable},
            "train_crops": {n: len(data[n][0]) for n in measurable},
            "heldout_pieces": {n: len(heldout[n]) for n in measurable},
            "heldout_crops": {n: len(data[n][1]) for n in measurable},
            "crops_per_piece": crops_per_piece,
            "seed": seed,
        },
    )
    held_x = np.concatenate([data[n][1] for n in measurable])
    held_y = [n for n in measurable for _ in range(len(data[n][1]))]
    classifier.ceiling = judge(classifier, classifier.crop_probabilities(held_x), held_y)
    return classifier


def _too_few_pieces(
    names: list[str],
    train: dict[str, Sequence[Score | Notes]],
    heldout: dict[str, Sequence[Score | Notes]],
    min_train_pieces: int,
    min_heldout_pieces: int,
) -> dict[str, str]:
    """The composers with too few training or held-out pieces, each with its reason."""
    not_measurable: dict[str, str] = {}
    for name in names:
        n_train, n_held = len(train.get(name, ())), len(heldout.get(name, ()))
        if n_train < min_train_pieces:
            not_measurable[name] = f"{n_train} training piece(s), fewer than the {min_train_pieces} needed to train"
        elif n_held < min_heldout_pieces:
            not_measurable[name] = f"{n_held} held-out piece(s), fewer than the {min_heldout_pieces} needed to validate"
    return not_measurable


def _crop_data(
    train: dict[str, Sequence[Score | Notes]],
    heldout: dict[str, Sequence[Score | Notes]],
    measurable: list[str],
    crop_length: int,
    crop_unit: str,
    crops_per_piece: int | None,
    rng: random.Random,
    not_measurable: dict[str, str],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each measurable composer's (training, held-out) crop features; a composer whose pieces hold no notes goes
    to `not_measurable` instead."""
    data = {}
    for name in measurable:
        x_train = _crop_features(train[name], crop_length, crop_unit, crops_per_piece, rng)
        x_held = _crop_features(heldout[name], crop_length, crop_unit, crops_per_piece, rng)
        if len(x_train) == 0 or len(x_held) == 0:
            not_measurable[name] = "its pieces hold no notes"
        else:
            data[name] = (x_train, x_held)
    return data


def _empty_classifier(crop_length: int, crop_unit: str, not_measurable: dict[str, str]) -> ComposerClassifier:
    """The classifier with no classes, for fewer than two measurable composers."""
    width = len(FEATURE_NAMES)
    return ComposerClassifier(
        composers=[],
        mean=np.zeros(width),
        scale=np.ones(width),
        coef=np.zeros((0, width)),
        intercept=np.zeros(0),
        crop_length=crop_length,
        crop_unit=crop_unit,
        not_measurable=not_measurable,
    )


def _fit_logistic(
    data: dict[str, tuple[np.ndarray, np.ndarray]], measurable: list[str], regularization: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, coef, intercept) of the standardised logistic regression on the training crops, with one row
    of coef per composer."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn: heavy, needed only here
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([data[n][0] for n in measurable])
    y = np.concatenate([np.full(len(data[n][0]), k) for k, n in enumerate(measurable)])
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=regularization, max_iter=5000, class_weight="balanced")
    model.fit((x - scaler.mean_) / scale, y)
    coef, intercept = model.coef_, model.intercept_
    if len(measurable) == 2:  # scikit-learn keeps one row for two classes: the logit of the second
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return scaler.mean_.copy(), scale, coef, intercept


def train_classifier(
    dataset,
    tokenizer,
    *,
    train_split: str = "train",
    heldout_splits: Sequence[str] = ("validation", "test"),
    max_pieces_per_composer: int | None = 100,
    seed: int = 0,
    **fit_kwargs,
) -> ComposerClassifier:
    """`fit_classifier` on a DatasetDict written by prepare_dataset.py: the training split's original
    pieces against those of the held-out splits present (at most `max_pieces_per_composer` each, drawn
    with `seed`). `fit_kwargs` go to `fit_classifier` (crop_length, crop_unit, crops_per_piece, ...)."""
    train = real_pieces(dataset[train_split], tokenizer, max_pieces_per_composer=max_pieces_per_composer, seed=seed)
    heldout: dict[str, list[Score]] = defaultdict(list)
    for split in heldout_splits:
        if split in dataset:
            for name, pieces in real_pieces(
                dataset[split], tokenizer, max_pieces_per_composer=max_pieces_per_composer, seed=seed
            ).items():
                heldout[name] += pieces
    names = dataset[train_split].features["composer"].names
    train = {n: train.get(n, []) for n in names}
    heldout = {n: heldout.get(n, []) for n in names}
    classifier = fit_classifier(train, heldout, seed=seed, **fit_kwargs)
    classifier.training["splits"] = {"train": train_split, "heldout": [s for s in heldout_splits if s in dataset]}
    return classifier
