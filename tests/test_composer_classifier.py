"""The composer-adherence classifier on synthetic styles, the table built from given samples, and the
not-measurable path; the dataset path on the session's prepared dataset."""

from __future__ import annotations

import random

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from midilm.evaluation.composer_classifier.classifier import ComposerClassifier
from midilm.evaluation.composer_classifier.features import (
    FEATURE_NAMES,
    Notes,
    crops,
    features,
    typical_length,
)
from midilm.evaluation.composer_classifier.fit import fit_classifier, train_classifier
from midilm.evaluation.composer_classifier.judging import adherence, adherence_report, wilson_interval
from midilm.evaluation.composer_classifier.markdown import render_markdown
from midilm.evaluation.composer_classifier.pieces import scores_from_ids

TPQ = 480
MAJOR = (0, 2, 4, 5, 7, 9, 11)


def _score(notes: list[tuple[float, float, int]]) -> Score:
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, 100))
    track = Track(program=0)
    for start, duration, pitch in notes:
        track.notes.append(Note(round(start * TPQ), round(duration * TPQ), pitch, 80))
    score.tracks.append(track)
    return score


def stepwise_line(seed: int, n: int = 96) -> Score:
    """One voice in quarter notes, moving by scale steps, in a random key."""
    rng = random.Random(seed)
    root, degree, notes = rng.randrange(55, 67), 7, []
    for k in range(n):
        degree = max(0, min(14, degree + rng.choice([-1, 1, 1, -1, 2, -2])))
        notes.append((k, 1, root + 12 * (degree // 7) + MAJOR[degree % 7]))
    return _score(notes)


def leaping_chords(seed: int, n: int = 30) -> Score:
    """Four-note chords in whole notes whose roots leap by fourths and fifths, in a random key."""
    rng = random.Random(seed)
    root, notes = rng.randrange(43, 55), []
    for k in range(n):
        root += rng.choice([5, -7, 7, -5])
        root = root + 12 if root < 36 else root - 12 if root > 60 else root
        for interval in (0, 7, 16, 24):
            notes.append((4 * k, 4, root + interval))
    return _score(notes)


@pytest.fixture(scope="module")
def styles():
    """A classifier fitted to tell the two styles apart (crops of 24 notes)."""
    train = {"steps": [stepwise_line(s) for s in range(10)], "chords": [leaping_chords(s) for s in range(10)]}
    heldout = {
        "steps": [stepwise_line(s) for s in range(100, 106)],
        "chords": [leaping_chords(s) for s in range(100, 106)],
    }
    return fit_classifier(train, heldout, crop_length=24, crops_per_piece=3, min_train_pieces=5, min_heldout_pieces=2)


def test_features_ignore_the_key():
    score = stepwise_line(3)
    up = score.copy()
    up.shift_pitch(5)
    assert np.allclose(features(Notes.of(score)), features(Notes.of(up)))
    assert len(features(Notes.of(score))) == len(FEATURE_NAMES)


def test_crops_by_notes_and_bars():
    notes = Notes.of(leaping_chords(0, n=10))  # 40 notes, one chord per 4/4 bar
    assert [len(c) for c in crops(notes, 12)] == [12, 12, 12]
    assert [len(c) for c in crops(notes, 3, unit="bars")] == [12, 12, 12]
    assert [len(c) for c in crops(notes, 100)] == [40]  # a short piece is one crop of itself
    assert typical_length([leaping_chords(0, n=k) for k in (5, 10, 20)]) == 40
    assert typical_length([leaping_chords(0, n=k) for k in (5, 10, 20)], unit="bars") == 10


def test_separates_clearly_different_styles(styles):
    ceiling = styles.ceiling
    assert ceiling["overall"]["n"] == 2 * 6 * 3
    assert ceiling["overall"]["share"] == 1.0
    samples = [stepwise_line(s) for s in range(200, 204)] + [leaping_chords(s) for s in range(200, 204)]
    result = adherence(styles, samples, ["steps"] * 4 + ["chords"] * 4)
    assert result["overall"]["hits"] == 8
    assert result["per_composer"]["steps"]["mean_probability"] > 0.9


def test_near_chance_on_one_style():
    pieces = [stepwise_line(s) for s in range(60)]
    train = {"a": pieces[0:20], "b": pieces[20:40]}
    heldout = {"a": pieces[40:50], "b": pieces[50:60]}
    classifier = fit_classifier(train, heldout, crop_length=24, crops_per_piece=4)
    ceiling = classifier.ceiling["overall"]
    assert ceiling["n"] == 80
    assert 0.3 <= ceiling["share"] <= 0.7, ceiling


def test_table_rows_and_intervals_come_from_the_samples(styles, tmp_path):
    steps = [stepwise_line(s) for s in range(300, 305)]
    chords = [leaping_chords(s) for s in range(300, 303)]
    # 5 of the 8 samples meant as "steps" sound like steps; every sample meant as "chords" does
    conditional = (steps + chords + [leaping_chords(310)], ["steps"] * 8 + ["chords"])
    unconditional = (steps[:4] + chords[:2], [None, "none", "NONE", None, None, "none"])
    report = adherence_report(styles, {"unconditional": unconditional, "s=3": conditional})
    row = report["groups"]["s=3"]["per_composer"]["steps"]
    assert (row["n"], row["hits"], row["share"]) == (8, 5, 5 / 8)
    assert row["interval"] == pytest.approx(list(wilson_interval(5, 8)))
    assert report["groups"]["s=3"]["overall"]["hits"] == 6 and report["groups"]["s=3"]["overall"]["n"] == 9
    confusion = report["groups"]["s=3"]["confusion"]
    assert confusion["rows"] == ["chords", "steps"]
    assert confusion["matrix"][confusion["rows"].index("steps")][confusion["labels"].index("steps")] == 5
    base = report["groups"]["unconditional"]["unconditional"]
    assert (base["steps"]["hits"], base["steps"]["n"], base["chords"]["hits"]) == (4, 6, 2)
    table = render_markdown(report)
    assert "0.62 [" in table and "(n=8)" in table and "base rate" in table
    # the classifier travels as JSON and judges the same afterwards
    styles.save(tmp_path / "classifier.json")
    again = ComposerClassifier.load(tmp_path / "classifier.json")
    assert np.allclose(again.probabilities(steps), styles.probabilities(steps))


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + 1.96²/20) / (1 + 1.96²/10), half-width 1.96 √(0.016 + 1.96²/400) / (1 + 1.96²/10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * (0.016 + z * z / 400) ** 0.5 / (1 + z * z / 10)
    assert wilson_interval(8, 10) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_composer_with_too_few_pieces_is_not_measurable():
    train = {
        "steps": [stepwise_line(s) for s in range(6)],
        "chords": [leaping_chords(s) for s in range(6)],
        "rare": [stepwise_line(50)],
    }
    heldout = {
        "steps": [stepwise_line(60), stepwise_line(61)],
        "chords": [leaping_chords(60), leaping_chords(61)],
        "rare": [stepwise_line(62)],
    }
    classifier = fit_classifier(train, heldout, crop_length=24, min_train_pieces=3)
    assert classifier.composers == ["chords", "steps"]
    assert "1 training piece" in classifier.not_measurable["rare"]
    result = adherence(classifier, [stepwise_line(70), stepwise_line(71)], ["rare", "steps"])
    assert result["per_composer"]["rare"] == {"measurable": False, "reason": classifier.not_measurable["rare"], "n": 1}
    assert result["overall"]["n"] == 1
    table = render_markdown(adherence_report(classifier, {"s=1": ([stepwise_line(70)], ["rare"])}))
    assert "not measurable" in table and "rare: not measurable (1 training piece" in table

    # one measurable composer: nothing to fit, every composer says why, nothing crashes
    alone = fit_classifier(
        {"steps": train["steps"], "rare": train["rare"]}, heldout, crop_length=24, min_train_pieces=3
    )
    assert alone.composers == [] and set(alone.not_measurable) == {"steps", "rare", "chords"}
    assert adherence(alone, [stepwise_line(70)], ["steps"])["per_composer"]["steps"]["measurable"] is False
    assert "not measurable" in render_markdown(adherence_report(alone, {"s=1": ([stepwise_line(70)], ["steps"])}))


def test_trains_on_a_prepared_dataset(prepared):
    from datasets import load_from_disk

    from midilm.core.tokenizer import encode_ids, load_tokenizer

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    dataset = load_from_disk(str(prepared["data"]))
    classifier = train_classifier(
        dataset, tokenizer, max_pieces_per_composer=3, crop_length=32, min_train_pieces=2, min_heldout_pieces=1
    )
    train = dataset["train"].filter(lambda r: r["augmentation"] == "" and r["task"] == "continuation")
    names = train.features["composer"].names
    for name in classifier.composers:
        pieces = len({r["source"] for r in train if names[r["composer"]] == name})
        assert classifier.training["train_pieces"][name] == min(3, pieces)
    # OTHER holds the folded composer's 3 pieces: too few for the held-out splits, or measurable; never missing
    assert set(classifier.composers) | set(classifier.not_measurable) == set(names)
    # token ids read back as the music they encode
    score = stepwise_line(1, n=20)
    ids = [
        tokenizer["BOS_None"],
        composer_map.token_ids[0],
        *encode_ids(tokenizer, score).tolist(),
        tokenizer["EOS_None"],
    ]
    (decoded,) = scores_from_ids(tokenizer, [ids])
    assert decoded.note_num() == 20
