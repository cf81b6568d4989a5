"""The preference score: how much better one sample of a composer is than another, without human labels.

    score = classifier_weight · p(intended composer)                           (the report's classifier)
          - seconds_weight    · max(0, vertical seconds - the composer's real rate)
          - copy_weight       · max(0, longest run copied from a training piece - what real passages share)
          - degenerate_weight · [more notes at one onset than any training piece of the composer]
          - texture_weight    · max(0, texture distance - what a real passage's is)
          - syntax_weight     · syntax error rate
          - short_weight      · max(0, 1 - new tokens / (short_fraction · asked))

Everything a sample is compared with comes from the model's own dataset (`Reference`): the classifier
fitted on its training pieces, the vertical-seconds rate of each composer's real training pieces, where
those pieces' passages lie on the scalar music metrics (`Texture`), the memorization index of the training
split and the longest run real held-out passages, as long as the samples, share with it; the most notes at
one onset in any training piece of the composer.

Why these defaults (each a flag of tune.py; the measurements are in bench/RESULTS.md, "Preference tuning"):
the classifier's term spans 0..1, so each penalty weight says how much of that range a fault costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from midilm.core.errors import InputError
from midilm.core.rows import body
from midilm.evaluation.composer_classifier.classifier import ComposerClassifier
from midilm.evaluation.composer_classifier.fit import train_classifier
from midilm.evaluation.composer_classifier.pieces import real_pieces
from midilm.evaluation.data import join_pieces, load_eval_dataset, scan_training, token_rows
from midilm.evaluation.memorization import MemorizationIndex, PitchReader
from midilm.evaluation.samples import passage_runs, real_passages
from midilm.metrics.piece import SCALAR_METRICS, piece_metrics, vertical_seconds
from midilm.sampling.generation import decode_ids
from midilm.sampling.grammar import count_syntax_errors
from midilm.sampling.guard import onset_counts


@dataclass
class ScoreWeights:
    """The score's parts and their weights (see the module docstring)."""

    classifier_weight: float = field(
        default=1.0,
        metadata={
            "help": (
                "Weight of the report's classifier's probability of the intended composer (the term every "
                "penalty is measured against: it spans 0..1)."
            )
        },
    )
    seconds_weight: float = field(
        default=5.0,
        metadata={
            "help": (
                "Penalty per unit of vertical-second share above the composer's real rate: a sample with 0.17 "
                "against a real 0.004 loses 0.83, most of the classifier's range, so neither term alone decides "
                "a pair."
            )
        },
    )
    copy_weight: float = field(
        default=0.1,
        metadata={
            "help": (
                "Penalty per note of a run copied from a training piece beyond the longest run real held-out "
                "passages of the samples' length share: a copy 10 notes longer than real music shares costs the "
                "classifier's whole range."
            )
        },
    )
    degenerate_weight: float = field(
        default=1.0,
        metadata={
            "help": (
                "Penalty for a sample with more notes at one onset than any training piece of its composer (a "
                "note cluster): as much as the classifier's range."
            )
        },
    )
    texture_weight: float = field(
        default=1.0,
        metadata={
            "help": (
                "Penalty per unit of texture distance above a real passage's: a sample's mean distance, in real "
                "standard deviations, from its composer's real training passages on the scalar music metrics "
                "(voices, range, density, rests, pitch-class entropy, scale, groove). Without it DPO thinned or "
                "thickened the texture to please the classifier and the seconds penalty."
            )
        },
    )
    syntax_weight: float = field(
        default=10.0,
        metadata={
            "help": (
                "Penalty per unit of miditok syntax error rate (0 with the grammar on): 10% errors cost the "
                "classifier's range."
            )
        },
    )
    short_weight: float = field(
        default=1.0,
        metadata={
            "help": "Penalty for a sample that stopped (EOS) far short of the tokens asked, rising to this at 0 tokens."
        },
    )
    short_fraction: float = field(
        default=0.5, metadata={"help": "A sample shorter than this share of the tokens asked counts as short."}
    )

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value < 0:
                raise InputError(f"--{name} {value}: must be >= 0")
        if not 0 < self.short_fraction <= 1:
            raise InputError(f"--short_fraction {self.short_fraction}: must be within (0, 1]")


TEXTURE_METRICS = tuple(m for m in SCALAR_METRICS if m != "syntax_error_rate")  # 0 for every sampled piece


@dataclass
class Texture:
    """Where each composer's real passages lie on the scalar music metrics, and how far a real passage lies
    from its own composer's centre: the yardstick of a sample's texture."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    typical: dict[str, float]  # the median distance of the composer's real passages

    @classmethod
    def of(cls, pieces: dict[str, list], n_bars: int) -> Texture:
        """From real pieces (Scores per composer) cut into passages of `n_bars` bars, the samples' length."""
        passages = real_passages(
            [{"composer": c, "name": c, "score": score} for c, scores in pieces.items() for score in scores], n_bars
        )
        mean, std, typical = {}, {}, {}
        for c in pieces:
            rows = np.array([_texture_row(p) for p in passages if p["composer"] == c])
            if len(rows) < 2:
                continue
            mean[c] = np.nanmean(rows, axis=0)
            spread = np.nanstd(rows, axis=0)
            std[c] = np.where(spread > 0, spread, 1.0)
            typical[c] = float(np.median([cls._distance(r, mean[c], std[c]) for r in rows]))
        return cls(mean, std, typical)

    @staticmethod
    def _distance(row: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
        z = np.abs(row - mean) / std
        return float(np.nanmean(z)) if np.isfinite(z).any() else 0.0

    def excess(self, composer: str, metrics: dict) -> float:
        """How much farther than a typical real passage a piece (`piece_metrics`) lies from its composer
        (0 when nearer)."""
        if composer not in self.mean:
            return 0.0
        distance = self._distance(_texture_row(metrics), self.mean[composer], self.std[composer])
        return max(0.0, distance - self.typical[composer])


def _texture_row(metrics: dict) -> np.ndarray:
    return np.array([np.nan if metrics.get(m) is None else metrics[m] for m in TEXTURE_METRICS], dtype=np.float64)


@dataclass
class Reference:
    """What a sample is scored against, read once from the model's dataset (`build_reference`)."""

    classifier: ComposerClassifier  # the report's classifier (the reward)
    real_seconds: dict[str, float]  # vertical-second share of each composer's real training pieces
    max_notes_per_onset: dict[str, int]  # the most notes at one onset in any training piece of the composer
    copy_limit: (
        int  # the longest interval run real held-out passages of the samples' length share with a training piece
    )
    index: MemorizationIndex  # of the training split
    heldout: dict[str, list]  # held-out real pieces per composer ({"ids", "score"}): the reference of a report
    train_pieces: dict[
        str, list
    ]  # the training split's original pieces per composer (Scores), for the independent classifier
    heldout_scores: dict[str, list]
    texture: Texture  # of the training pieces' passages as long as the samples

    @property
    def measurable(self) -> list[str]:
        return list(self.classifier.composers)

    @property
    def not_measurable(self) -> dict[str, str]:
        return dict(self.classifier.not_measurable)

    def summary(self) -> dict:
        """JSON-ready: what the score compares with."""
        return {
            "classifier_composers": self.measurable,
            "not_measurable": self.not_measurable,
            "classifier_crop_length": self.classifier.crop_length,
            "classifier_ceiling": (self.classifier.ceiling.get("per_composer") or {})
            and {c: v.get("share") for c, v in self.classifier.ceiling["per_composer"].items()},
            "real_vertical_seconds": self.real_seconds,
            "max_notes_per_onset": self.max_notes_per_onset,
            "copy_limit": self.copy_limit,
        }


def load_dataset_for(dataset_dir: str, tokenizer, composer_map, split: str = "validation"):
    """The model's dataset, checked against its tokenizer as the evaluation checks it (InputError otherwise)."""
    return load_eval_dataset(dataset_dir, split, tokenizer, composer_map)


def build_reference(
    dataset_dir: str,
    tokenizer,
    composer_map,
    crop_length: int,
    passage_notes: int,
    passage_bars: int,
    split: str = "validation",
    seed: int = 0,
) -> Reference:
    """Read the dataset once: the classifier on crops of `crop_length` notes (the samples' length), the real
    rates, the texture of training passages of `passage_bars` bars, the memorization index and the copy limit on
    held-out passages of `passage_notes` notes."""
    dataset = load_dataset_for(dataset_dir, tokenizer, composer_map, split)
    training = scan_training(dataset["train"], tokenizer, composer_map, f"--dataset_dir {dataset_dir} (train)")
    held_rows = token_rows(dataset[split], tokenizer, composer_map, f"--dataset_dir {dataset_dir} ({split})")
    eos = tokenizer["EOS_None"]
    names = composer_map.names
    held = [
        {"composer": names[p["composer"]], "name": p["source"], "ids": p["ids"]} for p in join_pieces(held_rows, eos)
    ]
    if held and max(count_syntax_errors(tokenizer, p["ids"]) for p in held[:8]) > 0:
        raise InputError(
            f"--dataset_dir {dataset_dir}: its real pieces read back with syntax errors under the model's tokenizer; "
            "it was built with another tokenizer: use the dataset the model was trained on"
        )
    classifier = train_classifier(dataset, tokenizer, crop_length=crop_length, crop_unit="notes", seed=seed)
    train_pieces = real_pieces(dataset["train"], tokenizer, seed=seed)
    heldout_scores: dict[str, list] = {}
    for s in ("validation", "test"):
        if s in dataset:
            for name, pieces in real_pieces(dataset[s], tokenizer, seed=seed).items():
                heldout_scores.setdefault(name, []).extend(pieces)
    real_seconds = {c: seconds_share(train_pieces.get(c, [])) for c in names}
    onset_max = {
        c: int(training.max_notes_per_onset[k]) or int(training.max_notes_per_onset.max()) for k, c in enumerate(names)
    }
    for p in held:
        p["score"] = decode_ids(tokenizer, p["ids"])
    runs = passage_runs(held, tokenizer, training.index, passage_notes)
    copy_limit = max((r["longest_training_run"] for r in runs), default=0)
    heldout = {c: [p for p in held if p["composer"] == c] for c in names}
    texture = Texture.of(train_pieces, passage_bars)
    return Reference(
        classifier, real_seconds, onset_max, copy_limit, training.index, heldout, train_pieces, heldout_scores, texture
    )


def seconds_share(scores) -> float:
    """The share of vertical seconds over all pairs of notes that start together in `scores` (0 without pairs):
    counted on the notes alone, without the other per-piece metrics."""
    counts = [vertical_seconds(score) for score in scores]
    pairs = sum(n for _, n in counts)
    return sum(k for k, _ in counts) / pairs if pairs else 0.0


def score_samples(
    samples: list[dict], reference: Reference, tokenizer, weights: ScoreWeights, asked_tokens: int
) -> list[dict]:
    """Each sample ({"composer", "ids", "score"}) with its parts and total ({"parts": {...}, "total": float}).
    A composer the classifier cannot measure gets p = None and no classifier term; `argmax` is the
    composer the classifier hears (None without a classifier)."""
    classifier = reference.classifier
    probabilities = (
        classifier.probabilities([s["score"] for s in samples]) if classifier.composers and samples else None
    )
    reader = PitchReader.for_tokenizer(tokenizer)
    eos = tokenizer["EOS_None"]
    out = []
    for k, sample in enumerate(samples):
        c = sample["composer"]
        p = (
            float(probabilities[k, classifier.composers.index(c)])
            if probabilities is not None and c in classifier.composers
            else None
        )
        share = seconds_share([sample["score"]])
        run = reference.index.longest_run(reader.pitches(sample["ids"])).length
        largest = onset_counts(tokenizer, sample["ids"])[0]
        music = [t for t in body(sample["ids"]) if t != eos]
        parts = {
            "p_composer": p,
            "argmax": classifier.composers[int(np.argmax(probabilities[k]))]
            if probabilities is not None
            else None,  # the composer it is heard as
            "vertical_seconds": share,
            "seconds_excess": max(0.0, share - reference.real_seconds.get(c, 0.0)),
            "longest_copied_run": run,
            "copy_excess": max(0, run - reference.copy_limit),
            "degenerate": largest > reference.max_notes_per_onset.get(c, largest),
            "syntax_error_rate": count_syntax_errors(tokenizer, sample["ids"]),
            "short": max(0.0, 1.0 - len(music) / (weights.short_fraction * asked_tokens)),
            "texture_excess": reference.texture.excess(c, piece_metrics(sample["score"]))
            if weights.texture_weight
            else 0.0,
        }
        total = (
            weights.classifier_weight * (p or 0.0)
            - weights.seconds_weight * parts["seconds_excess"]
            - weights.copy_weight * parts["copy_excess"]
            - weights.degenerate_weight * float(parts["degenerate"])
            - weights.texture_weight * parts["texture_excess"]
            - weights.syntax_weight * parts["syntax_error_rate"]
            - weights.short_weight * parts["short"]
        )
        out.append({"parts": parts, "total": float(total)})
    return out


PAIR_RULES = ("extremes", "best_worst")


def build_pairs(
    samples: list[dict], scores: list[dict], rule: str = "extremes", fraction: float = 0.25, min_margin: float = 0.05
) -> list[dict]:
    """Chosen/rejected pairs, each from two samples of one composer (never across composers).

    `extremes`: per composer, sort by score and pair the i-th best with the i-th worst for the top and
    bottom `fraction` of its samples; `best_worst`: the single best against the single worst. A pair whose
    scores differ by less than `min_margin` carries no preference and is dropped.
    Returns [{"composer", "chosen", "rejected" (sample indices), "margin"}].
    """
    if rule not in PAIR_RULES:
        raise InputError(f"--pair_rule {rule!r}: choose one of {', '.join(PAIR_RULES)}")
    by_composer: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_composer.setdefault(s["composer"], []).append(i)
    pairs = []
    for c, members in sorted(by_composer.items()):
        order = sorted(members, key=lambda i: -scores[i]["total"])
        n = 1 if rule == "best_worst" else max(1, int(np.floor(len(order) * fraction)))
        n = min(n, len(order) // 2)
        for k in range(n):
            best, worst = order[k], order[-1 - k]
            margin = scores[best]["total"] - scores[worst]["total"]
            if margin >= min_margin:
                pairs.append({"composer": c, "chosen": best, "rejected": worst, "margin": float(margin)})
    return pairs
