"""prepare_dataset.py: labels, broken files, splits, chunk layout, BPE, augmentation, safe outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import miditok
import numpy as np
import pytest
from conftest import REPO, TOKENIZER_SETTINGS, make_piece, write_midi_folder
from datasets import load_from_disk
from symusic import Score, Tempo, TimeSignature

from midilm.core.tokenizer import bar_start_table, build_tokenizer, load_tokenizer
from midilm.data.arguments import PrepareArguments
from midilm.data.dataset import chunk_bars, split_of
from midilm.data.prepare import prepare


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "prepare_dataset.py"), *args], cwd=cwd, capture_output=True, text=True
    )


def test_folder_labels_and_other_bucket(prepared):
    _, composer_map = load_tokenizer(prepared["tokenizer"])
    assert composer_map.names == ["alpha", "beta", "OTHER"]  # gamma has 3 pieces < 10: folded
    rows = json.loads((prepared["tokenizer"] / "composers.json").read_text())["composers"]
    assert {r["composer"]: r["pieces"] for r in rows} == {"alpha": 12, "beta": 12, "OTHER": 3}
    dataset = load_from_disk(str(prepared["data"]))
    assert dataset["train"].features["composer"].names == composer_map.names


def test_broken_files_are_reported_not_fatal(prepared):
    report = json.loads((prepared["data"] / "prepare_report.json").read_text())
    skipped = report["skipped_files"]
    assert skipped["broken/empty.mid"] == "empty file"
    assert skipped["broken/text.MID"] == "not a valid MIDI file"
    assert skipped["broken/silent.mid"] == "no notes"
    assert "broken/truncated.midi" in skipped
    assert report["files"] == {"seen": 31, "kept": 27, "skipped": 4, "duplicates": 0, "cut": 0, "flagged": 0}


def test_no_piece_in_two_splits(prepared):
    dataset = load_from_disk(str(prepared["data"]))
    sources = {split: set(dataset[split]["source"]) for split in dataset}
    assert all(sources.values())
    assert not sources["train"] & sources["validation"]
    assert not sources["train"] & sources["test"]
    assert not sources["validation"] & sources["test"]


def test_split_of_depends_on_the_key_alone():
    """A piece's split comes from a stable hash of its key, not Python's hash() (salted per process): the
    same in another process, and pinned, since a change would move the pieces of every prepared dataset
    between splits. Over many keys the shares follow the ratios."""
    keys = [f"piece{i}" for i in range(5000)]
    here = [split_of(key, 0.1, 0.3) for key in keys]
    code = "from midilm.data.dataset import split_of; print(*(split_of(f'piece{i}', 0.1, 0.3) for i in range(5000)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    elsewhere = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert elsewhere.stdout.split() == here
    assert [split_of(key, 0.1, 0.1) for key in "ghijk"] == ["train", "validation", "test", "train", "test"]
    shares = {split: here.count(split) / len(keys) for split in ("train", "validation", "test")}
    assert shares == pytest.approx({"train": 0.6, "validation": 0.1, "test": 0.3}, abs=0.02)


def test_chunk_layout(prepared):
    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    starts_bar = np.array(bar_start_table(tokenizer))
    bos, eos = tokenizer["BOS_None"], tokenizer["EOS_None"]
    dataset = load_from_disk(str(prepared["data"]))["train"]
    last_chunk = {}
    for row in dataset:
        last_chunk[row["source"]] = max(last_chunk.get(row["source"], 0), row["chunk"])
    for row in dataset:
        ids = row["input_ids"]
        assert len(ids) <= 256
        assert ids[0] == bos and ids[1] == composer_map.token_ids[row["composer"]]
        assert starts_bar[ids[2]], "every chunk starts at a bar line"
        assert (ids[-1] == eos) == (row["chunk"] == last_chunk[row["source"]])
        assert eos not in ids[:-1]


def test_chunk_bars_cuts_at_bar_lines_and_keeps_every_token():
    starts_bar = np.array([True, False])  # id 0 = Bar, id 1 = anything else
    ids = np.array([0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1])
    chunks = chunk_bars(ids, starts_bar, 5)
    assert [c.tolist() for c in chunks] == [[0, 1, 1, 0, 1], [0, 1, 1, 1, 1], [1, 1]]
    assert np.concatenate(chunks).tolist() == ids.tolist()


def test_bpe_shortens_and_decodes_to_the_same_notes(bach_files, tmp_path):
    paths = [f.path for f in bach_files]
    base, _ = build_tokenizer(TOKENIZER_SETTINGS, ["bach"])
    bpe, _ = build_tokenizer(TOKENIZER_SETTINGS, ["bach"])
    bpe.train(vocab_size=800, model="BPE", files_paths=paths)

    def notes(score):
        return sorted((n.time, n.pitch, n.duration) for t in score.tracks for n in t.notes)

    for path in paths:
        score = Score(path)
        plain_ids, bpe_ids = base.encode(score).ids, bpe.encode(score).ids
        assert len(bpe_ids) < 0.8 * len(plain_ids)
        a, b = base.decode(plain_ids), bpe.decode(bpe_ids)
        assert notes(a) == notes(b) and len(notes(a)) > 20
    bpe.save(tmp_path, filename="tokenizer.json")
    assert miditok.REMI(params=tmp_path / "tokenizer.json").vocab_size == 800


def test_metadata_labels_override_folders(tmp_path):
    root = write_midi_folder(tmp_path / "midi", {"a": 4, "b": 4}, broken=False)
    (tmp_path / "meta.csv").write_text("path,composer\n" + "".join(f"a/piece{i}.mid,zeta\n" for i in range(4)))
    args = PrepareArguments(
        midi_dir=str(root),
        metadata=str(tmp_path / "meta.csv"),
        output_dir=str(tmp_path / "d"),
        tokenizer_dir=str(tmp_path / "t"),
        vocab_size=0,
        min_pieces_per_composer=2,
        num_proc=1,
    )
    report = prepare(args, TOKENIZER_SETTINGS)
    assert [r["composer"] for r in report["composers"]["composers"]] == ["b", "zeta"]


def test_augmentation_only_on_train(tmp_path, midi_dir):
    args = PrepareArguments(
        midi_dir=str(midi_dir),
        output_dir=str(tmp_path / "d"),
        tokenizer_dir=str(tmp_path / "t"),
        vocab_size=0,
        max_seq_len=512,
        augment=True,
        augment_pitch_offsets=[-2, 3],
        num_proc=2,
    )
    prepare(args, TOKENIZER_SETTINGS)
    dataset = load_from_disk(str(tmp_path / "d"))
    train_aug = set(dataset["train"]["augmentation"])
    assert any(a.startswith("pitch-2") for a in train_aug) and any(a.startswith("pitch+3") for a in train_aug)
    assert set(dataset["validation"]["augmentation"]) == {""} and set(dataset["test"]["augmentation"]) == {""}
    originals = dataset["train"].filter(lambda r: r["augmentation"] == "")
    assert len(dataset["train"]) > 2 * len(originals)


def test_music21_corpus_default(tmp_path, bach_files):
    cache = bach_files[0].path.parent.parent
    args = PrepareArguments(
        composers="bach",
        max_files_per_composer=6,
        cache_dir=str(cache),
        min_pieces_per_composer=2,
        output_dir=str(tmp_path / "d"),
        tokenizer_dir=str(tmp_path / "t"),
        vocab_size=700,
        num_proc=1,
    )
    report = prepare(args, TOKENIZER_SETTINGS)
    assert report["files"]["kept"] == 6
    assert report["tokens_per_note"]["after_bpe"] < report["tokens_per_note"]["before_bpe"]
    card = (tmp_path / "d" / "README.md").read_text()
    assert "| bach | `COMPOSER_bach`" in card and "## Splits" in card


def test_overwrite_refused_then_replaced(tmp_path, midi_dir):
    out, tok = tmp_path / "d", tmp_path / "t"
    out.mkdir()
    (out / "keep.txt").write_text("previous results")
    args = [
        "--midi_dir",
        str(midi_dir),
        "--output_dir",
        str(out),
        "--tokenizer_dir",
        str(tok),
        "--vocab_size",
        "0",
        "--num_proc",
        "1",
    ]
    refused = run_script(*args)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --output_dir {out} already exists; pass --overwrite to replace it, or choose another folder"
    ]
    assert (out / "keep.txt").exists() and not tok.exists()
    done = run_script(*args, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert not (out / "keep.txt").exists() and (out / "dataset_dict.json").exists()
    assert "files: 31 seen, 27 kept, 4 skipped" in done.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folders left behind"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--midi_dir", "/nonexistent/midis"], "--midi_dir /nonexistent/midis: no such folder"),
        (["--metadata", "/nonexistent/meta.csv"], "--metadata /nonexistent/meta.csv: no such file"),
        (["--midi_dir", "{empty}"], "no usable MIDI files"),
        (["--midi_dir", "{midi}", "--metadata", "{badmeta}"], "row 1 needs non-empty 'path' and 'composer' columns"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, midi_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("file,who\nx.mid,y\n")
    args = [a.format(empty=tmp_path / "empty", midi=midi_dir, badmeta=tmp_path / "bad.csv") for a in args]
    result = run_script(
        *args, "--output_dir", str(tmp_path / "d"), "--tokenizer_dir", str(tmp_path / "t"), "--num_proc", "1"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "t").exists()


def test_push_to_hub_sends_dataset_card_and_tokenizer(prepared, monkeypatch):
    """The Hub is unreachable here: record what would be pushed and check it is complete."""
    from datasets import DatasetDict
    from huggingface_hub import HfApi

    from midilm.training.hub import push_dataset

    sent = {}
    monkeypatch.setattr(
        DatasetDict,
        "push_to_hub",
        lambda self, repo_id, **kw: sent.setdefault("splits", (repo_id, dict(self.num_rows))),
    )
    monkeypatch.setattr(HfApi, "upload_file", lambda self, **kw: sent.setdefault("card", kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: sent.setdefault("tokenizer", kw))
    push_dataset(prepared["data"], prepared["tokenizer"], "someone/midilm-test")
    repo, rows = sent["splits"]
    assert repo == "someone/midilm-test" and set(rows) == {"train", "validation", "test"} and all(rows.values())
    assert (
        sent["card"]["path_in_repo"] == "README.md"
        and "## Composers" in Path(sent["card"]["path_or_fileobj"]).read_text()
    )
    assert sent["tokenizer"]["repo_type"] == "dataset" and sent["tokenizer"]["path_in_repo"] == "tokenizer"
    tokenizer, composer_map = load_tokenizer(sent["tokenizer"]["folder_path"])
    assert composer_map.names == ["alpha", "beta", "OTHER"] and len(tokenizer) == 600


def sparse_piece(bars: int = 24) -> Score:
    """Music, but not like the rest of a corpus of make_piece()s: one short note per bar, so about 6
    tokens per bar against their 40 or more (an outlier to flag, not a file to skip)."""
    from symusic import Note, Track

    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, 100))
    score.tracks.append(Track(name="sparse", program=0))
    score.tracks[0].notes.extend(Note(bar * 4 * 480, 240, 60 + bar % 12, 80) for bar in range(bars))
    return score


# Real corpora hold files that crash the parser, files the tokenizer rejects, stray notes after
# hours of silence, out-of-range tracks, the same music under two names and music unlike the rest.
def write_troubled_folder(root: Path) -> Path:
    from symusic import Note, Track
    from test_scan import STRAY_TICK, with_notes_after

    write_midi_folder(root, {"alpha": 6, "beta": 6}, broken=False)
    (root / "beta" / "copy.mid").write_bytes((root / "alpha" / "piece0.mid").read_bytes())
    Score(root / "alpha" / "piece1.mid").resample(960).dump_midi(
        root / "beta" / "retimed.mid"
    )  # same notes, another resolution
    sparse_piece().dump_midi(root / "alpha" / "sparse.mid")
    trouble = root / "trouble"
    trouble.mkdir()
    make_piece(101).dump_midi(trouble / "crash.mid")
    for name, seed in (("raise-in-tokenizer", 102), ("encodes-to-nothing", 103)):
        score = make_piece(seed)
        score.tracks[0].name = name
        score.dump_midi(trouble / f"{name}.mid")
    with_notes_after(make_piece(104, bars=8), STRAY_TICK, 1).dump_midi(trouble / "stray.mid")
    out_of_range = Score(480)
    out_of_range.tracks.append(Track(program=0))
    out_of_range.tracks[0].notes.extend([Note(0, 480, 0, 80), Note(480, 480, 127, 80)])
    out_of_range.dump_midi(trouble / "out_of_range.mid")
    return root


@pytest.fixture(scope="module")
def troubled(tmp_path_factory) -> dict:
    """prepare() on the troubled folder, 2 workers, BPE from 3 files. Two faults are injected into
    miditok's encode (the workers are forked for this, so they inherit the patch): a track named
    `raise-in-tokenizer` raises, one named `encodes-to-nothing` encodes to zero tokens; and the
    test hook makes the worker that reads `crash.mid` die."""
    from midilm.data import prepare as prepare_module
    from midilm.data import scan as scan_module
    from midilm.data.scan import CRASH_HOOK_ENV

    root = write_troubled_folder(tmp_path_factory.mktemp("troubled"))
    out = tmp_path_factory.mktemp("troubled_out")
    original = miditok.REMI.encode
    seen_by_bpe = []

    def faulty_encode(self, score, *args, **kwargs):
        names = {t.name for t in score.tracks}
        if "raise-in-tokenizer" in names:
            raise RuntimeError("injected tokenizer fault")
        seq = original(self, score, *args, **kwargs)
        if "encodes-to-nothing" in names:
            seq.ids = []
        return seq

    class CountingIterator(prepare_module.BarWordsIterator):
        def __iter__(self):
            for words in super().__iter__():
                seen_by_bpe.append(words)
                yield words

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(miditok.REMI, "encode", faulty_encode)
        patch.setattr(prepare_module, "BarWordsIterator", CountingIterator)
        patch.setenv(CRASH_HOOK_ENV, "crash.mid")
        patch.setattr(scan_module, "START_METHOD", "fork")
        args = PrepareArguments(
            midi_dir=str(root),
            output_dir=str(out / "d"),
            tokenizer_dir=str(out / "t"),
            vocab_size=560,
            max_seq_len=256,
            num_proc=2,
            min_pieces_per_composer=2,
            bpe_max_files=3,
            validation_ratio=0.2,
            test_ratio=0.2,
        )
        report = prepare(args, TOKENIZER_SETTINGS)
    return {"report": report, "data": out / "d", "bpe_files": len(seen_by_bpe)}


def test_bad_files_are_reported_and_never_end_the_run(troubled):
    from midilm.data.scan import CRASHED

    report = troubled["report"]
    skipped = report["skipped_files"]
    assert skipped == {
        "trouble/crash.mid": CRASHED,
        "trouble/raise-in-tokenizer.mid": "tokenizer failed: RuntimeError: injected tokenizer fault",
        "trouble/encodes-to-nothing.mid": "no tokens (the tokenizer encoded nothing)",
        "trouble/out_of_range.mid": "no notes inside the tokenizer's pitch range (21-108)",
    }
    assert report["files"] == {"seen": 20, "kept": 14, "skipped": 4, "duplicates": 2, "cut": 1, "flagged": 1}
    sources = set().union(
        *(load_from_disk(str(troubled["data"]))[s]["source"] for s in ("train", "validation", "test"))
    )
    assert not sources & set(skipped), "a skipped piece is never in the data"
    assert "trouble/stray.mid" in sources and len(sources) == 14


def test_music_unlike_the_corpus_is_flagged_and_kept(troubled):
    """One note per bar among pieces of about ten: its tokens per bar lie outside the corpus's normal
    range, so the report flags it (with the figure and the range), and the data still holds it."""
    report = troubled["report"]
    low, high = report["normal_range"]["tokens_per_bar"]
    assert list(report["flagged_files"]) == ["alpha/sparse.mid"]
    reason = report["flagged_files"]["alpha/sparse.mid"]
    assert reason.startswith("tokens per bar ") and f"outside the corpus's normal {low:.1f}-{high:.1f}" in reason
    assert float(reason.split()[3]) < low
    sources = set().union(
        *(load_from_disk(str(troubled["data"]))[s]["source"] for s in ("train", "validation", "test"))
    )
    assert "alpha/sparse.mid" in sources


def test_stray_note_is_cut_and_costs_no_empty_bars(troubled):
    report = troubled["report"]
    assert report["cut_files"]["trouble/stray.mid"].startswith("cut 1 stray notes after ")
    dataset = load_from_disk(str(troubled["data"]))
    rows = [r for s in dataset for r in dataset[s] if r["source"] == "trouble/stray.mid"]
    assert (
        sum(r["n_base_tokens"] for r in rows) / sum(r["n_notes"] for r in rows)
        < 2 * report["tokens_per_note"]["before_bpe"]
    )
    assert report["tokens_per_note"]["before_bpe"] < 8


def test_duplicates_are_one_piece_in_one_split(troubled):
    report = troubled["report"]
    assert report["duplicate_files"] == {"beta/copy.mid": "alpha/piece0.mid", "beta/retimed.mid": "alpha/piece1.mid"}
    dataset = load_from_disk(str(troubled["data"]))
    in_split = {s: set(dataset[s]["source"]) for s in dataset}
    for duplicate, kept in report["duplicate_files"].items():
        assert sum(kept in sources for sources in in_split.values()) == 1
        assert not any(duplicate in sources for sources in in_split.values())


def test_bpe_learns_from_the_sample_only(troubled):
    assert troubled["report"]["bpe"] == {"training_files": 3, "max_files": 3, "seed": 0}
    assert troubled["bpe_files"] == 3


def test_bpe_sample_is_bounded_and_seeded():
    from midilm.data.prepare import Piece, bpe_sample

    pieces = [Piece(None, offset=i * 10, length=10, notes=1, bars=1, digest=str(i)) for i in range(50)]
    one, again, other = bpe_sample(pieces, 7, 0), bpe_sample(pieces, 7, 0), bpe_sample(pieces, 7, 1)
    assert len(one) == 7 and one == again and one != other
    assert [p.offset for p in one] == sorted(p.offset for p in one)
    assert bpe_sample(pieces, 100, 0) == pieces


def test_composer_names_as_people_write_them(named_prepared):
    from midilm.core.tokenizer import composer_token
    from midilm.sampling.generation import composer_names
    from midilm.sampling.sample_files import sample_stem

    names = named_prepared["names"]
    tokenizer, composer_map = load_tokenizer(named_prepared["tokenizer"])
    assert sorted(composer_map.names) == sorted(names)
    rows = json.loads((named_prepared["tokenizer"] / "composers.json").read_text())["composers"]
    assert {r["composer"] for r in rows} == set(names)
    for row in rows:
        assert tokenizer[row["id"]] == row["token"] == composer_token(row["composer"]) and row["token"].count("_") == 1
        for spelling in (
            row["composer"],
            row["composer"].upper(),
            row["token"],
            row["token"].removeprefix("COMPOSER_"),
        ):
            assert composer_map.id_of(spelling) == row["id"]
    assert load_from_disk(str(named_prepared["data"]))["train"].features["composer"].names == composer_map.names
    assert composer_names(composer_map, "Bach, Johann Sebastian,Dvořák, Чайковский") == [
        "Bach, Johann Sebastian",
        "Dvořák",
        "Чайковский",
    ]
    assert composer_map.id_of(unicodedata.normalize("NFD", "Dvořák")) == composer_map.id_of(
        "Dvořák"
    )  # decomposed, as macOS writes it
    assert (
        sample_stem("Bach, Johann Sebastian", 0) == "Bach, Johann Sebastian_0" and sample_stem("AC/DC", 1) == "AC-DC_1"
    )
    card = (named_prepared["data"] / "README.md").read_text()
    assert (
        "| Bach, Johann Sebastian | `COMPOSER_Bach-Johann-Sebastian`" in card
        and "| Чайковский | `COMPOSER_Чайковский`" in card
    )


def test_names_with_one_token_are_refused(tmp_path):
    from midilm.core.errors import InputError

    root = write_midi_folder(tmp_path / "midi", {"C.P.E. Bach": 2, "C P E Bach": 2}, broken=False)
    args = PrepareArguments(
        midi_dir=str(root),
        output_dir=str(tmp_path / "d"),
        tokenizer_dir=str(tmp_path / "t"),
        vocab_size=0,
        min_pieces_per_composer=1,
        num_proc=1,
    )
    with pytest.raises(
        InputError, match=r"composers 'C P E Bach' and 'C.P.E. Bach' would share the token COMPOSER_C-P-E-Bach"
    ):
        prepare(args, TOKENIZER_SETTINGS)
    assert not (tmp_path / "d").exists() and not (tmp_path / "t").exists()


def test_metadata_with_10k_rows_and_237_composers(tmp_path):
    """The labelling side at scale (no file is read): 10,000 rows, 237 composers of Zipf-like sizes,
    the --min_pieces_per_composer cut, OTHER, and a token per kept composer."""
    from collections import Counter

    from midilm.core.tokenizer import composer_tokens
    from midilm.data.prepare import collect_files, composer_vocabulary

    names = [f"Composer {i}, Given" if i % 3 else f"composer_{i:03d}" for i in range(237)]
    weights = [1 / (r + 1) for r in range(237)]
    labels = [names[k] for k in __import__("random").Random(0).choices(range(237), weights, k=10_000)]
    lines = ["path,composer"] + [f'"x/{i}.mid","{label}"' for i, label in enumerate(labels)]
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "midi").mkdir()
    args = PrepareArguments(
        midi_dir=str(tmp_path / "midi"),
        metadata=str(tmp_path / "meta.csv"),
        output_dir=str(tmp_path / "d"),
        tokenizer_dir=str(tmp_path / "t"),
    )
    files, skipped = collect_files(args)
    assert len(files) == 10_000 and not skipped
    counts = Counter(f.composer for f in files)
    assert counts == Counter(labels)
    composers, folded = composer_vocabulary(counts, 10)
    kept = [c for c in counts if counts[c] >= 10]
    assert composers == sorted(kept) + ["OTHER"] and 10 < len(kept) < 237
    assert all(folded[c] == "OTHER" for c in counts if counts[c] < 10)
    assert len(set(composer_tokens(composers))) == len(composers)
