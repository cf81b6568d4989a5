"""midilm.sampling.sample_files: names, the refusal to overwrite, the JSON record, and all-or-nothing writes."""

import json

import pytest
from symusic import Note, Score, Track

from midilm.core.errors import InputError
from midilm.sampling import sample_files
from midilm.sampling.sample_files import accompaniment_files, output_files, write_staged


def score(pitch: int = 60) -> Score:
    out = Score(480)
    track = Track(program=0)
    track.notes.append(Note(0, 480, pitch, 80))
    out.tracks.append(track)
    return out


def test_file_names_count_per_composer_and_carry_the_prefix(tmp_path):
    files = output_files(["bach", "mozart", "bach"], tmp_path, wav=False, png=True, overwrite=False)
    assert [f[".mid"].name for f in files] == ["bach_0.mid", "mozart_0.mid", "bach_1.mid"]
    assert list(files[0]) == [".mid", ".json", ".png"]
    (accompanied,) = accompaniment_files(["NONE"], tmp_path, wav=False, png=False, overwrite=False)
    assert accompanied[".mid"].name == "accompaniment_none_0.mid"


def test_existing_files_are_replaced_only_with_overwrite(tmp_path):
    (tmp_path / "bach_0.json").write_text("{}")
    with pytest.raises(InputError, match=r"bach_0.json already exists \(1 files would be replaced\); pass --overwrite"):
        output_files(["bach"], tmp_path, wav=False, png=False, overwrite=False)
    assert output_files(["bach"], tmp_path, wav=False, png=False, overwrite=True)


def test_the_record_keeps_its_tokens_on_one_line(tmp_path):
    (files,) = output_files(["bach"], tmp_path / "out", wav=False, png=False, overwrite=False)
    write_staged([files], [score()], [{"composer": "bach", "settings": {"seed": 0}, "tokens": [1, 5, 20, 2]}])
    text = files[".json"].read_text()
    assert json.loads(text) == {"composer": "bach", "settings": {"seed": 0}, "tokens": [1, 5, 20, 2]}
    assert '  "tokens": [1, 5, 20, 2]\n}' in text
    assert Score(files[".mid"]).note_num() == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bach_0.json",
        "bach_0.mid",
    ]  # nothing staged is left


def test_a_failure_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken(score, path):
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(sample_files, "piano_roll_png", broken)
    files = output_files(["bach", "bach"], tmp_path, wav=False, png=True, overwrite=False)
    with pytest.raises(RuntimeError, match="the renderer broke"):
        write_staged(files, [score(60), score(62)], [{"composer": "bach"}, {"composer": "bach"}])
    assert list(tmp_path.iterdir()) == []
