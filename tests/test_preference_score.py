"""The preference score on real pieces of the test corpus: it prefers real music to planted seconds and a
fresh piece to a copy of a training piece; pairs never cross composers."""

from __future__ import annotations

import pytest
from symusic import Note

from midilm.core.errors import InputError
from midilm.core.rows import RowLayout
from midilm.core.tokenizer import encode_ids, load_tokenizer
from midilm.evaluation.data import join_pieces, token_rows
from midilm.sampling.generation import decode_ids
from midilm.tuning.score import ScoreWeights, build_pairs, build_reference, load_dataset_for, score_samples


@pytest.fixture(scope="module")
def reference(prepared):
    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    ref = build_reference(
        str(prepared["data"]), tokenizer, composer_map, crop_length=48, passage_notes=48, passage_bars=4
    )
    return {"ref": ref, "tokenizer": tokenizer, "composer_map": composer_map}


def sample_of(tokenizer, composer_map, composer: str, score) -> dict:
    ids = (
        RowLayout.for_tokenizer(tokenizer)
        .continuation(composer_map.id_of(composer), encode_ids(tokenizer, score), last=True)
        .tolist()
    )
    return {"composer": composer, "ids": ids, "score": decode_ids(tokenizer, ids)}


def test_a_real_piece_scores_above_the_same_piece_with_planted_seconds(reference):
    ref, tokenizer, composer_map = reference["ref"], reference["tokenizer"], reference["composer_map"]
    composer = ref.measurable[0]
    real = ref.heldout[composer][0]
    planted = real["score"].copy()
    track = planted.tracks[0]
    for note in list(track.notes):  # a major second above every note: a cluster of seconds at each onset
        track.notes.append(Note(note.time, note.duration, note.pitch + 2, note.velocity))
    samples = [
        sample_of(tokenizer, composer_map, composer, real["score"]),
        sample_of(tokenizer, composer_map, composer, planted),
    ]
    scored = score_samples(samples, ref, tokenizer, ScoreWeights(), asked_tokens=len(samples[0]["ids"]))
    assert scored[1]["parts"]["vertical_seconds"] > scored[0]["parts"]["vertical_seconds"] + 0.2
    assert scored[1]["parts"]["seconds_excess"] > 0
    assert scored[0]["total"] > scored[1]["total"]


def test_a_thinned_piece_lies_farther_from_its_composer_texture(reference):
    ref, tokenizer, composer_map = reference["ref"], reference["tokenizer"], reference["composer_map"]
    composer = ref.measurable[0]
    real = ref.heldout[composer][0]["score"]
    thinned = real.copy()  # one voice of every onset kept: the texture DPO drifted toward without the term
    for track in thinned.tracks:
        kept, seen = [], set()
        for note in sorted(track.notes, key=lambda n: (n.time, -n.pitch)):
            if note.time not in seen:
                seen.add(note.time)
                kept.append(note)
        track.notes.clear()
        track.notes.extend(kept)
    thinned.tracks = thinned.tracks[:1]
    samples = [sample_of(tokenizer, composer_map, composer, s) for s in (real, thinned)]
    weights = ScoreWeights(texture_weight=1.0)
    scored = score_samples(samples, ref, tokenizer, weights, asked_tokens=len(samples[0]["ids"]))
    assert scored[1]["parts"]["texture_excess"] > scored[0]["parts"]["texture_excess"] + 0.5
    off = score_samples(samples, ref, tokenizer, ScoreWeights(texture_weight=0.0), asked_tokens=len(samples[0]["ids"]))
    assert off[1]["parts"]["texture_excess"] == 0.0
    assert scored[1]["total"] == pytest.approx(off[1]["total"] - scored[1]["parts"]["texture_excess"])


def test_a_copy_of_a_training_piece_scores_below_a_fresh_piece(reference, prepared):
    ref, tokenizer, composer_map = reference["ref"], reference["tokenizer"], reference["composer_map"]
    composer = ref.measurable[0]
    dataset = load_dataset_for(str(prepared["data"]), tokenizer, composer_map)
    rows = token_rows(dataset["train"], tokenizer, composer_map, "train")
    training = [p for p in join_pieces(rows, tokenizer["EOS_None"]) if composer_map.names[p["composer"]] == composer]
    copy = max(training, key=lambda p: len(p["ids"]))
    fresh = ref.heldout[composer][0]
    samples = [
        {"composer": composer, "ids": ids, "score": decode_ids(tokenizer, ids)} for ids in (copy["ids"], fresh["ids"])
    ]
    scored = score_samples(samples, ref, tokenizer, ScoreWeights(), asked_tokens=200)
    assert scored[0]["parts"]["longest_copied_run"] > ref.copy_limit >= scored[1]["parts"]["longest_copied_run"]
    assert scored[0]["parts"]["copy_excess"] > 0 and scored[1]["parts"]["copy_excess"] == 0
    assert scored[1]["total"] > scored[0]["total"]


def test_short_samples_and_weights(reference):
    ref, tokenizer = reference["ref"], reference["tokenizer"]
    composer = ref.measurable[0]
    piece = ref.heldout[composer][0]
    sample = {"composer": composer, "ids": piece["ids"], "score": piece["score"]}
    music = len(piece["ids"]) - 3
    long_enough = score_samples([sample], ref, tokenizer, ScoreWeights(), asked_tokens=music)[0]
    short = score_samples([sample], ref, tokenizer, ScoreWeights(), asked_tokens=music * 4)[0]
    assert long_enough["parts"]["short"] == 0 and short["parts"]["short"] == pytest.approx(0.5)
    assert short["total"] == pytest.approx(long_enough["total"] - 0.5)
    with pytest.raises(InputError, match="--seconds_weight"):
        ScoreWeights(seconds_weight=-1)


def test_pairs_come_from_samples_of_the_same_composer():
    samples = [{"composer": c} for c in ["a", "b", "a", "b", "a", "b", "a", "b", "c"]]
    totals = [0.9, 0.1, 0.2, 0.8, 0.5, 0.5, 0.7, 0.3, 1.0]
    scores = [{"total": t} for t in totals]
    pairs = build_pairs(samples, scores, rule="extremes", fraction=0.5)
    assert pairs and all(
        samples[p["chosen"]]["composer"] == samples[p["rejected"]]["composer"] == p["composer"] for p in pairs
    )
    assert all(scores[p["chosen"]]["total"] > scores[p["rejected"]]["total"] for p in pairs)
    a = [p for p in pairs if p["composer"] == "a"]
    assert [(p["chosen"], p["rejected"]) for p in a] == [(0, 2), (6, 4)]  # best with worst, second with second worst
    assert not [p for p in pairs if p["composer"] == "c"]  # one sample: nothing to pair
    one = build_pairs(samples, scores, rule="best_worst")
    assert sorted((p["composer"], p["chosen"], p["rejected"]) for p in one) == [("a", 0, 2), ("b", 3, 1)]
    with pytest.raises(InputError, match="--pair_rule"):
        build_pairs(samples, scores, rule="random")
