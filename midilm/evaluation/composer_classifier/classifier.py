"""The fitted classifier: a multinomial logistic regression on standardised crop features, its probabilities,
saved and loaded as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from symusic import Score

from midilm.evaluation.composer_classifier.features import FEATURE_NAMES, Notes, crops, features


@dataclass
class ComposerClassifier:
    """A fitted composer classifier: standardisation, then multinomial logistic regression.

    Stored as plain arrays (`to_dict` / `from_dict`, `save` / `load` as JSON), so a report can keep
    the classifier it used without pickles.
    """

    composers: list[str]  # measurable composers, the classes in order
    mean: np.ndarray  # [F] feature standardisation
    scale: np.ndarray
    coef: np.ndarray  # [K, F]
    intercept: np.ndarray  # [K]
    crop_length: int
    crop_unit: str = "notes"
    not_measurable: dict[str, str] = field(default_factory=dict)  # composer -> reason
    training: dict = field(default_factory=dict)  # pieces and crops per composer, settings
    ceiling: dict = field(default_factory=dict)  # `evaluate_crops` on the held-out real crops

    def probabilities(self, scores: Sequence[Score] | Sequence[Notes]) -> np.ndarray:
        """[N, K] probability of each measurable composer, each piece judged on its first crop."""
        rows = []
        for piece in scores:
            notes = piece if isinstance(piece, Notes) else Notes.of(piece)
            cut = crops(notes, self.crop_length, self.crop_unit, max_crops=1)
            rows.append(features(cut[0]) if cut else np.zeros(len(FEATURE_NAMES)))
        return self.crop_probabilities(np.array(rows).reshape(len(rows), len(FEATURE_NAMES)))

    def crop_probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        return {
            "composers": self.composers,
            "feature_names": list(FEATURE_NAMES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "crop_length": self.crop_length,
            "crop_unit": self.crop_unit,
            "not_measurable": self.not_measurable,
            "training": self.training,
            "ceiling": self.ceiling,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ComposerClassifier:
        if list(data.get("feature_names", [])) != list(FEATURE_NAMES):
            raise ValueError("this composer classifier was saved with other features; fit it again")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept")}
        return cls(
            composers=list(data["composers"]),
            crop_length=int(data["crop_length"]),
            crop_unit=data["crop_unit"],
            not_measurable=dict(data.get("not_measurable", {})),
            training=dict(data.get("training", {})),
            ceiling=dict(data.get("ceiling", {})),
            **arrays,
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_dict()) + "\n")
        partial.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ComposerClassifier:
        return cls.from_dict(json.loads(Path(path).read_text()))
