"""generate.py and midilm.sampling.generation: the README example, continuation, determinism, grammar on/off,
bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TOKENIZER_SETTINGS, assert_refused, load_script, make_piece, run_cli, save_random_model
from symusic import Score
from transformers import AutoModelForCausalLM, LlamaConfig

from midilm.core.tokenizer import bar_start_table, build_tokenizer, load_tokenizer, save_tokenizer, vocab_base_tokens
from midilm.sampling.generation import decode_ids, load_prompt, prepare_generation, sample_scores
from midilm.sampling.settings import SamplingSettings

CONTEXT = 256
# The README's example, verbatim; the test runs it in a folder holding `model_output`.
README_EXAMPLE = """
from transformers import AutoModelForCausalLM
from midilm import SamplingSettings, prepare_generation

model = AutoModelForCausalLM.from_pretrained("model_output")
plan = prepare_generation("model_output", composer="bach", num_samples=2, settings=SamplingSettings(seed=0))
output = model.generate(plan.input_ids, attention_mask=plan.attention_mask,
                        generation_config=plan.generation_config, logits_processor=plan.logits_processor)
for i, score in enumerate(plan.decode(output)):
    score.dump_midi(f"bach_{i}.mid")
"""


@pytest.fixture(scope="module")
def midi_files(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("gen_midi")
    paths = []
    for seed in range(4):
        paths.append(root / f"piece{seed}.mid")
        make_piece(100 + seed, bars=8).dump_midi(paths[-1])
    return paths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, midi_files) -> Path:
    """A random-weight tiny Llama with a small BPE tokenizer, saved as train.py saves a model."""
    out = tmp_path_factory.mktemp("gen_model") / "model_output"
    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["bach", "mozart"])
    tokenizer.train(vocab_size=len(tokenizer) + 80, files_paths=midi_files)
    return save_random_model(
        out, tokenizer, composer_map, CONTEXT, max_new_tokens=48
    )  # 48 keeps the README example quick


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def script():
    return load_script("generate.py")


def generate(model, plan):
    return model.generate(
        plan.input_ids,
        attention_mask=plan.attention_mask,
        generation_config=plan.generation_config,
        logits_processor=plan.logits_processor,
    )


def notes_of(score: Score) -> set[tuple]:
    return {(t.program, n.time, n.pitch, n.duration, n.velocity) for t in score.tracks for n in t.notes}


def test_readme_example_runs(model_dir, tmp_path, monkeypatch):
    (tmp_path / "model_output").symlink_to(model_dir)
    monkeypatch.chdir(tmp_path)
    exec(compile(README_EXAMPLE, "README", "exec"), {})
    for i in range(2):
        assert Score(tmp_path / f"bach_{i}.mid").note_num() > 0


def test_continuation_keeps_the_prompt(model_dir, model, tmp_path):
    prompt_path = tmp_path / "theme.mid"
    make_piece(7, bars=6).dump_midi(prompt_path)
    tokenizer, composer_map = load_tokenizer(model_dir)
    prompt = load_prompt(tokenizer, prompt_path, prompt_bars=2)
    assert int(np.asarray(bar_start_table(tokenizer))[prompt].sum()) == 2

    plan = prepare_generation(
        model_dir,
        "Mozart",
        2,
        prompt_midi=prompt_path,
        prompt_bars=2,
        settings=SamplingSettings(max_new_tokens=40, seed=1),
    )
    output = generate(model, plan)
    header = [tokenizer["BOS_None"], composer_map.id_of("mozart")]
    prompt_notes = notes_of(decode_ids(tokenizer, prompt))
    assert prompt_notes
    for ids, score in zip(plan.sample_ids(output), plan.decode(output)):
        assert ids[: 2 + len(prompt)] == header + prompt
        assert len(ids) > 2 + len(prompt)
        assert prompt_notes <= notes_of(score)


def test_long_prompt_is_cut_from_the_left_at_a_bar_line(model_dir, tmp_path):
    prompt_path = tmp_path / "long.mid"
    make_piece(8, bars=12).dump_midi(prompt_path)
    tokenizer, _ = load_tokenizer(model_dir)
    full = load_prompt(tokenizer, prompt_path)
    room = len(full) // 2
    with pytest.warns(UserWarning, match="dropped"):
        plan = prepare_generation(
            model_dir, "bach", prompt_midi=prompt_path, settings=SamplingSettings(max_new_tokens=CONTEXT - 2 - room)
        )
    assert 0 < len(plan.prompt_ids) <= room
    assert plan.prompt_ids == full[-len(plan.prompt_ids) :]
    assert bar_start_table(tokenizer)[plan.prompt_ids[0]]
    assert plan.input_ids.shape[1] + plan.generation_config.max_new_tokens <= CONTEXT


def test_unfinished_last_note_is_dropped(model_dir, midi_files):
    tokenizer, _ = load_tokenizer(model_dir)
    ids = load_prompt(tokenizer, midi_files[0], prompt_bars=1)
    single = {tuple(base): i for i, base in enumerate(vocab_base_tokens(tokenizer)) if len(base) == 1}
    pitch, velocity, duration = single[("Pitch_60",)], single[("Velocity_79",)], single[("Duration_1.0.8",)]
    notes = decode_ids(tokenizer, ids).note_num()
    assert decode_ids(tokenizer, ids + [pitch]).note_num() == notes
    assert decode_ids(tokenizer, ids + [pitch, velocity]).note_num() == notes
    assert decode_ids(tokenizer, ids + [pitch, velocity, duration]).note_num() == notes + 1


def test_grammar_on_gives_no_syntax_errors_and_off_gives_some(model_dir, model):
    from midilm.sampling.grammar import count_syntax_errors

    tokenizer, _ = load_tokenizer(model_dir)
    rates = {}
    for grammar in (True, False):
        plan = prepare_generation(
            model_dir, "bach", 4, settings=SamplingSettings(max_new_tokens=96, seed=3, grammar=grammar)
        )
        rates[grammar] = [count_syntax_errors(tokenizer, ids) for ids in plan.sample_ids(generate(model, plan))]
    assert rates[True] == [0.0] * 4
    assert sum(rates[False]) > 0


def test_cli_writes_samples_and_is_deterministic(script, model_dir, tmp_path, monkeypatch, capsys):
    args = [
        "--model_dir",
        str(model_dir),
        "--composer",
        "BACH",
        "--num_samples",
        "2",
        "--max_new_tokens",
        "40",
        "--seed",
        "5",
    ]
    for name in ("a", "b"):
        assert run_cli(script, monkeypatch, *args, "--output_dir", str(tmp_path / name)) == 0
    assert run_cli(script, monkeypatch, *args[:-1], "6", "--output_dir", str(tmp_path / "c")) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "bach_0.json",
        "bach_0.mid",
        "bach_1.json",
        "bach_1.mid",
    ]
    for i in range(2):
        first = (tmp_path / "a" / f"bach_{i}.mid").read_bytes()
        assert first == (tmp_path / "b" / f"bach_{i}.mid").read_bytes()
        assert first != (tmp_path / "c" / f"bach_{i}.mid").read_bytes()
    record = json.loads((tmp_path / "a" / "bach_0.json").read_text())
    assert record["seed"] == 5 and record["composer"] == "bach"
    assert record["settings"]["max_new_tokens"] == 40 and record["settings"]["temperature"] == pytest.approx(0.9)
    assert record["settings"]["guidance_scale"] == 3.0 and record["settings"]["grammar"] is True
    assert record["tokens"][:2] == [1, load_tokenizer(model_dir)[1].id_of("bach")]
    assert record["syntax_error_rate"] == 0.0
    assert "bach_0.mid" in capsys.readouterr().out
    assert run_cli(script, monkeypatch, *args, "--output_dir", str(tmp_path / "c"), "--overwrite") == 0
    assert (tmp_path / "c" / "bach_0.mid").read_bytes() == (tmp_path / "a" / "bach_0.mid").read_bytes()


def test_static_cache_and_compile_give_the_same_bytes(script, model_dir, tmp_path, monkeypatch):
    """CFG (the model's default s = 3) and the grammar on: plain, static cache and compiled decoding
    write the same MIDI bytes. The suite compiles with aot_eager (dynamo tracing + AOT autograd, a few
    seconds); inductor takes 25-50 s to compile here and was checked by hand (bench/RESULTS.md)."""
    args = [
        "--model_dir",
        str(model_dir),
        "--composer",
        "bach,mozart",
        "--num_samples",
        "2",
        "--max_new_tokens",
        "32",
        "--seed",
        "4",
    ]
    runs = {"plain": [], "static": ["--static_cache"], "compiled": ["--compile", "--compile_backend", "aot_eager"]}
    for name, extra in runs.items():
        assert run_cli(script, monkeypatch, *args, *extra, "--output_dir", str(tmp_path / name)) == 0
    for name in runs:
        record = json.loads((tmp_path / name / "bach_0.json").read_text())
        assert record["settings"]["static_cache"] is (name != "plain") and record["settings"]["compile"] is (
            name == "compiled"
        )
        assert record["settings"]["effective_guidance_scale"] == 3.0 and record["syntax_error_rate"] == 0.0
    for stem in ("bach_0", "bach_1", "mozart_0", "mozart_1"):
        plain = (tmp_path / "plain" / f"{stem}.mid").read_bytes()
        assert (
            plain
            == (tmp_path / "static" / f"{stem}.mid").read_bytes()
            == (tmp_path / "compiled" / f"{stem}.mid").read_bytes()
        )


def test_compile_really_compiles_the_decoding_forward(model_dir):
    """The plan's generation_config makes transformers compile on CPU too: dynamo captures graphs, and
    the tokens equal those of the eager, dynamic-cache call."""
    from torch._dynamo.utils import counters

    model = AutoModelForCausalLM.from_pretrained(
        model_dir
    ).eval()  # its own copy: the compiled call is cached on the model
    plain = generate(
        model, prepare_generation(model_dir, "mozart", 2, settings=SamplingSettings(max_new_tokens=24, seed=2))
    )
    counters.clear()
    plan = prepare_generation(
        model_dir,
        "mozart",
        2,
        settings=SamplingSettings(max_new_tokens=24, seed=2, compile=True, compile_backend="eager"),
    )
    assert plan.generation_config.cache_implementation == "static"
    compiled = generate(model, plan)
    assert counters["stats"]["unique_graphs"] > 0
    assert torch.equal(plain, compiled)


def test_sample_scores_for_training_logs(model, model_dir):
    """train.py's evaluation samples: every composer, one batched call, composer-major order."""
    tokenizer, composer_map = load_tokenizer(model_dir)
    samples = sample_scores(
        model, tokenizer, composer_map, composer_map.names, 2, SamplingSettings(max_new_tokens=24, seed=1)
    )
    assert [name for name, _ in samples] == ["bach", "bach", "mozart", "mozart"]
    assert all(isinstance(score, Score) for _, score in samples)


def test_cli_unconditional_and_list_composers(script, model_dir, tmp_path, monkeypatch, capsys):
    assert run_cli(script, monkeypatch, "--model_dir", str(model_dir), "--list_composers") == 0
    assert capsys.readouterr().out.split("\n")[:3] == ["bach", "mozart", "none (unconditional)"]
    out = tmp_path / "none"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--composer",
            "none",
            "--max_new_tokens",
            "24",
            "--output_dir",
            str(out),
        )
        == 0
    )
    record = json.loads((out / "none_0.json").read_text())
    assert record["settings"]["effective_guidance_scale"] == 1.0  # guiding NONE towards NONE is plain sampling


def test_cli_renders_wav_and_png(script, model_dir, tmp_path, monkeypatch):
    from midilm.sampling.render import available_backends, find_soundfont

    if find_soundfont() is None or not available_backends():
        pytest.skip("no soundfont or no synthesizer here")
    out = tmp_path / "rendered"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--composer",
            "mozart",
            "--max_new_tokens",
            "48",
            "--wav",
            "--png",
            "--output_dir",
            str(out),
        )
        == 0
    )
    assert (out / "mozart_0.wav").stat().st_size > 44 and (out / "mozart_0.png").read_bytes()[:4] == b"\x89PNG"


def broken_model_dirs(model_dir: Path, root: Path) -> dict[str, Path]:
    not_midilm = root / "plain"
    LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(not_midilm)
    mismatched = root / "mismatched"
    shutil.copytree(model_dir, mismatched)
    other, other_map = build_tokenizer(TOKENIZER_SETTINGS, ["bach", "mozart", "haydn"])
    save_tokenizer(other, other_map, mismatched)
    no_weights = root / "no_weights"
    shutil.copytree(model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    return {"plain": not_midilm, "mismatched": mismatched, "no_weights": no_weights}


BAD_INPUTS = {
    "unknown composer": (["--composer", "chopin"], "unknown composer 'chopin'; choose one of: bach, mozart"),
    "no composer": ([], "--composer is required; choose one of: bach, mozart, none"),
    "missing model_dir": (["--model_dir", "{tmp}/nowhere", "--composer", "bach"], "no config.json"),
    "not a midilm model": (["--model_dir", "{plain}", "--composer", "bach"], "not a midilm model"),
    "tokenizer does not match": (["--model_dir", "{mismatched}", "--composer", "bach"], "does not match the model"),
    "no weights": (["--model_dir", "{no_weights}", "--composer", "bach"], "cannot load the weights"),
    "negative guidance": (["--composer", "bach", "--guidance_scale", "-1"], "--guidance_scale -1.0: must be >= 0"),
    "corrupt prompt": (["--composer", "bach", "--prompt_midi", "{tmp}/corrupt.mid"], "not a valid MIDI file"),
    "empty prompt": (["--composer", "bach", "--prompt_midi", "{tmp}/empty.mid"], "empty file"),
    "missing prompt": (["--composer", "bach", "--prompt_midi", "{tmp}/absent.mid"], "no such file"),
    "silent prompt": (["--composer", "bach", "--prompt_midi", "{tmp}/silent.mid"], "no notes"),
    "zero prompt bars": (
        ["--composer", "bach", "--prompt_midi", "{tmp}/good.mid", "--prompt_bars", "0"],
        "--prompt_bars 0",
    ),
    "no samples": (["--composer", "bach", "--num_samples", "0"], "--num_samples 0: must be at least 1"),
    "existing samples": (["--composer", "bach"], "bach_0.mid already exists"),
    "missing soundfont": (
        ["--composer", "bach", "--wav", "--soundfont", "{tmp}/absent.sf2"],
        "absent.sf2 does not exist",
    ),
    "unknown compile backend": (
        ["--composer", "bach", "--compile", "--compile_backend", "nosuch"],
        "--compile_backend 'nosuch'",
    ),
    "compile with a melody": (
        ["--composer", "bach", "--melody_midi", "{tmp}/good.mid", "--compile"],
        "--melody_midi does not take them",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, script, model_dir, tmp_path, monkeypatch, capsys):
    args, message = BAD_INPUTS[case]
    places = {"tmp": tmp_path}
    if any(f"{{{name}}}" in args for name in ("plain", "mismatched", "no_weights")):
        places.update(broken_model_dirs(model_dir, tmp_path / "models"))
    (tmp_path / "corrupt.mid").write_text("not a MIDI file\n")
    (tmp_path / "empty.mid").write_bytes(b"")
    Score(480).dump_midi(tmp_path / "silent.mid")
    make_piece(1).dump_midi(tmp_path / "good.mid")
    out = tmp_path / "samples"
    if case == "existing samples":
        out.mkdir()
        (out / "bach_0.mid").write_bytes(b"keep me")
    argv = [a.format(**places) for a in args]
    if "--model_dir" not in argv:
        argv = ["--model_dir", str(model_dir), *argv]
    assert_refused(script, monkeypatch, capsys, tmp_path, [*argv, "--output_dir", str(out)], message)
    if case == "existing samples":
        assert (out / "bach_0.mid").read_bytes() == b"keep me"


def test_bad_input_from_a_real_process(model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "generate.py"),
            "--model_dir",
            str(model_dir),
            "--composer",
            "chopin",
            "--output_dir",
            str(tmp_path / "s"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "unknown composer 'chopin'; choose one of: bach, mozart, none" in last
    assert not (tmp_path / "s").exists()


def test_cli_all_composers_in_one_call(script, model_dir, tmp_path, monkeypatch):
    out = tmp_path / "all"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--composer",
            "all",
            "--num_samples",
            "2",
            "--max_new_tokens",
            "24",
            "--output_dir",
            str(out),
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("*.mid")) == ["bach_0.mid", "bach_1.mid", "mozart_0.mid", "mozart_1.mid"]
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--composer",
            "Mozart,none",
            "--max_new_tokens",
            "24",
            "--output_dir",
            str(tmp_path / "list"),
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "list").glob("*.mid")) == ["mozart_0.mid", "none_0.mid"]


@pytest.fixture(scope="module")
def guarded_model_dir(model_dir, tmp_path_factory) -> Path:
    """The random-weight model with guard bounds in its config.json, as train.py stores them; tight
    ones, so that its unguarded samples (random weights pile notes up) pass them."""
    from midilm.sampling.guard import CONFIG_KEY

    out = tmp_path_factory.mktemp("guarded") / "model_output"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config[CONFIG_KEY] = {"max_notes_per_onset": 2, "max_notes_per_bar": 10, "quantile": 0.999}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_guard_is_on_by_default_and_keeps_samples_within_its_bounds(guarded_model_dir, model):
    from midilm.sampling.guard import NoteGuardLogitsProcessor, onset_counts

    tokenizer, _ = load_tokenizer(guarded_model_dir)
    largest = {}
    for guard in (True, False):
        plan = prepare_generation(
            guarded_model_dir, "bach,mozart", 2, settings=SamplingSettings(max_new_tokens=96, seed=3, guard=guard)
        )
        assert (
            plan.settings["guard"] is guard and plan.settings["effective_guidance_scale"] == 3.0
        )  # the model's default
        assert any(isinstance(p, NoteGuardLogitsProcessor) for p in plan.logits_processor) is guard
        assert plan.settings["guard_bounds"] == ({"max_notes_per_onset": 2, "max_notes_per_bar": 10} if guard else None)
        largest[guard] = [onset_counts(tokenizer, ids) for ids in plan.sample_ids(generate(model, plan))]
    assert all(onset <= 2 and bar <= 10 for onset, bar in largest[True])
    assert any(onset > 2 or bar > 10 for onset, bar in largest[False])  # the check above can fail


def test_cli_records_the_guard_and_no_guard_turns_it_off(script, guarded_model_dir, model_dir, tmp_path, monkeypatch):
    args = ["--composer", "bach", "--max_new_tokens", "24"]
    runs = {"on": [guarded_model_dir], "off": [guarded_model_dir, "--no_guard"], "no bounds": [model_dir]}
    for name, (folder, *extra) in runs.items():
        assert (
            run_cli(
                script, monkeypatch, "--model_dir", str(folder), *args, *extra, "--output_dir", str(tmp_path / name)
            )
            == 0
        )
    settings = {name: json.loads((tmp_path / name / "bach_0.json").read_text())["settings"] for name in runs}
    assert settings["on"]["guard"] is True and settings["on"]["guard_bounds"]["max_notes_per_onset"] == 2
    assert settings["off"]["guard"] is False and settings["off"]["guard_bounds"] is None
    assert settings["no bounds"]["guard"] is False  # a model saved without bounds samples as before
