"""evaluate_samples.py and midilm.evaluation.run: the report end to end on a tiny trained model, the training scan,
adherence, bad input."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from datasets import ClassLabel, Dataset, load_from_disk
from shared_run import longest_shared_run
from symusic import Note, Score, Tempo, TimeSignature, Track

from midilm.core.errors import InputError
from midilm.core.tokenizer import encode_ids, load_tokenizer
from midilm.evaluation.arguments import EvaluateArguments, check_output_dir
from midilm.evaluation.data import scan_training, token_rows
from midilm.evaluation.likelihood import fit_unigram, unigram_from_counts
from midilm.evaluation.memorization import MemorizationIndex, PitchReader, build_index, interval_codes
from midilm.evaluation.run import evaluate
from midilm.evaluation.samples import passage_runs, read_samples
from midilm.metrics.notes import pitch_sequence
from midilm.sampling.generation import decode_ids

torch.set_num_threads(1)  # two threads on two shared cores make generate() up to 100x slower
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_EVAL = [
    "--num_samples_per_composer",
    "2",
    "--max_new_tokens",
    "64",
    "--adherence_scales",
    "1,3",
    "--adherence_samples_per_composer",
    "2",
]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], check=False, cwd=REPO, env=ENV, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def model_dir(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def report_dir(model_dir, prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "eval_report"
    result = run_script(
        "evaluate_samples.py",
        "--model_dir",
        str(model_dir),
        "--dataset_dir",
        str(prepared["data"]),
        "--output_dir",
        str(out),
        *TINY_EVAL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "perplexity" in result.stdout
    return out


def test_report_holds_every_section(report_dir, prepared):
    report = json.loads((report_dir / "report.json").read_text())
    assert {
        "settings",
        "data",
        "likelihood",
        "pieces",
        "comparison",
        "cfg_sweep",
        "memorization",
        "checks",
        "timings",
    } <= set(report)
    composers = report["settings"]["composers_evaluated"]
    validation = load_from_disk(str(prepared["data"]))["validation"]
    names = validation.features["composer"].names
    assert set(composers) == {names[c] for c in validation["composer"]}  # every composer with held-out pieces
    held_out = set(validation["source"])
    assert {p["name"] for p in report["pieces"]["real"]} == held_out
    for name in ("trained", "random"):
        assert len(report["pieces"][name]) == 2 * len(composers)
        assert set(report["comparison"][name]["per_composer"]) == set(composers)
        assert report["comparison"][name]["distance"]["mean_over_composers"]["pitch_class_js"] is not None
        for piece in report["pieces"][name]:
            assert piece["syntax_error_rate"] == 0.0  # the grammar is on for both
            assert 0 <= piece["longest_training_run"] <= piece["n_notes"]
    assert set(report["cfg_sweep"]) == {"1", "3"} and set(report["cfg_sweep"]["1"]) == set(composers)
    lik = report["likelihood"]
    assert lik["trained"]["perplexity"] < lik["random_weights"]["perplexity"]
    assert lik["perplexity_ratio_trained_to_unigram"] == pytest.approx(
        lik["trained"]["perplexity"] / lik["unigram"]["perplexity"]
    )
    assert lik["trained"]["nll_per_note"] == pytest.approx(lik["trained"]["total_nll"] / lik["notes"])
    # the same rows with COMPOSER_NONE: a different likelihood, and composer information is the gap per token
    assert lik["trained_unconditional"]["total_nll"] != lik["trained"]["total_nll"]
    assert lik["composer_information_nats_per_token"] == pytest.approx(
        (lik["trained_unconditional"]["total_nll"] - lik["trained"]["total_nll"]) / lik["scored_tokens"]
    )
    assert set(report["memorization"]) == {"real", "trained", "random"}
    # the real pieces also as passages as long as the median sample: more of them, and no longer run than their whole
    # piece's
    passages = report["memorization_real_passages"]
    guided = [*report["pieces"]["sweep"]["1"], *report["pieces"]["trained"]]  # the sweep's s = 3 set is the main one
    assert passages["notes"] == int(np.median([p["n_notes"] for p in guided]))
    assert (
        passages["runs"]["all"]["n"] >= len(held_out)
        and passages["runs"]["all"]["max"] <= report["memorization"]["real"]["all"]["max"]
    )
    assert report["accompaniment"] is None  # a continuation-only model: no accompaniment section

    markdown = (report_dir / "report.md").read_text()
    for heading in (
        "## Headline",
        "## Composer adherence and the guidance default",
        "## Music metrics per composer",
        "## Histogram distances per guidance scale (secondary)",
        "## Memorization",
    ):
        assert heading in markdown
    assert f"| real held-out, passages of {passages['notes']} notes | all |" in markdown
    assert "composer information: NLL per token without the composer minus with it" in markdown
    assert (
        "## Accompaniment" not in markdown
        and "Accompaniment: not evaluated, because the dataset holds no accompaniment rows" in markdown
    )
    assert "no pull" not in markdown  # conditioning is read from the classifier, not from pitch-class histograms
    assert "| perplexity / unigram perplexity |" in markdown and "random weights" in markdown
    assert len(list((report_dir / "samples" / "trained").glob("*.mid"))) == 2 * len(composers)
    assert not list(report_dir.parent.glob(".eval_report.*")), "no staging folder left behind"


def test_real_pieces_read_back_without_syntax_errors(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    assert report["checks"]["real_pieces_have_no_syntax_errors"]
    assert all(p["syntax_error_rate"] == 0.0 for p in report["pieces"]["real"])


def test_read_samples_takes_generate_py_files(report_dir, model_dir, tmp_path):
    tokenizer, _ = load_tokenizer(model_dir)
    first, second = json.loads((report_dir / "report.json").read_text())["settings"]["composers_evaluated"][:2]
    for path in (report_dir / "samples" / "trained").glob("*.mid"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / f"{first}_0.json").write_text(json.dumps({"settings": {"guidance_scale": 2.0}, "tokens": [1, 3, 2]}))
    found, scales = read_samples(tmp_path, [first, second], tokenizer)
    assert [s["name"] for s in found[first]] == [f"{first}_0", f"{first}_1"] and len(found[second]) == 2
    assert found[first][0]["ids"] == [1, 3, 2] and scales == [2.0]
    with pytest.raises(InputError, match="no nobody_0.mid"):
        read_samples(tmp_path, ["nobody"], tokenizer)


def test_existing_output_dir_is_refused(report_dir, model_dir, prepared):
    before = (report_dir / "report.json").stat().st_mtime_ns
    with pytest.raises(InputError, match="already exists"):
        check_output_dir(EvaluateArguments(output_dir=str(report_dir)))
    result = run_script(
        "evaluate_samples.py",
        "--model_dir",
        str(model_dir),
        "--dataset_dir",
        str(prepared["data"]),
        "--output_dir",
        str(report_dir),
    )
    assert result.returncode == 2 and "pass --overwrite" in result.stderr
    assert (report_dir / "report.json").stat().st_mtime_ns == before


def test_missing_dataset_exits_2_with_one_line(model_dir, tmp_path):
    result = run_script(
        "evaluate_samples.py",
        "--model_dir",
        str(model_dir),
        "--dataset_dir",
        str(tmp_path / "nothing"),
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --dataset_dir") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def _save_variant(prepared, tmp_path, change) -> str:
    dataset = load_from_disk(str(prepared["data"]))
    path = tmp_path / "variant"
    change(dataset).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_model", "--model_dir"),
        ("other_composers", "has composers"),
        ("other_tokenizer", "does not fit the model's tokenizer"),
        ("no_held_out", "no validation pieces of OTHER"),
        ("unknown_composer", "--composers: unknown composer"),
    ],
)
def test_bad_input(case, message, model_dir, prepared, tmp_path):
    dataset_dir, model = str(prepared["data"]), str(model_dir)
    composers = None
    if case == "no_model":
        model = str(tmp_path / "no_model")
    elif case == "other_composers":
        dataset_dir = _save_variant(
            prepared, tmp_path, lambda d: d.cast_column("composer", ClassLabel(names=["x", "y", "z"]))
        )
    elif case == "other_tokenizer":
        dataset_dir = _save_variant(
            prepared, tmp_path, lambda d: d.map(lambda r: {"input_ids": [i + 5000 for i in r["input_ids"]]})
        )
    elif case == "no_held_out":
        other = load_from_disk(dataset_dir)["validation"].features["composer"].str2int("OTHER")
        dataset_dir = _save_variant(prepared, tmp_path, lambda d: d.filter(lambda r: r["composer"] != other))
        composers = "alpha,OTHER"  # named explicitly: an error (left to the default, OTHER is skipped with a warning)
    else:
        composers = "alpha,nobody"
    args = EvaluateArguments(
        model_dir=model, dataset_dir=dataset_dir, output_dir=str(tmp_path / "out"), composers=composers
    )
    with pytest.raises(InputError, match=message):
        evaluate(args)
    assert not (tmp_path / "out").exists()


def test_arguments_are_checked():
    with pytest.raises(InputError, match="held-out split"):
        EvaluateArguments(split="train")
    with pytest.raises(InputError, match="--guidance_scales"):
        EvaluateArguments(guidance_scales="1,two")
    with pytest.raises(InputError, match="--accompaniment_pieces -1"):
        EvaluateArguments(accompaniment_pieces=-1)
    for name in (
        "num_samples_per_composer",
        "max_new_tokens",
        "batch_size",
        "adherence_samples_per_composer",
        "sample_batch_size",
    ):
        with pytest.raises(InputError, match=f"^--{name} 0: must be at least 1$"):
            EvaluateArguments(**{name: 0})


# Memorization and the training split at scale ---------------------------------------------------


def _piece_ids(train, source: str) -> list[int]:
    """The music tokens of one original training piece, its chunks joined."""
    rows = sorted(
        (
            r
            for r in train.select_columns(["input_ids", "source", "chunk", "augmentation"]).to_list()
            if r["source"] == source and not r["augmentation"]
        ),
        key=lambda r: r["chunk"],
    )
    return [t for r in rows for t in r["input_ids"][2:]]


def _transposed(score: Score, semitones: int) -> Score:
    out = score.copy()
    for track in out.tracks:
        for note in track.notes:
            note.pitch += semitones
    return out


def test_memorization_finds_a_transposed_copy(prepared):
    tokenizer, _ = load_tokenizer(prepared["tokenizer"])
    train = load_from_disk(str(prepared["data"]))["train"]
    index = build_index(train, tokenizer, batch_size=3)  # several Arrow batches
    reader = PitchReader.for_tokenizer(tokenizer)
    source = sorted(set(train["source"]))[0]
    original = decode_ids(tokenizer, _piece_ids(train, source))
    copy = reader.pitches(encode_ids(tokenizer, _transposed(original, 3)))
    assert len(copy) > 40 and np.array_equal(copy, pitch_sequence(original) + 3)
    found = index.longest_run(copy)
    assert found.length == len(copy) - 1 and found.source == source  # the whole piece, every interval
    assert longest_shared_run(copy, [pitch_sequence(original)]) < found.length / 4  # absolute pitches miss it
    # cut into passages of 10 notes (a remainder dropped), each is found whole; a piece shorter than a passage stays
    # whole
    piece = [{"composer": "c", "name": "copy", "ids": encode_ids(tokenizer, _transposed(original, 3))}]
    runs = passage_runs(piece, tokenizer, index, 10)
    assert [(r["n_notes"], r["longest_training_run"]) for r in runs] == [(10, 9)] * (len(copy) // 10)
    assert [
        (r["n_notes"], r["longest_training_run"]) for r in passage_runs(piece, tokenizer, index, len(copy) + 5)
    ] == [(len(copy), len(copy) - 1)]

    rng = np.random.default_rng(0)  # leaps the pieces of conftest.make_piece never make
    unrelated = Score(480)
    unrelated.time_signatures.append(TimeSignature(0, 4, 4))
    unrelated.tempos.append(Tempo(0, 100))
    pitches = 60 + np.cumsum(rng.choice([-11, -9, -6, 6, 9, 11], size=len(copy))) % 24
    unrelated.tracks.append(Track(program=0, notes=[Note(240 * i, 240, int(p), 80) for i, p in enumerate(pitches)]))
    alone = index.longest_run(reader.pitches(encode_ids(tokenizer, unrelated)))
    assert alone.length <= 3, alone


def test_memorization_index_matches_brute_force():
    """Exact: the suffix-array search equals `longest_shared_run` (itself checked by brute force) on intervals."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        training = [60 + np.cumsum(rng.integers(-2, 3, size=rng.integers(1, 60))) for _ in range(rng.integers(1, 6))]
        sample = 60 + np.cumsum(rng.integers(-2, 3, size=rng.integers(0, 50)))
        if len(training[0]) > 20 and rng.random() < 0.5:  # a planted transposed passage
            sample = np.concatenate([sample, training[0][5:20] - 7])
        index = MemorizationIndex([str(i) for i in range(len(training))], [interval_codes(t) for t in training])
        expected = longest_shared_run(np.diff(sample), [np.diff(t) for t in training])
        assert index.longest_run(sample).length == expected


def test_pitches_read_off_tokens_equal_the_decoded_scores(prepared):
    tokenizer, _ = load_tokenizer(prepared["tokenizer"])
    reader = PitchReader.for_tokenizer(tokenizer)
    for ids in load_from_disk(str(prepared["data"]))["validation"]["input_ids"]:
        for cut in (ids, ids[: len(ids) // 2], ids[: len(ids) // 3]):  # a cut can end inside a note, which is left out
            assert np.array_equal(reader.pitches(cut), pitch_sequence(decode_ids(tokenizer, cut)))


def test_training_scan_equals_the_list_path(prepared, model_dir):
    """The streamed scan gives what the whole-split lists gave: the same unigram model, whatever the batch size."""
    tokenizer, composer_map = load_tokenizer(model_dir)
    train = load_from_disk(str(prepared["data"]))["train"]
    small, whole = (scan_training(train, tokenizer, composer_map, "train", batch_size=b) for b in (3, 4096))
    assert np.array_equal(small.token_counts, whole.token_counts) and np.array_equal(small.pieces, whole.pieces)
    assert np.array_equal(small.index.text, whole.index.text) and small.index.sources == whole.index.sources
    rows = token_rows(train, tokenizer, composer_map, "train")
    assert small.rows == len(rows)
    expected = fit_unigram([r["input_ids"] for r in rows], len(tokenizer))
    assert unigram_from_counts(small.token_counts) == pytest.approx(expected)
    originals = {(r["source"], r["composer"]) for r in rows if not r["augmentation"]}
    assert small.pieces.tolist() == [sum(c == k for _, c in originals) for k in range(len(composer_map.names))]
    assert small.index.pieces == len(originals)


class Materialized(AssertionError):
    pass


def _refuse_on_train(method):
    def guarded(self, *args, **kwargs):
        if any(Path(f["filename"]).parent.name == "train" for f in self.cache_files):
            raise Materialized(f"Dataset.{method.__name__} on the training split")
        return method(self, *args, **kwargs)

    return guarded


def test_evaluation_never_materializes_the_training_split(model_dir, report_dir, prepared, tmp_path, monkeypatch):
    """Every way a Dataset hands out whole columns or rows as Python objects fails on the training split;
    the evaluation still runs. The old path (the training split as a list of rows) fails under the same guard."""
    for name in ("_getitem", "to_list", "to_dict", "to_pandas", "__iter__"):
        monkeypatch.setattr(Dataset, name, _refuse_on_train(getattr(Dataset, name)))
    tokenizer, composer_map = load_tokenizer(model_dir)
    train = load_from_disk(str(prepared["data"]))["train"]
    with pytest.raises(Materialized):
        token_rows(train, tokenizer, composer_map, "train")
    with pytest.raises(Materialized):
        list(train["input_ids"])

    composer = json.loads((report_dir / "report.json").read_text())["settings"]["composers_evaluated"][0]
    args = EvaluateArguments(
        model_dir=str(model_dir),
        dataset_dir=str(prepared["data"]),
        output_dir=str(tmp_path / "out"),
        composers=composer,
        num_samples_per_composer=1,
        max_new_tokens=16,
        guidance_scales="",
        accompaniment_pieces=0,
    )
    report = evaluate(args)
    assert report["data"]["memorization_index"]["pieces"] > 0 and report["memorization"]["trained"]["all"]["n"] == 1


# Composer adherence, degenerate samples and the guidance default ---------------------------------


@pytest.fixture(scope="module")
def adherence_run(model_dir, prepared, tmp_path_factory):
    """evaluate_samples.py --write_default_guidance, in-process on a copy of the model folder, with the
    report evaluate() returned (its samples' token ids included) kept aside before it is written."""
    from conftest import load_script

    root = tmp_path_factory.mktemp("adherence")
    model = root / "model_output"
    shutil.copytree(model_dir, model)
    script = load_script("evaluate_samples.py")
    captured = {}

    def keep(args):
        report = evaluate(args)
        captured.update(report=report, midi=dict(report["_midi"]), args=args)
        return report

    argv = [
        "evaluate_samples.py",
        "--model_dir",
        str(model),
        "--dataset_dir",
        str(prepared["data"]),
        "--output_dir",
        str(root / "eval"),
        "--num_samples_per_composer",
        "1",
        "--max_new_tokens",
        "48",
        "--adherence_scales",
        "1,2",
        "--adherence_samples_per_composer",
        "3",
        "--accompaniment_pieces",
        "0",
        "--write_default_guidance",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            importlib.import_module("midilm.commands.evaluate"), "evaluate", keep
        )  # the script's main() runs that module's
        patch.setattr(sys, "argv", argv)
        script.main()
    return {**captured, "model": model, "out": root / "eval"}


def test_adherence_rows_are_computed_from_the_samples(adherence_run, model_dir, prepared):
    import evaluate as hf_evaluate

    from midilm.evaluate_modules import path
    from midilm.evaluation.composer_classifier.judging import wilson_interval
    from midilm.sampling.guard import onset_counts

    report, midi = adherence_run["report"], adherence_run["midi"]
    section = report["adherence"]
    tokenizer, _ = load_tokenizer(model_dir)
    assert [r["scale"] for r in section["rows"]] == [1.0, 2.0]
    metric = hf_evaluate.load(path("composer_adherence"), keep_in_memory=True)
    settings = {k: section["settings"][k] for k in ("crop_length", "crop_unit", "seed")}
    trained_scale = report["settings"]["trained_samples_guidance_scale"]
    for row in section["rows"]:
        # the guarded set at the main scale became the "trained" set
        samples = midi["trained"] if row["scale"] == trained_scale else midi[f"sweep {row['scale']:g}"]
        assert len(samples) == 3 * len(report["settings"]["composers_evaluated"])
        expected = metric.compute(
            predictions=[p["ids"] for p in samples],
            references=[p["composer"] for p in samples],
            dataset=str(prepared["data"]),
            tokenizer=str(model_dir),
            **settings,
        )
        hits = sum(p == s["composer"] for p, s in zip(expected["predicted"], samples))
        assert row["n"] == len(samples) and row["adherence"] == pytest.approx(hits / len(samples))
        assert row["interval"] == pytest.approx(list(wilson_interval(hits, len(samples))))
        assert row["per_composer"] == {c: v.get("share") for c, v in expected["per_composer"].items()}
        thresholds = section["degenerate_threshold"]
        for guard, key in ((True, "degenerate_guard_on"), (False, "degenerate_guard_off")):
            pieces = (
                samples
                if guard and row["scale"] == trained_scale
                else midi[f"sweep{'' if guard else '_unguarded'} {row['scale']:g}"]
            )
            largest = [onset_counts(tokenizer, p["ids"])[0] for p in pieces]
            assert row[key]["count"] == sum(n > thresholds[p["composer"]] for p, n in zip(pieces, largest))
            assert row[key]["n"] == len(pieces) == len(samples) and row[key]["max_notes_per_onset"] == max(largest)
    base = section["groups"]["unconditional"]
    assert base["confusion"]["rows"] == ["none"] and sum(base["confusion"]["matrix"][0]) == len(midi["unconditional"])
    assert section["ceiling"]["overall"]["n"] > 0

    markdown = (adherence_run["out"] / "report.md").read_text()
    assert (
        "| real held-out crops (ceiling) |" in markdown
        and "| unconditional (share heard as each composer) |" in markdown
    )
    assert "degenerate, guard on | degenerate, guard off" in markdown
    for row in section["rows"]:
        cell = f"{row['adherence']:.2f} [{row['interval'][0]:.2f}, {row['interval'][1]:.2f}]"
        assert cell in markdown
        assert f"{row['degenerate_guard_off']['count']}/{row['degenerate_guard_off']['n']}" in markdown
        # vertical seconds: pooled over each composer's samples, beside the real pieces'
        from midilm.metrics.piece import piece_metrics, pooled_vertical_seconds

        samples = midi["trained"] if row["scale"] == trained_scale else midi[f"sweep {row['scale']:g}"]
        for c, share in row["vertical_seconds"].items():
            assert share == pooled_vertical_seconds([piece_metrics(p["score"]) for p in samples if p["composer"] == c])
    assert set(section["real"]["vertical_seconds"]) == set(report["settings"]["composers_evaluated"])
    assert "| vertical seconds (" in markdown


def test_guided_samples_at_the_default_stay_within_the_guard(adherence_run, model_dir):
    """train.py stores the guard's bounds; the sweep's guarded samples (at the default among them) never pass them."""
    from midilm.sampling.guard import load_bounds, onset_counts

    bounds = load_bounds(model_dir)
    assert bounds and bounds["max_notes_per_onset"] >= 1
    tokenizer, _ = load_tokenizer(model_dir)
    report, midi = adherence_run["report"], adherence_run["midi"]
    assert report["settings"]["guard"] is True and report["adherence"]["guard"] == bounds
    guarded = (
        midi["trained"] + [p for k, v in midi.items() if k.startswith("sweep ") for p in v] + midi["unconditional"]
    )
    assert all(p["guard"] for p in guarded) and not any(p["guard"] for p in midi["sweep_unguarded 1"])
    for p in guarded:
        onset, bar = onset_counts(tokenizer, p["ids"])
        assert onset <= bounds["max_notes_per_onset"] and bar <= bounds["max_notes_per_bar"], p["name"]


def test_the_chosen_default_is_written_only_with_the_flag(adherence_run, report_dir, model_dir):
    from midilm.core.modeling import sampling_defaults

    choice = adherence_run["report"]["adherence"]["choice"]
    assert choice["scale"] in (1.0, 2.0) and choice["written_to"] == str(adherence_run["model"] / "config.json")
    assert sampling_defaults(adherence_run["model"])["guidance_scale"] == choice["scale"]
    assert not list(adherence_run["model"].glob(".*partial"))
    assert (
        f"scale {choice['scale']:g} by default" in (adherence_run["model"] / "README.md").read_text()
    )  # the card follows
    rows = {r["scale"]: r for r in adherence_run["report"]["adherence"]["rows"]}
    allowed = [
        s
        for s, r in rows.items()
        if r["degenerate_guard_on"]["share"] <= adherence_run["report"]["adherence"]["real"]["degenerate"]["share"]
    ]
    if allowed:  # the highest adherence among the allowed scales, the smaller scale on a tie
        assert choice["scale"] == max(allowed, key=lambda s: (rows[s]["adherence"], -s))
    assert (
        f"Guidance default: **s = {choice['scale']:g}**, written to" in (adherence_run["out"] / "report.md").read_text()
    )
    # without the flag (the report_dir run) the model folder keeps its default, and the report says so
    without = json.loads((report_dir / "report.json").read_text())["adherence"]["choice"]
    assert without["written_to"] is None and sampling_defaults(model_dir)["guidance_scale"] == 3.0
    assert "not written to the model folder" in (report_dir / "report.md").read_text()


def test_a_composer_with_too_few_pieces_is_not_measurable(report_dir, prepared):
    """The prepared corpus folds 3 pieces into OTHER: too few to train the classifier on, so the report
    names it not measurable, with its reason, and still measures the others."""
    report = json.loads((report_dir / "report.json").read_text())
    info = report["adherence"]["classifier"]
    assert "OTHER" in info["not_measurable"] and "OTHER" not in info["composers"] and len(info["composers"]) >= 2
    markdown = (report_dir / "report.md").read_text()
    assert f"- OTHER: not measurable ({info['not_measurable']['OTHER']})." in markdown
    for row in report["adherence"]["rows"]:
        assert row["adherence"] is not None and row.get("per_composer", {}).get("OTHER") is None


def test_accompaniment_is_skipped_for_a_model_not_trained_on_it(model_dir, prepared, tmp_path):
    """Accompaniment rows in the dataset, but a model whose midilm_tasks lacks accompaniment: the section is
    skipped with its reason, not failed halfway."""
    from datasets import concatenate_datasets

    def add_accompaniment_row(d):
        d["train"] = concatenate_datasets([d["train"], d["train"].select([0]).map(lambda r: {"task": "accompaniment"})])
        return d

    dataset_dir = _save_variant(prepared, tmp_path, add_accompaniment_row)
    args = EvaluateArguments(
        model_dir=str(model_dir),
        dataset_dir=dataset_dir,
        output_dir=str(tmp_path / "out"),
        composers="alpha,beta",
        num_samples_per_composer=1,
        max_new_tokens=8,
        adherence_scales="",
        accompaniment_pieces=1,
    )
    report = evaluate(args)
    assert report["accompaniment"] is None and "never on accompaniment" in report["accompaniment_skipped"]
    assert report["adherence"] is None  # no scales, no sweep


# Long pieces: drift over a piece longer than the context ------------------------------------------


def test_long_pieces_report_their_drift_beside_real_pieces(model_dir, prepared, tmp_path, monkeypatch):
    """evaluate_samples.py --long_tokens: long samples written in windows, the drift of their last window
    against their first recomputed from the samples themselves, and the real-pieces reference, in both reports."""
    from midilm.commands import evaluate as command
    from midilm.core.tokenizer import bar_start_table
    from midilm.evaluation.long_pieces import edge_windows, mean_gap
    from midilm.metrics.piece import piece_metrics

    captured = {}

    def keep(args):
        captured["report"] = evaluate(args)
        captured["midi"] = dict(captured["report"]["_midi"])
        return captured["report"]

    def three_more_alpha_pieces(dataset):
        """The validation split holds one piece per composer: three of alpha's training pieces join it, so alpha
        has real pieces to compare with one another and beta does not."""
        from datasets import concatenate_datasets

        alpha = dataset["train"].features["composer"].str2int("alpha")
        sources = sorted(
            {r["source"] for r in dataset["train"].select_columns(["source", "composer"]) if r["composer"] == alpha}
        )
        moved = dataset["train"].filter(lambda r: r["source"] in sources[:3])
        dataset["validation"] = concatenate_datasets([dataset["validation"], moved])
        return dataset

    monkeypatch.setattr(command, "evaluate", keep)
    room, long_tokens = 254, 2 * 254  # the tiny model's context is 256
    out = tmp_path / "eval"
    dataset_dir = _save_variant(prepared, tmp_path, three_more_alpha_pieces)
    argv = ["--model_dir", str(model_dir), "--dataset_dir", dataset_dir, "--output_dir", str(out)]
    argv += ["--composers", "alpha,beta", "--num_samples_per_composer", "1", "--max_new_tokens", "8"]
    argv += ["--adherence_scales", "", "--accompaniment_pieces", "0", "--long_tokens", str(long_tokens)]
    command.main(argv + ["--long_samples_per_composer", "3"])

    report, long = captured["report"], captured["midi"]["long"]
    section = report["long_pieces"]
    assert section["long_tokens"] == long_tokens and section["window_tokens"] == room
    assert section["windows"] >= 3 and section["syntax_error_rate_max"] == 0.0
    assert [s["composer"] for s in long] == ["alpha"] * 3 + ["beta"] * 3
    tokenizer, _ = load_tokenizer(model_dir)
    starts_bar = np.asarray(bar_start_table(tokenizer))
    for c in ("alpha", "beta"):
        row = section["per_composer"][c]
        mine = [s for s in long if s["composer"] == c]
        assert row["samples"] == 3 and row["new_tokens"] == [len(s["ids"]) - 2 for s in mine]
        assert (
            max(row["new_tokens"]) == long_tokens
        )  # EOS held off (a sample may stop early only if a bar fills a window)
        windows = [edge_windows(s["ids"][2:], room, starts_bar) for s in mine]
        first = [piece_metrics(decode_ids(tokenizer, head)) for head, _ in windows]
        last = [piece_metrics(decode_ids(tokenizer, tail)) for _, tail in windows]
        assert row["drift_gap"] == pytest.approx(mean_gap(last, first))
    alpha, beta = section["per_composer"]["alpha"], section["per_composer"]["beta"]
    reference = alpha["real_pieces_gap"]
    assert reference["pieces"] == 4 and reference["draws"] > 0 and reference["p10"] <= reference["p90"]
    assert alpha["within_reference"] is (alpha["drift_gap"] <= reference["mean_gap"])
    assert beta["real_pieces_gap"] is None and beta["within_reference"] is None  # one held-out piece: no reference
    assert section["mean_over_composers"]["composers"] == 1
    assert [p["name"] for p in section["pieces"]["first"]] == [s["name"] for s in long]
    assert len(list((out / "samples" / "long").glob("*.mid"))) == 6

    written = json.loads((out / "report.json").read_text())["long_pieces"]
    assert written["per_composer"]["alpha"]["drift_gap"] == pytest.approx(section["per_composer"]["alpha"]["drift_gap"])
    markdown = (out / "report.md").read_text()
    assert f"## Long pieces: drift over {long_tokens} tokens" in markdown
    assert "| – (fewer than 2 held-out pieces) | – |" in markdown
    span = (
        f"{min(alpha['new_tokens'])}–{max(alpha['new_tokens'])}" if len(set(alpha["new_tokens"])) > 1 else long_tokens
    )
    assert f"| alpha | 3 | {span} |" in markdown
    assert f"**{alpha['drift_gap']:.2f}** | {alpha['real_pieces_gap']['mean_gap']:.2f} [" in markdown


def test_real_pieces_gap_is_between_pieces():
    from midilm.evaluation.long_pieces import real_pieces_gap

    def passages(values):
        return [{"notes_per_bar": v, "pitch_range": v} for v in values]

    assert real_pieces_gap([passages([1.0, 2.0])], 2, seed=0) is None  # one piece: nothing to compare it with
    alike = real_pieces_gap([passages([1.0, 2.0, 3.0]), passages([1.0, 2.0, 3.0])], 3, seed=0)
    assert alike["mean_gap"] == 0.0 and alike["pieces"] == 2 and alike["passages"] == 6
    apart = real_pieces_gap([passages([1.0, 2.0, 3.0]), passages([11.0, 12.0, 13.0])], 3, seed=0)
    assert apart["mean_gap"] == pytest.approx(10 / np.std([1.0, 2.0, 3.0]))  # the two pieces differ by 10 in both


def test_long_tokens_are_checked(model_dir, prepared, tmp_path):
    with pytest.raises(InputError, match="^--long_tokens -1: must be 0"):
        EvaluateArguments(long_tokens=-1)
    with pytest.raises(InputError, match="^--long_samples_per_composer 0: must be at least 1$"):
        EvaluateArguments(long_samples_per_composer=0)
    args = EvaluateArguments(
        model_dir=str(model_dir), dataset_dir=str(prepared["data"]), output_dir=str(tmp_path / "o"), long_tokens=300
    )
    with pytest.raises(InputError, match=r"^--long_tokens 300: must be at least 508, twice the model's context"):
        evaluate(args)
