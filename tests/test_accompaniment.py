"""Accompaniment: the paired dataset layout, windowed generation under a melody, generate.py --melody_midi,
bad melody files, and a tiny train + accompany round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    TOKENIZER_SETTINGS,
    assert_refused,
    load_script,
    make_piece,
    prepare_corpus,
    run_cli,
    save_random_model,
)
from datasets import load_from_disk
from symusic import Note, Score, TimeSignature, Track
from transformers import AutoModelForCausalLM

from midilm.core.melody import extract_melody
from midilm.core.tokenizer import (
    MELODY_TOKEN,
    bar_start_table,
    load_tokenizer,
    save_tokenizer,
    section_token_ids,
    vocab_base_tokens,
)
from midilm.data.arguments import PrepareArguments
from midilm.data.dataset import chunk_paired_bars, split_bars
from midilm.data.held_out import source_root
from midilm.metrics.accompaniment import accompaniment_metrics, harmonic_fit, melody_adherence
from midilm.sampling.accompaniment import accompany, load_melody, melody_prompt, plan_window
from midilm.sampling.bars import BarLimitLogitsProcessor
from midilm.sampling.generation import decode_ids
from midilm.sampling.grammar import RemiGrammar, count_syntax_errors
from midilm.sampling.settings import SamplingSettings

CONTEXT = 256


@pytest.fixture(scope="module")
def both(midi_dir, tmp_path_factory) -> dict:
    """`prepared` (conftest) again, with both tasks."""
    return prepare_corpus(midi_dir, tmp_path_factory.mktemp("both"), tasks="continuation,accompaniment")


@pytest.fixture(scope="module")
def model_dir(both, tmp_path_factory) -> Path:
    """A random-weight tiny Llama on that tokenizer, saved as train.py saves one."""
    out = tmp_path_factory.mktemp("acc_model") / "model_output"
    tokenizer, composer_map = load_tokenizer(both["tokenizer"])
    # midilm_tasks as train.py records the dataset's tasks
    return save_random_model(out, tokenizer, composer_map, CONTEXT, midilm_tasks=["continuation", "accompaniment"])


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def melody_file(path: Path, seed: int, bars: int) -> Path:
    """The melody track of a `make_piece` piece, alone in a file."""
    piece = make_piece(seed, bars=bars)
    piece.tracks = piece.tracks[:1]
    piece.dump_midi(path)
    return path


def note_set(score: Score) -> set[tuple[int, int]]:
    return {(n.time, n.pitch) for t in score.tracks for n in t.notes}


def bars_of(tokenizer, ids) -> list[np.ndarray]:
    return split_bars(np.asarray(ids, dtype=np.int64), np.asarray(bar_start_table(tokenizer)))


def time_signatures_per_bar(tokenizer, ids) -> list[str]:
    base = vocab_base_tokens(tokenizer)
    return [next(t for i in bar[:2] for t in base[i] if t.startswith("TimeSig_")) for bar in bars_of(tokenizer, ids)]


# ---- data ----------------------------------------------------------------------------------------


def test_section_tokens_are_special_and_never_merged(both):
    tokenizer, composer_map = load_tokenizer(both["tokenizer"])
    melody_id, full_id = section_token_ids(tokenizer)
    base = vocab_base_tokens(tokenizer)
    assert base[melody_id] == [MELODY_TOKEN] and base[full_id] == ["FULL_None"]
    assert not [i for i, item in enumerate(base) if len(item) > 1 and {"MELODY_None", "FULL_None"} & set(item)]
    assert {melody_id, full_id}.isdisjoint(composer_map.token_ids + [composer_map.none_id])


def test_paired_layout_and_bar_alignment(both):
    tokenizer, composer_map = load_tokenizer(both["tokenizer"])
    bos, eos = tokenizer["BOS_None"], tokenizer["EOS_None"]
    melody_id, full_id = section_token_ids(tokenizer)
    starts_bar = np.asarray(bar_start_table(tokenizer))
    grammar = RemiGrammar.for_tokenizer(tokenizer)
    dataset = load_from_disk(str(both["data"]))["train"]
    rows = [r for r in dataset if r["task"] == "accompaniment"]
    assert rows and {r["task"] for r in dataset} == {"continuation", "accompaniment"}
    last = {}
    for row in rows:
        last[row["source"]] = max(last.get(row["source"], 0), row["chunk"])
    for row in rows:
        ids = row["input_ids"]
        assert len(ids) <= CONTEXT
        assert ids[:3] == [bos, composer_map.token_ids[row["composer"]], melody_id]
        assert ids.count(melody_id) == 1 and ids.count(full_id) == 1
        split = ids.index(full_id)
        melody, full = ids[3:split], [i for i in ids[split + 1 :] if i != eos]
        assert starts_bar[melody[0]] and starts_bar[full[0]], "both sections start at a bar line"
        assert starts_bar[melody].sum() == starts_bar[full].sum(), "the sections hold the same bars"
        assert (ids[-1] == eos) == (row["chunk"] == last[row["source"]])
        assert grammar.first_violation(ids) is None and count_syntax_errors(tokenizer, ids) == 0.0
        # the melody's notes are the full section's notes of the same bars (make_piece marks its melody)
        assert note_set(decode_ids(tokenizer, melody)) <= note_set(decode_ids(tokenizer, full))


def test_continuation_rows_do_not_change(both, prepared):
    """Adding the accompaniment task leaves the continuation rows (and the default dataset) as they were."""
    old = load_from_disk(str(prepared["data"]))["train"]
    new = load_from_disk(str(both["data"]))["train"].filter(lambda r: r["task"] == "continuation")
    assert set(old["task"]) == {"continuation"}

    def key(row):
        return row["source"], row["chunk"]

    assert sorted((key(r), r["input_ids"]) for r in old) == sorted((key(r), r["input_ids"]) for r in new)
    assert both["report"]["splits"]["train"]["tasks"]["accompaniment"] > 0


def test_chunk_paired_bars_fits_both_sections():
    melody = [np.zeros(n) for n in (2, 2, 3, 1, 9, 1)]
    full = [np.zeros(n) for n in (5, 6, 4, 3, 30, 2)]
    # bar 4 (39 tokens) cannot fit 20 with any melody: left out, never cut
    assert chunk_paired_bars(melody, full, 20) == [(0, 2), (2, 4), (5, 6)]
    assert chunk_paired_bars(melody, full, 100) == [(0, 6)]


def test_bad_tasks_flag():
    from midilm.core.errors import InputError

    with pytest.raises(InputError, match="--tasks 'harmony'"):
        PrepareArguments(tasks="harmony")
    assert PrepareArguments(tasks="accompaniment, continuation").task_list() == ("accompaniment", "continuation")


# ---- generation ----------------------------------------------------------------------------------


def test_plan_window():
    assert plan_window([10] * 8, [], 512, 40.0) == (0, 8)  # all fits: one window
    a, b = plan_window([10] * 40, [40] * 20, 512, 40.0)
    assert b > 20 and 10 * (b - a) + 40 * (20 - a) + 40 * (b - 20) + 5 <= 512
    assert (20 - a) * 50 <= 256  # the bars read again take at most half the context
    assert plan_window([10] * 40, [40] * 20, 60, 400.0) == (20, 21)  # at least one new bar, even without room


def test_output_keeps_the_melody_and_its_bars(model, both, tmp_path):
    tokenizer, composer_map = load_tokenizer(both["tokenizer"])
    path = melody_file(tmp_path / "tune.mid", 11, bars=5)
    given = Score(path)
    prompt = load_melody(tokenizer, path)
    results = accompany(model, tokenizer, composer_map, prompt, ["alpha", "beta"], settings=SamplingSettings(seed=2))
    assert [r.composer for r in results] == ["alpha", "beta"]
    for result in results:
        kept = result.score.tracks[0]
        assert [(n.time, n.duration, n.pitch, n.velocity) for n in kept.notes] == [
            (n.time, n.duration, n.pitch, n.velocity) for n in given.tracks[0].notes
        ], "the melody, note for note"
        assert result.score.ticks_per_quarter == given.ticks_per_quarter
        assert list(result.score.time_signatures) == list(given.time_signatures) and list(result.score.tempos) == list(
            given.tempos
        )
        assert result.bars == prompt.num_bars == len(bars_of(tokenizer, result.ids))
        assert result.syntax_error_rate == 0.0
        onsets = [n.time for t in result.full.tracks for n in t.notes]
        assert max(onsets) < prompt.num_bars * 4 * given.ticks_per_quarter  # stops at the melody's last bar
        # the written parts are the generated ones less the notes that double the melody
        assert note_set(result.score) == note_set(given) | note_set(result.full)
        figures = result.metrics()
        assert 0.0 <= figures["melody_adherence"] <= 1.0 and figures["melody_notes"] == given.note_num()


def test_long_melody_is_generated_in_windows_and_follows_time_signatures(model, both, tmp_path):
    tokenizer, composer_map = load_tokenizer(both["tokenizer"])
    piece = make_piece(12, bars=20)
    piece.tracks = piece.tracks[:1]
    piece.time_signatures = [TimeSignature(0, 4, 4), TimeSignature(4 * 4 * 480, 3, 4)]  # bars 5.. in 3/4
    prompt = melody_prompt(tokenizer, piece)
    assert sum(len(b) for b in prompt.bars) > CONTEXT // 2
    (result,) = accompany(
        model, tokenizer, composer_map, prompt, ["beta"], settings=SamplingSettings(seed=0, guidance_scale=1.5)
    )
    assert result.windows > 1
    assert result.bars == prompt.num_bars == len(bars_of(tokenizer, result.ids))
    assert time_signatures_per_bar(tokenizer, result.ids) == ["TimeSig_4/4"] * 4 + ["TimeSig_3/4"] * (
        prompt.num_bars - 4
    )
    assert result.syntax_error_rate == 0.0


def test_cfg_rows_swap_only_the_composer(model, both, tmp_path):
    tokenizer, composer_map = load_tokenizer(both["tokenizer"])
    prompt = load_melody(tokenizer, melody_file(tmp_path / "tune.mid", 13, bars=3))
    seen = []

    class Recorder:
        config, generation_config, device = model.config, model.generation_config, model.device

        def generate(self, input_ids, **kwargs):
            seen.append(input_ids.clone())
            return model.generate(input_ids, **kwargs)

    first = accompany(
        Recorder(), tokenizer, composer_map, prompt, ["alpha"], settings=SamplingSettings(seed=4, guidance_scale=3.0)
    )
    rows = seen[0]
    assert rows.shape[0] == 2
    assert rows[1, 1] == composer_map.none_id and rows[0, 1] == composer_map.id_of("alpha")
    assert torch.equal(rows[0, 2:], rows[1, 2:]), "the unconditional row keeps the melody"
    again = accompany(
        model, tokenizer, composer_map, prompt, ["alpha"], settings=SamplingSettings(seed=4, guidance_scale=3.0)
    )
    assert first[0].ids == again[0].ids


def test_bar_limit_moves_the_next_bar_line_to_eos(both):
    tokenizer, _ = load_tokenizer(both["tokenizer"])
    melody_id, full_id = section_token_ids(tokenizer)
    eos = tokenizer["EOS_None"]
    starts_bar = torch.tensor(bar_start_table(tokenizer))
    bar = int(starts_bar.nonzero()[0])
    other = int((~starts_bar).nonzero()[-1])
    prompt = torch.tensor([[1, 3, melody_id, bar, full_id, bar], [1, 3, melody_id, bar, full_id, bar]])
    processor = BarLimitLogitsProcessor(tokenizer, full_id, eos, torch.tensor([1, 2]), torch.full((2, 2), -1))
    scores = processor(prompt, torch.zeros(2, len(tokenizer)))
    assert torch.isneginf(scores[:, other]).all(), "a window's first token begins a bar"
    scores = processor(torch.cat([prompt, torch.tensor([[other], [other]])], dim=1), torch.zeros(2, len(tokenizer)))
    assert torch.isneginf(scores[0, starts_bar]).all() and scores[0, eos] == pytest.approx(
        np.log(int(starts_bar.sum()) + 1)
    )
    assert torch.isneginf(scores[1, eos]) and (scores[1, starts_bar] == 0).all()


def test_metrics_on_a_real_piece():
    piece = make_piece(21, bars=4)
    melody = extract_melody(piece).score
    assert melody_adherence(melody, piece) == 1.0
    figures = accompaniment_metrics(melody, piece)
    assert figures["accompaniment_notes"] == piece.note_num() - melody.note_num()
    assert 0.5 < figures["harmonic_fit"] <= 1.0 and figures["key_fit"] <= figures["harmonic_fit"]
    assert harmonic_fit(melody, piece) == figures["harmonic_fit"]
    off = Score(piece.ticks_per_quarter)
    track = Track(program=0)
    track.notes.extend(Note(n.time, n.duration, n.pitch + 1, 80) for n in piece.tracks[1].notes)  # a semitone off
    off.tracks.append(track)
    assert melody_adherence(melody, off) == 0.0 and harmonic_fit(melody, off) < figures["harmonic_fit"]


# ---- generate.py ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    return load_script("generate.py")


def test_cli_writes_the_accompaniment(script, model_dir, tmp_path, monkeypatch, capsys):
    path = melody_file(tmp_path / "tune.mid", 14, bars=4)
    out = tmp_path / "out"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--melody_midi",
            str(path),
            "--composer",
            "alpha",
            "--output_dir",
            str(out),
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["accompaniment_alpha_0.json", "accompaniment_alpha_0.mid"]
    record = json.loads((out / "accompaniment_alpha_0.json").read_text())
    assert record["melody_source"] == "track 'melody'" and record["bars"] == 4 and record["syntax_error_rate"] == 0.0
    assert {"melody_adherence", "harmonic_fit", "key", "tokens", "windows"} <= set(record)
    written = Score(out / "accompaniment_alpha_0.mid")
    assert [(n.time, n.pitch, n.duration) for n in written.tracks[0].notes] == [
        (n.time, n.pitch, n.duration) for n in Score(path).tracks[0].notes
    ]
    assert "warning" not in capsys.readouterr().err


def test_cli_chords_give_one_warning_line(script, model_dir, tmp_path, monkeypatch, capsys):
    piece = make_piece(15, bars=3)
    melody = [(n.time, n.pitch) for n in piece.tracks[0].notes]
    piece.tracks = piece.tracks[:1]
    piece.tracks[0].name = "right hand"  # one unmarked track whose every third note is a chord
    piece.tracks[0].notes.extend([Note(n.time, n.duration, n.pitch - 7, 60) for n in piece.tracks[0].notes[::3]])
    piece.dump_midi(tmp_path / "chords.mid")
    out = tmp_path / "out"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--melody_midi",
            str(tmp_path / "chords.mid"),
            "--output_dir",
            str(out),
        )
        == 0
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "chords" in warnings[0] and "top voice" in warnings[0]
    written = Score(out / "accompaniment_none_0.mid")
    assert [(n.time, n.pitch) for n in written.tracks[0].notes] == melody


def continuation_model(model_dir: Path, root: Path) -> Path:
    """The same model folder, recorded as trained on continuation rows only (its tokenizer still has
    the MELODY/FULL tokens, as every midilm tokenizer does)."""
    import shutil

    out = root / "continuation"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "midilm_tasks": ["continuation"]}))
    return out


def no_sections_model(model_dir: Path, root: Path) -> Path:
    """A model folder from before the accompaniment task: its tokenizer has no section tokens and
    its config.json no `midilm_tasks`."""
    import shutil

    import miditok

    from midilm.core.tokenizer import make_tokenizer_config

    out = root / "old"
    shutil.copytree(model_dir, out)
    _, composer_map = load_tokenizer(out)
    config = make_tokenizer_config(TOKENIZER_SETTINGS, composer_map.names)
    config.special_tokens = [t for t in config.special_tokens if t not in ("MELODY_None", "FULL_None")]
    old = miditok.REMI(config)
    save_tokenizer(old, composer_map, out)
    model_config = json.loads((out / "config.json").read_text())
    model_config.pop("midilm_tasks")
    (out / "config.json").write_text(json.dumps({**model_config, "vocab_size": len(old)}))
    return out


def short_context_model(model_dir: Path, root: Path) -> Path:
    import shutil

    out = root / "short"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    return out


BAD_MELODIES = {
    "empty file": ("{tmp}/empty.mid", [], "empty file"),
    "corrupt file": ("{tmp}/corrupt.mid", [], "not a valid MIDI file"),
    "missing file": ("{tmp}/absent.mid", [], "no such file"),
    "no notes": ("{tmp}/silent.mid", [], "no notes"),
    "drums only": ("{tmp}/drums.mid", [], "no pitched notes"),
    "out of range": ("{tmp}/high.mid", [], "none of its notes is in the tokenizer's pitch range"),
    "with a prompt": ("{tmp}/good.mid", ["--prompt_midi", "{tmp}/good.mid"], "choose one"),
    "unknown composer": ("{tmp}/good.mid", ["--composer", "chopin"], "unknown composer 'chopin'"),
    "bar longer than the context": (
        "{tmp}/good.mid",
        ["--model_dir", "{short}"],
        "cannot fit the model's context of 8 tokens",
    ),
    "continuation-only model": (
        "{tmp}/good.mid",
        ["--model_dir", "{continuation}"],
        "--model_dir {continuation}: this model was trained on continuation rows only, never on accompaniment; "
        "prepare the data with --tasks continuation,accompaniment and train it again",
    ),
    "model from before the task": (
        "{tmp}/good.mid",
        ["--model_dir", "{old}"],
        "--model_dir {old}: this model was trained on continuation rows only",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MELODIES))
def test_bad_melody_is_one_line_exit_2_and_leaves_nothing(case, script, model_dir, tmp_path, monkeypatch, capsys):
    path, extra, message = BAD_MELODIES[case]
    places = {"tmp": tmp_path}
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "corrupt.mid").write_text("not a MIDI file\n")
    Score(480).dump_midi(tmp_path / "silent.mid")
    drums = Score(480)
    drums.tracks.append(Track(name="kit", is_drum=True))
    drums.tracks[0].notes.append(Note(0, 120, 36, 100))
    drums.dump_midi(tmp_path / "drums.mid")
    high = Score(480)
    high.tracks.append(Track(name="melody", program=0))
    high.tracks[0].notes.append(Note(0, 480, 120, 100))
    high.dump_midi(tmp_path / "high.mid")
    melody_file(tmp_path / "good.mid", 16, bars=2)
    if "{short}" in extra:
        places["short"] = short_context_model(model_dir, tmp_path / "models")
    if "{old}" in extra:
        places["old"] = no_sections_model(model_dir, tmp_path / "models")
    if "{continuation}" in extra:
        places["continuation"] = continuation_model(model_dir, tmp_path / "models")
    argv = ["--melody_midi", path.format(**places), *[a.format(**places) for a in extra]]
    if "--model_dir" not in argv:
        argv = ["--model_dir", str(model_dir), *argv]
    assert_refused(
        script,
        monkeypatch,
        capsys,
        tmp_path,
        [*argv, "--output_dir", str(tmp_path / "samples")],
        message.format(**places),
    )


# ---- train + accompany ---------------------------------------------------------------------------


def test_tiny_train_then_accompany(both, script, tmp_path, monkeypatch):
    """train.py on the paired data with no flag of its own, then generate.py --melody_midi on the result."""
    out = tmp_path / "model_output"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "--dataset_dir",
        str(both["data"]),
        "--tokenizer_dir",
        str(both["tokenizer"]),
        "--output_dir",
        str(out),
        "--max_seq_len",
        str(CONTEXT),
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "3e-3",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "10",
        "--dataloader_num_workers",
        "0",
        "--max_steps",
        "30",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--samples_per_composer",
        "0",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    path = melody_file(tmp_path / "held_out.mid", 17, bars=4)
    samples = tmp_path / "samples"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(out),
            "--melody_midi",
            str(path),
            "--composer",
            "beta",
            "--num_samples",
            "2",
            "--output_dir",
            str(samples),
        )
        == 0
    )
    for i in range(2):
        record = json.loads((samples / f"accompaniment_beta_{i}.json").read_text())
        assert record["bars"] == 4 and record["syntax_error_rate"] == 0.0 and record["melody_adherence"] is not None
        written = Score(samples / f"accompaniment_beta_{i}.mid")
        assert [(n.time, n.pitch) for n in written.tracks[0].notes] == [
            (n.time, n.pitch) for n in Score(path).tracks[0].notes
        ]
    # the same model continues music too (it was trained on both tasks)
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(out),
            "--composer",
            "beta",
            "--max_new_tokens",
            "32",
            "--output_dir",
            str(samples),
        )
        == 0
    )
    assert json.loads((samples / "beta_0.json").read_text())["syntax_error_rate"] == 0.0


def test_held_out_piece_is_a_file_of_that_split(both):
    from midilm.data.held_out import held_out_piece

    path = held_out_piece(both["data"], "validation", composer="alpha")
    sources = set(load_from_disk(str(both["data"]))["validation"]["source"])
    assert path.is_file() and any(str(path).endswith(s) for s in sources)


# ---- evaluation report ---------------------------------------------------------------------------


def test_evaluation_accompanies_held_out_melodies(both, model_dir, tmp_path):
    """evaluate_samples.py on a paired dataset: trained, random-weight and real figures for the same melodies."""
    from midilm.evaluation.arguments import EvaluateArguments
    from midilm.evaluation.report import write_report
    from midilm.evaluation.run import evaluate

    args = EvaluateArguments(
        model_dir=str(model_dir),
        dataset_dir=str(both["data"]),
        output_dir=str(tmp_path / "eval"),
        num_samples_per_composer=1,
        max_new_tokens=16,
        guidance_scales="",
        accompaniment_pieces=1,
    )
    report = evaluate(args)
    section = report["accompaniment"]
    held_out = load_from_disk(str(both["data"]))["validation"]
    composers = held_out.features["composer"].names
    assert {e["composer"] for e in section["pieces"]} == {composers[c] for c in held_out["composer"]}
    assert set(section["mean"]) == {"trained", "random", "real"}
    for entry in section["pieces"]:
        assert entry["source"] in held_out["source"]
        assert entry["real"]["melody_adherence"] == 1.0  # the real piece holds its own melody
        for name in ("trained", "random"):
            assert entry[name]["syntax_error_rate"] == 0.0 and 0.0 <= entry[name]["melody_adherence"] <= 1.0
    # the likelihood is measured on continuation rows only
    assert report["likelihood"]["rows"] == sum(t == "continuation" for t in held_out["task"])
    write_report(report, tmp_path / "eval", overwrite=False)
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "## Accompaniment" in markdown and markdown.count(section["pieces"][0]["source"]) == 3
    written = sorted((tmp_path / "eval" / "samples" / "accompaniment_trained").glob("*.mid"))
    assert len(written) == len(section["pieces"])
    first = section["pieces"][0]
    melody = melody_prompt(
        load_tokenizer(both["tokenizer"])[0], Score(source_root(both["data"]) / first["source"])
    ).melody
    harmonized = Score(tmp_path / "eval" / "samples" / "accompaniment_trained" / f"{first['composer']}_0.mid")
    assert [(n.time, n.pitch) for n in harmonized.tracks[0].notes] == [
        (n.time, n.pitch) for n in melody.tracks[0].notes
    ]
