"""midilm's local `evaluate` modules load offline with `evaluate.load(path)` and give what the functions
they wrap give, from MIDI files and from token-id lists."""

from __future__ import annotations

import pytest
from symusic import Score

from midilm.evaluate_modules import MODULES, path

evaluate = pytest.importorskip("evaluate")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Loading and computing must not reach the network (the suite also runs with HF_HUB_OFFLINE=1)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_path_names_each_module():
    for name in MODULES:
        assert path(name).endswith(name)
    with pytest.raises(ValueError, match="composer_adherence"):
        path("bleu")


def test_music_metrics_from_midi_files_and_tokens(bach_files, prepared):
    from midilm.core.tokenizer import encode_ids, load_tokenizer, vocab_base_tokens
    from midilm.metrics.compare import compare
    from midilm.metrics.piece import bar_windows, median_bars, piece_metrics

    files = [str(f.path) for f in bach_files]
    metric = evaluate.load(path("music_metrics"), keep_in_memory=True)
    result = metric.compute(predictions=files[:2], real=files[2:5])
    assert result["n_pieces"] == 2
    assert result["per_piece"] == [piece_metrics(Score(f)) for f in files[:2]]
    expected = compare([piece_metrics(Score(f)) for f in files[:2]], [piece_metrics(Score(f)) for f in files[2:5]])
    assert result["comparison"]["polyphony"] == pytest.approx(expected["polyphony"])
    assert result["distance"]["mean_gap"] > 0 and 0 <= result["distance"]["mean_overlap"] <= 1
    # against the real pieces cut into passages as long as the predictions
    auto = metric.compute(predictions=files[:2], real=files[2:5], real_windows="auto")
    assert auto["real_window_bars"] == median_bars(result["per_piece"]) and "real_window_bars" not in result
    windows = metric.compute(predictions=files[:2], real=files[2:5], real_windows=4)
    passages = [piece_metrics(w) for f in files[2:5] for w in bar_windows(Score(f), 4)]
    assert len(passages) > 3 and windows["comparison"]["pitch_range"] == pytest.approx(
        compare(result["per_piece"], passages)["pitch_range"]
    )
    with pytest.raises(ValueError, match="real_windows"):
        metric.compute(predictions=files[:2], real=files[2:5], real_windows=0)

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    rows = [
        [
            tokenizer["BOS_None"],
            composer_map.token_ids[0],
            *encode_ids(tokenizer, Score(f)).tolist(),
            tokenizer["EOS_None"],
        ]
        for f in files[:2]
    ]
    from_ids = metric.compute(predictions=rows, tokenizer=str(prepared["tokenizer"]))
    assert [p["syntax_error_rate"] for p in from_ids["per_piece"]] == [0.0, 0.0]
    # the notes the tokens spell (the tokenizer drops unisons across voices, so fewer than the file's)
    base = vocab_base_tokens(tokenizer)
    spelled = [sum(t.startswith("Pitch_") for i in row for t in base[i]) for row in rows]
    assert [p["n_notes"] for p in from_ids["per_piece"]] == spelled
    assert all(0.8 * Score(f).note_num() <= n <= Score(f).note_num() for f, n in zip(files, spelled))


def test_composer_adherence_from_midi_files_and_tokens(bach_files, prepared, tmp_path):
    from datasets import load_from_disk

    from midilm.core.tokenizer import encode_ids, load_tokenizer
    from midilm.evaluation.composer_classifier.fit import train_classifier
    from midilm.evaluation.composer_classifier.judging import adherence
    from midilm.evaluation.composer_classifier.pieces import scores_from_midi

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    classifier = train_classifier(
        load_from_disk(str(prepared["data"])), tokenizer, crop_length=32, min_train_pieces=2, min_heldout_pieces=1
    )
    assert len(classifier.composers) >= 2
    classifier.save(tmp_path / "classifier.json")
    files = [str(f.path) for f in bach_files[:4]]
    intended = [classifier.composers[0], classifier.composers[1], classifier.composers[0], "none"]

    metric = evaluate.load(path("composer_adherence"), keep_in_memory=True)
    result = metric.compute(predictions=files, references=intended, classifier=str(tmp_path / "classifier.json"))
    direct = adherence(classifier, scores_from_midi(files), intended)
    assert result["predicted"] == direct["predicted"] and result["confusion"] == direct["confusion"]
    hits = sum(p == i for p, i in zip(result["predicted"][:3], intended[:3]))
    assert result["overall"]["n"] == 3 and result["adherence"] == hits / 3
    assert result["unconditional"] is not None and result["ceiling"] == classifier.ceiling

    # token ids with the tokenizer folder; the classifier trained by the module from the dataset folder
    rows = [
        [tokenizer["BOS_None"], composer_map.token_ids[0], *encode_ids(tokenizer, Score(f)).tolist()] for f in files
    ]
    trained = metric.compute(
        predictions=rows,
        references=intended,
        dataset=str(prepared["data"]),
        tokenizer=str(prepared["tokenizer"]),
        crop_length=32,
        min_train_pieces=2,
        min_heldout_pieces=1,
    )
    assert trained["classifier"]["composers"] == classifier.composers and len(trained["predicted"]) == 4
    with pytest.raises(ValueError, match="classifier=, or dataset= and tokenizer="):
        metric.compute(predictions=files, references=intended)
