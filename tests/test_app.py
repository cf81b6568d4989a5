"""app.py and midilm.app: the page served on loopback and driven through gradio_client, as a Space's API
users drive it: generate (and reproduce it with the command line the page shows), continue an upload, rewrite bars
of an upload (infill) and its refusals, bad uploads and over-long requests, progress and warnings, queued requests, a
bad model folder at start."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import sys
import threading
from pathlib import Path

import gradio as gr
import huggingface_hub
import pytest
import torch
from conftest import TOKENIZER_SETTINGS, load_script, make_piece, run_cli
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from symusic import Score
from transformers import AutoModelForCausalLM

from midilm.app import LONGEST_CONTEXTS, build_app
from midilm.app_messages import length_note
from midilm.core.modeling import build_config, generation_config
from midilm.core.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer
from midilm.sampling import render
from midilm.sampling.generation import load_prompt

CONTEXT = 256
ROOM = CONTEXT - 2  # BOS and the composer take two
LONGEST = LONGEST_CONTEXTS * ROOM  # the length control's end: beyond ROOM, the page writes in windows
# The test model's generation_config.json: short samples (each request takes well under a second) and
# sampling settings unlike the library's, so the page's defaults show where they come from.
MODEL_DEFAULTS = {"max_new_tokens": 32, "temperature": 0.8, "top_k": 30, "top_p": 0.9, "guidance_scale": 2.5}
# gradio's queue calls pandas in ways pandas 3 deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny Llama with a small BPE tokenizer, saved as train.py saves a model."""
    root = tmp_path_factory.mktemp("app_model")
    pieces = []
    for seed in range(4):
        pieces.append(root / f"piece{seed}.mid")
        make_piece(200 + seed, bars=8).dump_midi(pieces[-1])
    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["bach", "mozart"])
    tokenizer.train(vocab_size=len(tokenizer) + 80, files_paths=pieces)
    config = build_config("llama", "tiny", tokenizer, composer_map, CONTEXT)
    # as train.py records them: the page accompanies and infills too
    config.midilm_tasks = ["continuation", "accompaniment", "infill"]
    config.midilm_guidance_scale = MODEL_DEFAULTS["guidance_scale"]  # midilm's guidance default lives in config.json
    torch.manual_seed(0)
    out = root / "model_output"
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    defaults = generation_config(config)
    defaults.update(**{k: v for k, v in MODEL_DEFAULTS.items() if k != "guidance_scale"})
    defaults.save_pretrained(out)
    save_tokenizer(tokenizer, composer_map, out)
    return out


@pytest.fixture(scope="module")
def app(app_model_dir, tmp_path_factory):
    """The page served on 127.0.0.1 (a free port) in this process's background threads: (demo, url); closed
    afterwards."""
    saved = {k: os.environ.get(k) for k in ("GRADIO_ANALYTICS_ENABLED", "GRADIO_TEMP_DIR")}
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # nothing leaves the machine
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))  # uploads and served copies
    demo = build_app(app_model_dir)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()
    demo.loaded_model.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def app_url(app) -> str:
    return app[1]


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    """A gradio_client that asks nothing of the Hub: no telemetry, and (offline) no agent registry for its headers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield Client(app_url, verbose=False, analytics_enabled=False)


@pytest.fixture(scope="module")
def script():
    return load_script("app.py")


NO_UPLOADS = {"prompt_midi": None, "melody_midi": None, "infill_midi": None}


def generate(client: Client, **given):
    """The page's Generate with its default settings, but for those `given`."""
    return client.predict(**{**NO_UPLOADS, **given}, api_name="/generate")


def submit(client: Client, **given):
    return client.submit(**{**NO_UPLOADS, **given}, api_name="/generate")


def updates_of(job) -> list:
    """Every update of a job (queue states, progress, warnings, output), as the page receives them."""

    async def collect():
        return [update async for update in job]

    return asyncio.run(collect())


def test_page_defaults_are_the_models(client):
    api = client.view_api(print_info=False, return_format="dict")
    inputs = {p["parameter_name"]: p for p in api["named_endpoints"]["/generate"]["parameters"]}
    assert {name: inputs[name]["parameter_default"] for name in MODEL_DEFAULTS} == MODEL_DEFAULTS
    assert inputs["composer"]["type"]["enum"] == ["bach", "mozart", "none"]
    assert inputs["max_new_tokens"]["type"]["description"] == f"numeric value between 1 and {LONGEST}"


def test_generate_gives_audio_roll_midi_and_a_command_that_reproduces_it(client, tmp_path, monkeypatch):
    wav, png, files, settings, command, note = generate(client)
    assert Path(wav).read_bytes()[:4] == b"RIFF" and Path(wav).stat().st_size > 1000
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    midi = next(Path(f) for f in files if f.endswith(".mid"))
    record = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    assert Score(midi).note_num() > 0
    assert settings["composer"] == record["composer"] == "bach"
    assert settings["windows"] == record["windows"] == 1 and note.endswith("written in one pass.")
    assert {name: settings[name] for name in MODEL_DEFAULTS} == MODEL_DEFAULTS and settings["seed"] == 0
    assert settings["repetition_penalty"] == 1.02  # not a control: the model's default, on the record

    # The command line the page shows writes the very same MIDI and WAV files.
    words = shlex.split(command)
    assert words[:2] == ["python", "generate.py"]
    assert run_cli(load_script("generate.py"), monkeypatch, *words[2:], "--output_dir", str(tmp_path / "cli")) == 0
    assert (tmp_path / "cli" / "bach_0.mid").read_bytes() == midi.read_bytes()
    assert (tmp_path / "cli" / "bach_0.wav").read_bytes() == Path(wav).read_bytes()


def test_continue_an_uploaded_midi(client, app_model_dir, tmp_path):
    theme = tmp_path / "theme.mid"
    make_piece(7, bars=6).dump_midi(theme)
    _, _, files, settings, command, _ = generate(
        client, composer="mozart", seed=3, prompt_midi=handle_file(theme), prompt_bars=2
    )
    tokenizer, composer_map = load_tokenizer(app_model_dir)
    prompt = load_prompt(tokenizer, theme, prompt_bars=2)
    tokens = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())["tokens"]
    assert tokens[:2] == [tokenizer["BOS_None"], composer_map.id_of("mozart")]
    assert tokens[2 : 2 + len(prompt)] == prompt and len(tokens) > 2 + len(prompt)
    assert settings["prompt_tokens"] == len(prompt) and settings["prompt_midi"] == "theme.mid"
    assert "--prompt_midi theme.mid --prompt_bars 2" in command


def test_accompany_an_uploaded_melody(client, tmp_path):
    melody = tmp_path / "tune.mid"
    piece = make_piece(11, bars=4)
    piece.tracks = piece.tracks[:1]  # the melody track alone
    piece.dump_midi(melody)
    _, png, files, settings, command, note = generate(client, composer="bach", seed=2, melody_midi=handle_file(melody))
    midi = Score(next(Path(f) for f in files if f.endswith(".mid")))
    given = sorted((n.time, n.pitch) for n in Score(melody).tracks[0].notes)
    kept = sorted(
        (n.time * Score(melody).ticks_per_quarter // midi.ticks_per_quarter, n.pitch) for n in midi.tracks[0].notes
    )
    assert kept == given, "the melody comes back note for note on its own track"
    assert settings["melody_midi"] == "tune.mid" and settings["bars"] == 4
    assert note.startswith("bach: an accompaniment of 4 bars, written in ") and note.endswith(" window(s).")
    assert "--melody_midi tune.mid" in command and Path(png).is_file()
    with pytest.raises(AppError, match="not both"):
        generate(client, melody_midi=handle_file(melody), prompt_midi=handle_file(melody))


def test_infill_bars_of_an_upload_and_reproduce_it(client, tmp_path, monkeypatch):
    piece = tmp_path / "chorale.mid"
    make_piece(13, bars=8).dump_midi(piece)
    wav, png, files, settings, command, note = generate(
        client, composer="mozart", seed=4, infill_midi=handle_file(piece), infill_bars="3-5"
    )
    midi = next(Path(f) for f in files if f.endswith(".mid"))
    record = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    assert midi.name == "infill_mozart_0.mid" and Path(png).is_file() and Path(wav).read_bytes()[:4] == b"RIFF"
    assert settings["bars"] == record["bars"] == [3, 5] and record["syntax_error_rate"] == 0.0
    assert settings["infill_midi"] == "chorale.mid" and note.startswith("mozart: bars 3-5 of 8 rewritten (")
    original, rewritten = Score(piece), Score(midi)
    start, end = 2 * 4 * original.ticks_per_quarter, 5 * 4 * original.ticks_per_quarter
    assert notes_outside(rewritten, start, end) == notes_outside(original, start, end)
    assert "--infill_midi chorale.mid --bars 3-5" in command and "--max_new_tokens" not in command

    # The command line the page shows writes the very same MIDI file.
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "chorale.mid").write_bytes(piece.read_bytes())
    monkeypatch.chdir(tmp_path / "cli")
    words = shlex.split(command)
    assert run_cli(load_script("generate.py"), monkeypatch, *words[2:], "--output_dir", "out") == 0
    assert (tmp_path / "cli" / "out" / "infill_mozart_0.mid").read_bytes() == midi.read_bytes()


def notes_outside(score: Score, start: int, end: int) -> list[tuple]:
    return sorted(
        (t.program, n.time, n.duration, n.pitch, n.velocity)
        for t in score.tracks
        for n in t.notes
        if not start <= n.time < end
    )


@pytest.mark.parametrize(
    ("bars", "message"),
    [
        ("", "Bars to rewrite: give the bars to rewrite"),
        ("5-3", "Bars to rewrite: 5-3: the range is reversed"),
        ("7-12", "Bars to rewrite: 7-12: chorale.mid has 8 bars"),
        ("bar nine", "Bars to rewrite: 'bar nine': give a bar range"),
    ],
)
def test_a_bad_bar_range_is_refused_on_the_page(client, tmp_path, bars, message):
    piece = tmp_path / "chorale.mid"
    make_piece(13, bars=8).dump_midi(piece)
    with pytest.raises(AppError, match=message) as caught:
        generate(client, infill_midi=handle_file(piece), infill_bars=bars)
    assert "Traceback" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    with pytest.raises(AppError, match="not both"):
        generate(client, infill_midi=handle_file(piece), infill_bars="2", melody_midi=handle_file(piece))


def test_a_model_without_the_task_refuses_to_infill_on_the_page(app_model_dir, tmp_path):
    folder = tmp_path / "continuation_only"
    shutil.copytree(app_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["midilm_tasks"] = ["continuation", "accompaniment"]
    (folder / "config.json").write_text(json.dumps(config))
    piece = tmp_path / "chorale.mid"
    make_piece(13, bars=8).dump_midi(piece)
    demo = build_app(folder)
    loaded = demo.loaded_model
    try:
        assert "not trained for infilling" in json.dumps(demo.config)  # said beside the controls, before a try
        with pytest.raises(gr.Error, match="never on infill") as caught:
            loaded.generate(
                "bach", 8, 1.0, 0.9, 40, 0.95, 0, None, 0, None, str(piece), "3-4", progress=lambda *a, **k: None
            )
        assert caught.value.print_exception is False
    finally:
        loaded.close()


def test_bad_uploads_give_a_message_and_the_page_goes_on(client, tmp_path):
    (tmp_path / "notes.mid").write_text("this is not a MIDI file\n")
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("this is not a MIDI file either\n")
    silent = Score(480)
    silent.dump_midi(tmp_path / "silent.mid")
    expected = {
        "notes.mid": "MIDI to continue: notes.mid: not a valid MIDI file",
        "empty.mid": "MIDI to continue: empty.mid: empty file",
        "silent.mid": "MIDI to continue: silent.mid: no notes",
        "notes.txt": "Please upload a file that is one of these formats",  # gradio's own check of file_types
    }
    for name, message in expected.items():
        with pytest.raises(AppError, match=message) as caught:
            generate(client, prompt_midi=handle_file(tmp_path / name))
        assert "Traceback" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert Score(next(f for f in generate(client, max_new_tokens=8)[2] if f.endswith(".mid"))).ticks_per_quarter > 0


def test_over_long_request_is_refused_with_the_bound(client):
    with pytest.raises(AppError, match=f"greater than maximum value {LONGEST}"):
        generate(client, max_new_tokens=LONGEST + 1)


def test_a_length_beyond_the_context_is_written_in_windows(client, tmp_path, monkeypatch):
    """Twice the context and more: the page says windows before (the note under the length) and after (the
    result), progress counts on across windows, and the command line it shows writes the same MIDI file."""
    assert "one pass" in length_note(ROOM, CONTEXT) and "in windows" in length_note(ROOM + 1, CONTEXT)
    length = 2 * ROOM + 20
    job = submit(client, max_new_tokens=length, seed=1)
    updates = updates_of(job)
    _, _, files, settings, command, note = job.result()
    record = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    # beyond one context; a bar of the random-weight model may fill a window and end the piece early (below)
    assert settings["windows"] == record["windows"] >= 3 and settings["new_tokens"] == record["new_tokens"] > ROOM
    windows = f"written in {settings['windows']} windows (longer than the context)"
    assert note == f"bach: {settings['new_tokens']} new tokens, {windows}."
    steps = [p for u in updates if getattr(u, "progress_data", None) for p in u.progress_data if p.unit == "tokens"]
    assert {p.length for p in steps} == {length} and max(p.index for p in steps) > ROOM  # one count over all windows
    if settings["new_tokens"] < length:  # a bar of the random-weight model filled a window: the page says so
        assert any("fills the model's context" in u.log[0] for u in updates if getattr(u, "log", None)), updates

    words = shlex.split(command)
    assert f"--max_new_tokens {length}" in command
    assert run_cli(load_script("generate.py"), monkeypatch, *words[2:], "--output_dir", str(tmp_path / "cli")) == 0
    midi = next(Path(f) for f in files if f.endswith(".mid"))
    assert (tmp_path / "cli" / "bach_0.mid").read_bytes() == midi.read_bytes()


def test_progress_and_warnings_reach_the_page(client, tmp_path):
    """A long prompt with a long request: the prompt is cut (a warning in the page), progress is per token."""
    long_piece = tmp_path / "long.mid"
    make_piece(8, bars=16).dump_midi(long_piece)
    length = ROOM - 40
    job = submit(client, max_new_tokens=length, prompt_midi=handle_file(long_piece))
    updates = updates_of(job)
    warnings = [u.log[0] for u in updates if getattr(u, "log", None) and u.log[1] == "warning"]
    assert any("first" in w and "prompt tokens are dropped" in w for w in warnings), warnings
    steps = [p for u in updates if getattr(u, "progress_data", None) for p in u.progress_data if p.unit == "tokens"]
    assert steps and steps[-1].length == length and len({p.index for p in steps}) > 1
    assert job.result()[3]["prompt_tokens"] <= 40


def test_concurrent_requests_are_queued_one_at_a_time(app, client, monkeypatch):
    model = app[0].loaded_model.model
    running, most, lock = [0], [0], threading.Lock()
    generate_alone = model.generate

    def counting_generate(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return generate_alone(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(model, "generate", counting_generate)
    jobs = [submit(client, seed=seed) for seed in (1, 2, 3)]
    commands = [job.result(timeout=120)[4] for job in jobs]
    assert [f"--seed {seed}" in c for seed, c in zip((1, 2, 3), commands)] == [True] * 3
    assert most[0] == 1, "two requests sampled at once"


def test_without_a_soundfont_the_page_goes_on_without_audio(app_model_dir, monkeypatch):
    monkeypatch.setattr(render, "find_soundfont", lambda explicit=None: None)
    loaded = build_app(app_model_dir).loaded_model
    assert "soundfont" in loaded.audio_problem
    steps = []
    try:
        wav, png, files, settings, _, _ = loaded.generate(
            "none", 8, 3.0, 0.9, 40, 0.95, 0, None, 0, progress=lambda *a, **k: steps.append(a[0])
        )
        assert wav is None and Path(png).is_file() and [Path(f).suffix for f in files] == [".mid", ".json"]
    finally:
        loaded.close()
    assert settings["composer"] == "NONE" and settings["effective_guidance_scale"] == 1.0
    assert steps[1:-1] == [(n, 8) for n in range(1, len(steps) - 1)] and steps[-1] == 1.0  # a step per token


@pytest.mark.parametrize("problem", ["missing", "not a model", "missing soundfont"])
def test_bad_start_is_one_line_exit_2(problem, script, app_model_dir, tmp_path, monkeypatch, capsys):
    model_dir, extra, expected = tmp_path / "model_output", [], f"error: --model_dir {tmp_path / 'model_output'}"
    if problem == "not a model":
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    elif problem == "missing soundfont":
        model_dir, extra, expected = app_model_dir, ["--soundfont", str(tmp_path / "gm.sf2")], "error: --soundfont: "
    argv = ["app.py", "--model_dir", str(model_dir), "--host", "127.0.0.1", "--port", str(free_port()), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        script.run(script.main)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and len(err.splitlines()) == 1, err
