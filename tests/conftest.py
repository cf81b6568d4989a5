"""Shared fixtures: real MIDI files written with symusic, a few music21 corpus pieces, and one
prepared dataset + tokenizer that the training and generation tests reuse."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Test models are tiny: a second torch thread only adds spin-waiting, and on a busy 2-core
    machine two spinning threads were seen to make generate() up to 100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokenizer_settings() -> dict:
    from midilm.core.tokenizer import tokenizer_settings

    return tokenizer_settings(json.loads((REPO / "config.json").read_text()).get("tokenizer"))


# What prepare_dataset.py in the clone builds its tokenizer with: the package's defaults and config.json's overrides.
TOKENIZER_SETTINGS = _tokenizer_settings()


def load_script(name: str):
    """A top-level script (`generate.py`, `app.py`) imported as a module, to call its main() in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{Path(name).stem}_script", REPO / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(script, monkeypatch, *args: str) -> int:
    """A script's main() as `python <script> ARGS` runs it (one-line errors, exit codes); returns the exit code."""
    import sys

    monkeypatch.setattr(sys, "argv", [Path(script.__file__).name, *args])
    try:
        script.run(script.main)
    except SystemExit as exit_:
        return exit_.code
    return 0


def assert_refused(script, monkeypatch, capsys, root: Path, argv: list[str], message: str) -> None:
    """Bad input to a script: exit code 2, one `error:` line naming the problem, nothing under `root` touched."""
    before = sorted(root.rglob("*"))
    code = run_cli(script, monkeypatch, *argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert sorted(root.rglob("*")) == before  # no sample, no partial file, no staging folder


def save_random_model(
    out: Path, tokenizer, composer_map, context: int, max_new_tokens: int | None = None, **config_keys
) -> Path:
    """A tiny Llama with random weights (seed 0) on `tokenizer`, saved as train.py saves a model folder;
    `config_keys` are set on its config (e.g. midilm_tasks), `max_new_tokens` on its generation defaults."""
    import torch
    from transformers import AutoModelForCausalLM

    from midilm.core.modeling import build_config, generation_config
    from midilm.core.tokenizer import save_tokenizer

    config = build_config("llama", "tiny", tokenizer, composer_map, context)
    for key, value in config_keys.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    defaults = generation_config(config)
    if max_new_tokens is not None:
        defaults.max_new_tokens = max_new_tokens
    defaults.save_pretrained(out)
    save_tokenizer(tokenizer, composer_map, out)
    return out


def train_until_killed(args: list[str], out: Path, checkpoint: str = "checkpoint-10", timeout: float = 240) -> None:
    """Start train.py with `args` and SIGKILL it once `out/checkpoint` is complete (trainer_state.json written)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while time.time() < deadline and not (out / checkpoint / "trainer_state.json").exists():
        assert process.poll() is None, "training ended before its first checkpoints"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def make_piece(seed: int, bars: int = 8, tracks: int = 2, tpq: int = 480) -> Score:
    """A small multi-voice piece: a melody on a random walk over a scale, plus block chords."""
    rng = random.Random(seed)
    score = Score(tpq)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, rng.choice([80, 100, 120])))
    scale = [0, 2, 4, 5, 7, 9, 11]
    root = rng.choice([48, 50, 53, 55])
    melody = Track(name="melody", program=0)
    pitch = 7
    for beat in range(bars * 4):
        for half in range(rng.choice([1, 2])):
            pitch = max(0, min(14, pitch + rng.choice([-2, -1, 1, 2])))
            step = tpq // (2 if half or rng.random() < 0.5 else 1)
            note_pitch = root + 12 + 12 * (pitch // 7) + scale[pitch % 7]
            melody.notes.append(Note(beat * tpq + half * tpq // 2, step, note_pitch, rng.randint(60, 100)))
    score.tracks.append(melody)
    for t in range(1, tracks):
        chords = Track(name=f"chords{t}", program=[0, 48, 32][t % 3])
        for bar in range(bars):
            degree = rng.choice([0, 3, 4, 5])
            for k in (0, 2, 4):
                p = root + scale[(degree + k) % 7] - 12 * (t - 1)
                chords.notes.append(Note(bar * 4 * tpq, 4 * tpq, p, 70))
        score.tracks.append(chords)
    return score


def write_midi_folder(root: Path, composers: dict[str, int], broken: bool = True) -> Path:
    """`root/<composer>/<n>.mid` pieces, plus unusable files when `broken`."""
    seed = 0
    for composer, count in composers.items():
        (root / composer).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            make_piece(seed, bars=6 + seed % 5).dump_midi(root / composer / f"piece{i}.mid")
    if broken:
        (root / "broken").mkdir(exist_ok=True)
        (root / "broken" / "empty.mid").write_bytes(b"")
        (root / "broken" / "text.MID").write_text("this is not a MIDI file\n")
        good = (root / next(iter(composers)) / "piece0.mid").read_bytes()
        (root / "broken" / "truncated.midi").write_bytes(good[: len(good) // 3])
        silent = Score(480)
        silent.tracks.append(Track(name="nothing"))
        silent.dump_midi(root / "broken" / "silent.mid")
    return root


@pytest.fixture(scope="session")
def midi_dir(tmp_path_factory) -> Path:
    """Two composers with 12 pieces each, one with 3 (folded into OTHER), and four broken files."""
    return write_midi_folder(tmp_path_factory.mktemp("midi"), {"alpha": 12, "beta": 12, "gamma": 3})


def prepare_corpus(midi_dir: Path, out: Path, **extra) -> dict:
    """prepare_dataset.py on `midi_dir` into `out` at the suite's sizes (`extra`: other PrepareArguments, e.g.
    tasks): paths of its tokenizer and dataset, and its report."""
    from midilm.data.arguments import PrepareArguments
    from midilm.data.prepare import prepare

    args = PrepareArguments(
        midi_dir=str(midi_dir),
        output_dir=str(out / "data"),
        tokenizer_dir=str(out / "tokenizer"),
        vocab_size=600,
        max_seq_len=256,
        num_proc=2,
        validation_ratio=0.15,
        test_ratio=0.15,
        **extra,
    )
    report = prepare(args, TOKENIZER_SETTINGS)
    return {"data": out / "data", "tokenizer": out / "tokenizer", "report": report, "root": out}


@pytest.fixture(scope="session")
def prepared(midi_dir, tmp_path_factory) -> dict:
    """prepare_dataset.py run once on `midi_dir`: paths of its tokenizer and dataset, and its report."""
    return prepare_corpus(midi_dir, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="session")
def prepared_infill(midi_dir, tmp_path_factory) -> dict:
    """`prepared` with --tasks continuation,infill."""
    return prepare_corpus(midi_dir, tmp_path_factory.mktemp("prepared_infill"), tasks="continuation,infill")


@pytest.fixture(scope="session")
def tiny_model(prepared, tmp_path_factory) -> Path:
    """train.py run once on `prepared` (40 steps, no evaluation): the model the evaluation tests judge
    and the fine-tuning tests build on."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tiny_train") / "model_output"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--dataset_dir",
            str(prepared["data"]),
            "--tokenizer_dir",
            str(prepared["tokenizer"]),
            "--output_dir",
            str(out),
            "--max_seq_len",
            "256",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "3e-3",
            "--warmup_steps",
            "0",
            "--dataloader_num_workers",
            "0",
            "--max_steps",
            "40",
            "--samples_per_composer",
            "0",
            "--eval_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def bach_files(tmp_path_factory):
    """Six Bach chorales from the music21 corpus, converted to MIDI in a test cache."""
    from midilm.data.corpus import music21_corpus_files

    files, failures = music21_corpus_files(["bach"], 6, 2, cache_dir=tmp_path_factory.mktemp("m21cache"))
    assert files and not failures
    return files


# Composer folder names as people write them: commas, underscores, dots, accents, another script.
NAMED_COMPOSERS = ["Bach, Johann Sebastian", "composer_000", "C.P.E. Bach", "Dvořák", "Saint-Saëns", "Чайковский"]


@pytest.fixture(scope="session")
def named_prepared(tmp_path_factory) -> dict:
    """prepare_dataset.py run once on folders named `NAMED_COMPOSERS` (4 pieces each, each composer
    keeps its token): paths of its tokenizer and dataset, its report and the composers' names.
    Small enough to train a few steps on and generate by name."""
    from midilm.data.arguments import PrepareArguments
    from midilm.data.prepare import prepare

    midi = write_midi_folder(tmp_path_factory.mktemp("named_midi"), {name: 4 for name in NAMED_COMPOSERS}, broken=False)
    out = tmp_path_factory.mktemp("named_prepared")
    args = PrepareArguments(
        midi_dir=str(midi),
        output_dir=str(out / "data"),
        tokenizer_dir=str(out / "tokenizer"),
        vocab_size=600,
        max_seq_len=256,
        num_proc=2,
        min_pieces_per_composer=2,
        validation_ratio=0.2,
        test_ratio=0.1,
    )
    report = prepare(args, TOKENIZER_SETTINGS)
    return {
        "data": out / "data",
        "tokenizer": out / "tokenizer",
        "report": report,
        "root": out,
        "midi": midi,
        "names": NAMED_COMPOSERS,
    }
