"""Composer adherence as a Hugging Face `evaluate` metric: does an independent composer classifier,
trained on real pieces, hear the intended composer in each piece? See `midilm.evaluation.composer_classifier`."""

from __future__ import annotations

from pathlib import Path

import datasets
import evaluate

from midilm.evaluate_modules import load_tokenizer_arg, read_pieces
from midilm.evaluation.composer_classifier.classifier import ComposerClassifier
from midilm.evaluation.composer_classifier.fit import train_classifier
from midilm.evaluation.composer_classifier.judging import adherence

_DESCRIPTION = """
Composer adherence of generated pieces: the share classified as their intended composer by a
classifier independent of the generator (logistic regression on key-independent symbolic features,
trained on the dataset's training split, validated on its held-out splits), with 95% Wilson
intervals, the mean probability of the intended composer and the confusion matrix. Unconditional
pieces (reference "none") give each composer's base rate. The classifier's accuracy on held-out
real crops is the ceiling. See midilm/evaluation/composer_classifier/.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: MIDI file paths, or token-id lists (then give `tokenizer`).
    references: the intended composer of each prediction (a dataset composer name; "none" for an
        unconditional sample).
    classifier: a classifier saved with
        `midilm.evaluation.composer_classifier.classifier.ComposerClassifier.save` (JSON path), or the object
        itself. Without it one is trained from `dataset`.
    dataset: a dataset folder written by prepare_dataset.py (or a DatasetDict) to train the classifier on.
    tokenizer: its tokenizer (or model) folder, or a miditok tokenizer: needed for token-id
        predictions and to read `dataset`.
    crop_length, crop_unit, crops_per_piece, max_pieces_per_composer, min_train_pieces,
    min_heldout_pieces, seed: the classifier's settings (see midilm.evaluation.composer_classifier.fit.fit_classifier).
Returns:
    adherence, adherence_interval, mean_probability: pooled over every measurable intended composer;
    per_composer, unconditional (base rates), confusion: see midilm.evaluation.composer_classifier.judging.judge;
    ceiling: the same on the classifier's held-out real crops; classifier: composers, not-measurable
    composers with their reasons, crop, training counts; predicted: the composer each piece was classified as.
Examples:
    >>> import evaluate
    >>> from midilm.evaluate_modules import path
    >>> metric = evaluate.load(path("composer_adherence"))
    >>> metric.compute(predictions=["bach_0.mid"], references=["bach"], dataset="data", tokenizer="tokenizer")
"""

_CITATION = ""
_CLASSIFIERS: dict[tuple, ComposerClassifier] = {}  # trained ones, per dataset and settings, for the process


def _classifier(classifier, dataset, tokenizer_arg, settings: dict) -> ComposerClassifier:
    if isinstance(classifier, ComposerClassifier):
        return classifier
    if classifier is not None:
        return ComposerClassifier.load(classifier)
    if dataset is None or tokenizer_arg is None:
        raise ValueError("composer_adherence needs classifier=, or dataset= and tokenizer= to train one")
    key = tuple(str(x) if isinstance(x, (str, Path)) else id(x) for x in (dataset, tokenizer_arg)) + tuple(
        sorted(settings.items())
    )
    if key not in _CLASSIFIERS:
        tokenizer = load_tokenizer_arg(tokenizer_arg)
        if isinstance(dataset, (str, Path)):
            dataset = datasets.load_from_disk(str(dataset))
        _CLASSIFIERS[key] = train_classifier(dataset, tokenizer, **settings)
    return _CLASSIFIERS[key]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ComposerAdherence(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("string")}
                ),
            ],
        )

    def _compute(self, predictions, references, classifier=None, dataset=None, tokenizer=None, **settings):
        model = _classifier(classifier, dataset, tokenizer, settings)
        tokenizer = load_tokenizer_arg(tokenizer)
        scores, _ = read_pieces(predictions, tokenizer)
        result = adherence(model, scores, references)
        overall = result["overall"]
        return {
            "adherence": overall["share"],
            "adherence_interval": overall["interval"],
            "mean_probability": overall["mean_probability"],
            **result,
            "ceiling": model.ceiling,
            "classifier": {
                "composers": model.composers,
                "not_measurable": model.not_measurable,
                "crop": {"length": model.crop_length, "unit": model.crop_unit},
                "training": model.training,
            },
        }
