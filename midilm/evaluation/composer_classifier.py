"""Composer adherence: does an independent classifier hear the intended composer in a sample?

The classifier is trained on crops of real pieces from the dataset's training split and validated on
crops of held-out real pieces (the validation and test splits, which prepare_dataset.py splits by
piece, so no piece lends crops to both sides). It never sees the generator's weights or samples.

Why this model. A multinomial logistic regression (scikit-learn, on standardised features) over
hand-made symbolic features:

* it trains in well under a second on CPU for a few hundred crops, so the report can refit it on
  every run and a test can fit it on synthetic music;
* its probabilities are usable as they come (the mean probability of the intended composer is
  reported beside the hard decision), and it is deterministic;
* a few dozen pieces per composer are far too few for a sequence model over tokens, which would
  also share the generator's tokenization; the published references (NotaGen's CLaMP 2 similarity,
  Aria's linear probes on embeddings) need weights that cannot be downloaded here;
* its features are readable, and each was chosen to be blind to key: the generator is trained on
  transposed copies, so a feature that knew the key would read transposition as style.

Features of a crop (`FEATURE_NAMES`), all in quarter notes (tempo-free) and relative pitch:

* the pitch-class histogram (weighted by duration) rotated to the tonic that fits it best
  (Krumhansl–Kessler major/minor profiles), with the mode and how well the best key fits;
* the interval classes between notes that start together, and the notes per onset;
* the melodic intervals of the top line and of the bass (highest and lowest note of each onset);
* durations and inter-onset intervals on log2 bins, onset positions inside the beat and on the
  downbeat, notes and onsets per quarter, how many notes sound at once and how often none does;
* the pitch spread (standard deviation, range, distance between top line and bass).

Velocities, tempos and instruments are left out: they come from the files' writers, not the composer.

A crop is `crop_length` consecutive notes (in onset order) or bars (`crop_unit`); give the length of
the samples to be judged, since histograms of short crops are noisier. A sample is judged on its
first crop (the whole sample when it is shorter).

Reading the figures (`adherence_report`): the classifier's accuracy on held-out real crops is the
ceiling; the share of unconditional samples (`COMPOSER_NONE`) classified as composer c is c's base
rate, the adherence c would get if its token did nothing. Averaged over composers the base rate is
1/K by construction; the per-composer base rates are the reference. A composer with fewer than
`min_train_pieces` training or `min_heldout_pieces` held-out pieces is "not measurable": it is left
out of the classifier and its samples are reported with the reason, never as a failure.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from symusic import Score

from midilm.core.rows import RowLayout, full_section
from midilm.metrics.piece import DURATION_BIN_EDGES, bars, note_arrays

NONE_LABELS = {None, "", "none", "composer_none"}  # intended composer of an unconditional sample (case-insensitive)
CROP_UNITS = ("notes", "bars")
# Krumhansl–Kessler key profiles (tonic first).
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# |interval| bins of a melodic line: unison, 1..7 semitones, a sixth or seventh, the octave, beyond.
INTERVAL_BIN_EDGES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 128)
MAX_CHORD = 6  # notes-per-onset histogram: 1..5 and "6 or more"
BEAT_PHASES = ("on the beat", "eighth off-beat", "sixteenth off-beat", "triplet", "other")


def _feature_names() -> list[str]:
    names = [f"pc_rel_{k}" for k in range(12)] + ["minor", "key_fit"]
    names += [f"chord_size_{k}" for k in range(1, MAX_CHORD + 1)] + ["chord_size_mean"]
    names += [f"harmonic_ic_{k}" for k in range(7)]
    for line in ("top", "bass"):
        names += [f"{line}_interval_{lo}" for lo in INTERVAL_BIN_EDGES[:-1]] + [f"{line}_up_share"]
    names += [f"duration_bin_{k}" for k in range(len(DURATION_BIN_EDGES) - 1)]
    names += [f"ioi_bin_{k}" for k in range(len(DURATION_BIN_EDGES) - 1)]
    names += [f"phase_{p.replace(' ', '_')}" for p in BEAT_PHASES] + ["downbeat_share"]
    names += ["log_notes_per_quarter", "log_onsets_per_quarter", "sounding_mean", "silent_share"]
    names += ["pitch_std", "pitch_range", "top_bass_distance"]
    return names


FEATURE_NAMES = tuple(_feature_names())


# Notes and crops -------------------------------------------------------------------------------


@dataclass
class Notes:
    """The pitched notes of a score (or a crop of it), in quarter notes, sorted by (onset, pitch)."""

    start: np.ndarray  # float64
    end: np.ndarray
    pitch: np.ndarray  # int64
    bar_start: np.ndarray  # start of each note's bar
    bar_index: np.ndarray  # int64, the bar each note starts in

    def __len__(self) -> int:
        return len(self.pitch)

    def take(self, index: np.ndarray | slice) -> Notes:
        return Notes(
            self.start[index], self.end[index], self.pitch[index], self.bar_start[index], self.bar_index[index]
        )

    @classmethod
    def of(cls, score: Score) -> Notes:
        arrays = note_arrays(score)
        tpq = float(score.ticks_per_quarter)
        starts = np.zeros(1, dtype=np.int64)
        if len(arrays["start"]):
            starts, _ = bars(score, int(max(arrays["end"].max(), arrays["start"].max() + 1)))
        index = np.maximum(np.searchsorted(starts, arrays["start"], side="right") - 1, 0)
        return cls(arrays["start"] / tpq, arrays["end"] / tpq, arrays["pitch"], starts[index] / tpq, index)


def crops(
    notes: Notes, length: int, unit: str = "notes", max_crops: int | None = None, rng: random.Random | None = None
) -> list[Notes]:
    """Non-overlapping crops of `length` notes (or bars) laid end to end from the start; a piece shorter
    than one crop is one crop of itself. With `max_crops`, that many of them, chosen by `rng` (else the first)."""
    if unit not in CROP_UNITS:
        raise ValueError(f"crop unit must be one of {CROP_UNITS}, got {unit!r}")
    if length < 1:
        raise ValueError(f"crop length must be at least 1, got {length}")
    if len(notes) == 0:
        return []
    if unit == "notes":
        bounds = [(i, min(i + length, len(notes))) for i in range(0, max(1, len(notes) - length + 1), length)]
    else:
        first_bar = np.searchsorted(notes.bar_index, np.arange(notes.bar_index[-1] + 2), side="left")
        num_bars = int(notes.bar_index[-1]) + 1
        bounds = [
            (int(first_bar[b]), int(first_bar[min(b + length, num_bars)]))
            for b in range(0, max(1, num_bars - length + 1), length)
        ]
        bounds = [(a, b) for a, b in bounds if b > a]
    if max_crops is not None and len(bounds) > max_crops:
        bounds = sorted((rng or random.Random(0)).sample(bounds, max_crops)) if rng is not None else bounds[:max_crops]
    return [notes.take(slice(a, b)) for a, b in bounds]


def typical_length(scores: Sequence[Score], unit: str = "notes") -> int:
    """The median length of some pieces (samples) in notes or bars: the crop length to judge them at."""
    if unit not in CROP_UNITS:
        raise ValueError(f"crop unit must be one of {CROP_UNITS}, got {unit!r}")
    lengths = []
    for score in scores:
        notes = Notes.of(score)
        lengths.append(len(notes) if unit == "notes" else (int(notes.bar_index[-1]) + 1 if len(notes) else 0))
    return max(1, int(np.median(lengths))) if lengths else 1


# Features --------------------------------------------------------------------------------------


def _histogram(values: np.ndarray, edges: Sequence[float], weights: np.ndarray | None = None) -> np.ndarray:
    counts = np.histogram(values, bins=edges, weights=weights)[0].astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)


# Row 12 * minor + tonic: the profile of that key laid over the 12 pitch classes, standardised, so that
# the correlation of a histogram with all 24 keys is one product.
KEY_PROFILES = _z(
    np.array([np.roll(profile, tonic) for profile in (MAJOR_PROFILE, MINOR_PROFILE) for tonic in range(12)])
)


def _key(pc_weights: np.ndarray) -> tuple[int, bool, float]:
    """(tonic, minor, correlation) of the best of the 24 Krumhansl–Kessler keys."""
    if pc_weights.sum() == 0 or np.all(pc_weights == pc_weights[0]):
        return 0, False, 0.0
    r = KEY_PROFILES @ _z(pc_weights) / 12
    best = int(np.argmax(r))
    return best % 12, best >= 12, float(r[best])


def features(notes: Notes) -> np.ndarray:
    """The `FEATURE_NAMES` vector of one crop (zeros for a crop without notes)."""
    out = np.zeros(len(FEATURE_NAMES))
    if len(notes) == 0:
        return out
    start, end, pitch = notes.start, np.maximum(notes.end, notes.start + 1e-3), notes.pitch
    parts = []
    # key-relative pitch classes
    pc_weights = np.bincount(pitch % 12, weights=end - start, minlength=12)
    tonic, minor, fit = _key(pc_weights)
    parts += [np.roll(pc_weights / pc_weights.sum(), -tonic), [float(minor), fit]]
    # onsets: chord sizes, harmonic interval classes, top line and bass
    onsets, first, sizes = np.unique(start, return_index=True, return_counts=True)
    parts += [np.bincount(np.minimum(sizes, MAX_CHORD) - 1, minlength=MAX_CHORD) / len(sizes), [sizes.mean()]]
    ics = []
    for d in range(1, int(sizes.max())):  # pairs of notes d apart in (onset, pitch) order that start together
        same = start[d:] == start[:-d]
        ic = (pitch[d:][same] - pitch[:-d][same]) % 12
        ics.append(np.minimum(ic, 12 - ic))
    ics = np.concatenate(ics) if ics else np.zeros(0, dtype=np.int64)
    parts.append(np.bincount(ics, minlength=7) / len(ics) if len(ics) else np.zeros(7))
    last = first + sizes - 1
    top, bass = pitch[last], pitch[first]
    for line in (top, bass):
        steps = np.diff(line)
        parts += [_histogram(np.abs(steps), INTERVAL_BIN_EDGES), [float((steps > 0).mean()) if len(steps) else 0.0]]
    # rhythm
    parts.append(_histogram(end - start, DURATION_BIN_EDGES))
    parts.append(
        _histogram(np.diff(onsets), DURATION_BIN_EDGES) if len(onsets) > 1 else np.zeros(len(DURATION_BIN_EDGES) - 1)
    )
    phase = np.mod(onsets, 1.0)
    on = np.isclose(phase, 0, atol=1e-3) | np.isclose(phase, 1, atol=1e-3)
    eighth = np.isclose(phase, 0.5, atol=1e-3)
    sixteenth = np.isclose(phase, 0.25, atol=1e-3) | np.isclose(phase, 0.75, atol=1e-3)
    triplet = np.isclose(phase, 1 / 3, atol=1e-2) | np.isclose(phase, 2 / 3, atol=1e-2)
    other = ~(on | eighth | sixteenth | triplet)
    parts.append(np.array([x.mean() for x in (on, eighth, sixteenth, triplet, other)]))
    onset_bar_start = notes.bar_start[first]
    parts.append([float(np.isclose(onsets, onset_bar_start, atol=1e-3).mean())])
    span = max(float(end.max() - start.min()), 1.0)
    # texture
    ends = np.sort(end)
    sounding = np.searchsorted(start, onsets, side="right") - np.searchsorted(ends, onsets, side="right")
    covered = _covered_length(start, end)
    parts.append(
        [math.log1p(len(pitch) / span), math.log1p(len(onsets) / span), float(sounding.mean()), 1.0 - covered / span]
    )
    parts.append([float(pitch.std()) / 12, float(pitch.max() - pitch.min()) / 12, float((top - bass).mean()) / 12])
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def _covered_length(start: np.ndarray, end: np.ndarray) -> float:
    """Length of the union of the notes' [start, end) spans."""
    order = np.argsort(start)
    s, e = start[order], np.maximum.accumulate(end[order])
    gaps = np.maximum(s[1:] - e[:-1], 0.0)
    return float(e[-1] - s[0] - gaps.sum())


# Scores from tokens, files and the dataset ------------------------------------------------------


def scores_from_ids(tokenizer, rows: Iterable[Sequence[int]]) -> list[Score]:
    """A Score per token-id row: its music tokens (after the last FULL token of an accompaniment row),
    without BOS, composer, EOS or padding."""
    from miditok import TokSequence  # here: miditok is heavy, and the evaluate modules import this module lazily for it

    special = set(tokenizer.special_tokens_ids)
    full = RowLayout.for_tokenizer(tokenizer).full
    out = []
    for row in rows:
        row = full_section([int(i) for i in row], full)
        music = [i for i in row if i not in special]
        out.append(
            tokenizer.decode(TokSequence(ids=music, are_ids_encoded=tokenizer.is_trained))
            if music
            else Score(tokenizer.time_division)
        )
    return out


def scores_from_midi(paths: Iterable[str | Path]) -> list[Score]:
    """A Score per MIDI file; an unreadable file is a ValueError naming it."""
    out = []
    for path in paths:
        try:
            out.append(Score(str(path)))
        except Exception as err:  # symusic raises plain RuntimeError on a malformed file
            raise ValueError(f"{path}: not a readable MIDI file ({err})") from err
    return out


def real_pieces(
    split, tokenizer, *, max_pieces_per_composer: int | None = 100, seed: int = 0, batch_size: int = 256
) -> dict[str, list[Score]]:
    """The original pieces of a dataset split (written by prepare_dataset.py), per composer name.

    Two streamed passes over Arrow batches: the first reads the small columns to list pieces and
    draw at most `max_pieces_per_composer` per composer (seeded); the second reads the token ids of
    the drawn pieces' continuation rows only, joins each piece's chunks in order and decodes it.
    Memory holds the drawn pieces, never the split.
    """
    names = split.features["composer"].names
    present = set(split.column_names)
    small = ["source", "composer"] + [c for c in ("augmentation", "task") if c in present]
    piece_rows: dict[str, list[int]] = defaultdict(list)
    piece_composer: dict[str, int] = {}
    offset = 0
    for table in split.select_columns(small).with_format("arrow").iter(batch_size=max(batch_size, 1024)):
        keep = np.ones(table.num_rows, dtype=bool)
        if "augmentation" in present:
            keep &= table.column("augmentation").to_numpy(zero_copy_only=False) == ""
        if "task" in present:
            keep &= table.column("task").to_numpy(zero_copy_only=False) == "continuation"
        sources = table.column("source").to_numpy(zero_copy_only=False)
        composers = table.column("composer").to_numpy()
        for k in np.flatnonzero(keep):
            piece_rows[sources[k]].append(offset + int(k))
            piece_composer[sources[k]] = int(composers[k])
        offset += table.num_rows
    rng = random.Random(seed)
    chosen: dict[str, list[str]] = defaultdict(list)
    by_composer: dict[int, list[str]] = defaultdict(list)
    for source, composer in sorted(piece_composer.items()):
        by_composer[composer].append(source)
    for composer, sources in sorted(by_composer.items()):
        if max_pieces_per_composer is not None and len(sources) > max_pieces_per_composer:
            sources = sorted(rng.sample(sources, max_pieces_per_composer))
        chosen[names[composer]] = sources
    indices = sorted(i for sources in chosen.values() for s in sources for i in piece_rows[s])
    chunks: dict[str, list[tuple[int, list[int]]]] = defaultdict(list)
    columns = ["input_ids", "source"] + (["chunk"] if "chunk" in present else [])
    position = 0
    for table in split.select(indices).select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
        ids = table.column("input_ids").to_pylist()
        sources = table.column("source").to_pylist()
        order = table.column("chunk").to_pylist() if "chunk" in present else range(position, position + len(ids))
        for row, source, chunk in zip(ids, sources, order):
            chunks[source].append((chunk, row))
        position += len(ids)
    out: dict[str, list[Score]] = {}
    for name, sources in chosen.items():
        rows = []
        for source in sources:
            parts = sorted(chunks.pop(source, []), key=lambda c: c[0])
            rows.append([t for _, row in parts for t in row])
        out[name] = scores_from_ids(tokenizer, rows)
    return out


# The classifier --------------------------------------------------------------------------------


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
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = random.Random(seed)
    names = sorted(set(train) | set(heldout))
    not_measurable: dict[str, str] = {}
    for name in names:
        n_train, n_held = len(train.get(name, ())), len(heldout.get(name, ()))
        if n_train < min_train_pieces:
            not_measurable[name] = f"{n_train} training piece(s), fewer than the {min_train_pieces} needed to train"
        elif n_held < min_heldout_pieces:
            not_measurable[name] = f"{n_held} held-out piece(s), fewer than the {min_heldout_pieces} needed to validate"
    measurable = [n for n in names if n not in not_measurable]
    data = {}
    for name in measurable:
        x_train = _crop_features(train[name], crop_length, crop_unit, crops_per_piece, rng)
        x_held = _crop_features(heldout[name], crop_length, crop_unit, crops_per_piece, rng)
        if len(x_train) == 0 or len(x_held) == 0:
            not_measurable[name] = "its pieces hold no notes"
        else:
            data[name] = (x_train, x_held)
    measurable = [n for n in measurable if n in data]
    if len(measurable) < 2:
        for name in measurable:
            not_measurable[name] = "the only measurable composer: a classifier needs two"
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
    x = np.concatenate([data[n][0] for n in measurable])
    y = np.concatenate([np.full(len(data[n][0]), k) for k, n in enumerate(measurable)])
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=regularization, max_iter=5000, class_weight="balanced")
    model.fit((x - scaler.mean_) / scale, y)
    coef, intercept = model.coef_, model.intercept_
    if len(measurable) == 2:  # scikit-learn keeps one row for two classes: the logit of the second
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    classifier = ComposerClassifier(
        composers=measurable,
        mean=scaler.mean_.copy(),
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
