"""prepare_dataset.py: labels, broken files, splits, chunk layout, BPE, augmentation, safe outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import miditok
import numpy as np
import pytest
from conftest import REPO, TOKENIZER_SETTINGS, write_midi_folder
from datasets import load_from_disk
from symusic import Score

from midilm.dataset import chunk_bars, split_of
from midilm.prepare import PrepareArguments, prepare
from midilm.tokenizer import bar_start_table, build_tokenizer, load_tokenizer


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "prepare_dataset.py"), *args], cwd=cwd, capture_output=True, text=True)


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
    assert report["files"] == {"seen": 31, "kept": 27, "skipped": 4}


def test_no_piece_in_two_splits_and_split_is_deterministic(prepared):
    dataset = load_from_disk(str(prepared["data"]))
    sources = {split: set(dataset[split]["source"]) for split in dataset}
    assert all(sources.values())
    assert not sources["train"] & sources["validation"]
    assert not sources["train"] & sources["test"]
    assert not sources["validation"] & sources["test"]
    assert split_of("alpha/piece0.mid", 0.1, 0.1) == split_of("alpha/piece0.mid", 0.1, 0.1)


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
    for path in paths:
        score = Score(path)
        plain_ids, bpe_ids = base.encode(score).ids, bpe.encode(score).ids
        assert len(bpe_ids) < 0.8 * len(plain_ids)
        a, b = base.decode(plain_ids), bpe.decode(bpe_ids)
        notes = lambda s: sorted((n.time, n.pitch, n.duration) for t in s.tracks for n in t.notes)
        assert notes(a) == notes(b) and len(notes(a)) > 20
    bpe.save(tmp_path, filename="tokenizer.json")
    assert miditok.REMI(params=tmp_path / "tokenizer.json").vocab_size == 800


def test_metadata_labels_override_folders(tmp_path):
    root = write_midi_folder(tmp_path / "midi", {"a": 4, "b": 4}, broken=False)
    (tmp_path / "meta.csv").write_text("path,composer\n" + "".join(f"a/piece{i}.mid,zeta\n" for i in range(4)))
    args = PrepareArguments(midi_dir=str(root), metadata=str(tmp_path / "meta.csv"), output_dir=str(tmp_path / "d"),
                            tokenizer_dir=str(tmp_path / "t"), vocab_size=0, min_pieces_per_composer=2, num_proc=1)
    report = prepare(args, TOKENIZER_SETTINGS)
    assert [r["composer"] for r in report["composers"]["composers"]] == ["b", "zeta"]


def test_augmentation_only_on_train(tmp_path, midi_dir):
    args = PrepareArguments(midi_dir=str(midi_dir), output_dir=str(tmp_path / "d"), tokenizer_dir=str(tmp_path / "t"),
                            vocab_size=0, max_seq_len=512, augment=True, augment_pitch_offsets=[-2, 3], num_proc=2)
    prepare(args, TOKENIZER_SETTINGS)
    dataset = load_from_disk(str(tmp_path / "d"))
    train_aug = set(dataset["train"]["augmentation"])
    assert any(a.startswith("pitch-2") for a in train_aug) and any(a.startswith("pitch+3") for a in train_aug)
    assert set(dataset["validation"]["augmentation"]) == {""} and set(dataset["test"]["augmentation"]) == {""}
    originals = dataset["train"].filter(lambda r: r["augmentation"] == "")
    assert len(dataset["train"]) > 2 * len(originals)


def test_music21_corpus_default(tmp_path, bach_files):
    cache = bach_files[0].path.parent.parent
    args = PrepareArguments(composers="bach", max_files_per_composer=6, cache_dir=str(cache), min_pieces_per_composer=2,
                            output_dir=str(tmp_path / "d"), tokenizer_dir=str(tmp_path / "t"), vocab_size=700, num_proc=1)
    report = prepare(args, TOKENIZER_SETTINGS)
    assert report["files"]["kept"] == 6
    assert report["tokens_per_note"]["after_bpe"] < report["tokens_per_note"]["before_bpe"]
    card = (tmp_path / "d" / "README.md").read_text()
    assert "| bach | `COMPOSER_bach`" in card and "## Splits" in card


def test_overwrite_refused_then_replaced(tmp_path, midi_dir):
    out, tok = tmp_path / "d", tmp_path / "t"
    out.mkdir()
    (out / "keep.txt").write_text("previous results")
    args = ["--midi_dir", str(midi_dir), "--output_dir", str(out), "--tokenizer_dir", str(tok), "--vocab_size", "0", "--num_proc", "1"]
    refused = run_script(*args)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"error: --output_dir {out} already exists; pass --overwrite to replace it, or choose another folder"]
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
    result = run_script(*args, "--output_dir", str(tmp_path / "d"), "--tokenizer_dir", str(tmp_path / "t"), "--num_proc", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "t").exists()


def test_push_to_hub_sends_dataset_card_and_tokenizer(prepared, monkeypatch):
    """The Hub is unreachable here: record what would be pushed and check it is complete."""
    from datasets import DatasetDict
    from huggingface_hub import HfApi

    from midilm.hub import push_dataset

    sent = {}
    monkeypatch.setattr(DatasetDict, "push_to_hub", lambda self, repo_id, **kw: sent.setdefault("splits", (repo_id, dict(self.num_rows))))
    monkeypatch.setattr(HfApi, "upload_file", lambda self, **kw: sent.setdefault("card", kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: sent.setdefault("tokenizer", kw))
    push_dataset(prepared["data"], prepared["tokenizer"], "someone/midilm-test")
    repo, rows = sent["splits"]
    assert repo == "someone/midilm-test" and set(rows) == {"train", "validation", "test"} and all(rows.values())
    assert sent["card"]["path_in_repo"] == "README.md" and "## Composers" in Path(sent["card"]["path_or_fileobj"]).read_text()
    assert sent["tokenizer"]["repo_type"] == "dataset" and sent["tokenizer"]["path_in_repo"] == "tokenizer"
    tokenizer, composer_map = load_tokenizer(sent["tokenizer"]["folder_path"])
    assert composer_map.names == ["alpha", "beta", "OTHER"] and len(tokenizer) == 600
