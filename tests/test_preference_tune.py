"""tune.py end to end on a tiny trained model: one DPO round with TRL gives a loadable, plain model folder
whose config.json and card record the round; a run killed between rounds resumes; bad input is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_refused, load_script

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = [
    "--samples_per_composer",
    "4",
    "--max_new_tokens",
    "48",
    "--pair_fraction",
    "0.5",
    "--min_margin",
    "0",
    "--batch_size",
    "2",
    "--dpo_epochs",
    "1",
    "--stop_early",
    "false",
]


def run_script(script: str, *args: str, **kwargs):
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        check=False,
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def model_dir(tiny_model) -> Path:
    """conftest's 40-step model (tuning never writes its model folder)."""
    return tiny_model


@pytest.fixture(scope="module")
def tuned(model_dir, prepared, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("tuned") / "model_tuned"
    result = run_script(
        "tune.py",
        "--model_dir",
        str(model_dir),
        "--dataset_dir",
        str(prepared["data"]),
        "--output_dir",
        str(out),
        "--rounds",
        "1",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return {"out": out, "stdout": result.stdout, "stderr": result.stderr}


def test_one_round_gives_a_plain_model_folder_that_records_the_tuning(tuned, model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from midilm.sampling.generation import prepare_generation
    from midilm.sampling.settings import SamplingSettings

    out = tuned["out"]
    config = json.loads((out / "config.json").read_text())
    record = config["midilm_tuning"]
    assert record["rounds"] == 1 and record["pairs_per_round"][0] >= 1 and record["samples_per_composer"] == 4
    assert record["base_model"] == str(model_dir.resolve()) and record["weights"]["seconds_weight"] == 5.0
    assert set(record["before_after"]["before"]) == set(record["tuned_composers"])
    card = (out / "README.md").read_text()
    assert "## Preference tuning" in card and "| 1 | " in card and "independent classifier" in card
    assert "OTHER was left untuned" in card and "OTHER is left untuned" in tuned["stdout"] + tuned["stderr"]
    assert not (out.parent / "model_tuned.tuning").exists()
    # a card written anew (evaluate_samples.py --write_default_guidance, a Hub push) keeps the tuning section
    from midilm.evaluation.adherence import write_default_guidance

    again = out.parent / "model_tuned_again"
    shutil.copytree(out, again)
    write_default_guidance(again, 1.5)
    assert "## Preference tuning" in (again / "README.md").read_text() and "guidance 1.5" not in card
    # plain transformers loads it; the weights moved; midilm samples from it
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    plan = prepare_generation(
        out, composer=record["tuned_composers"][0], num_samples=1, settings=SamplingSettings(max_new_tokens=16, seed=0)
    )
    assert len(plan.decode(plan.run(model))) == 1


def test_tensorboard_shows_rewards_margins_and_adherence(tuned):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (tuned["out"] / "runs" / "tuning").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert any("rewards/margins" in t for t in tags) and any(t.startswith("adherence/") for t in tags), tags


def test_resume_after_kill_between_rounds(model_dir, prepared, tmp_path):
    out = tmp_path / "model_tuned"
    argv = [
        sys.executable,
        str(REPO / "tune.py"),
        "--model_dir",
        str(model_dir),
        "--dataset_dir",
        str(prepared["data"]),
        "--output_dir",
        str(out),
        "--rounds",
        "2",
        *TINY,
    ]
    process = subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "model_tuned.tuning" / "round_1" / "round.json"
    deadline = time.time() + 600
    while not first.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.is_file() and not out.exists()
    result = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming: 1 round(s)" in result.stdout
    assert json.loads((out / "config.json").read_text())["midilm_tuning"]["rounds"] == 2
    report = json.loads((out / "tuning_report.json").read_text())
    assert [h["round"] for h in report["round_history"]] == [1, 2] and report["before_after"][
        "before"
    ]  # round 1's record survived the kill


@pytest.mark.parametrize("case", ["no_dataset", "other_tokenizer", "rounds_0", "output_exists"])
def test_bad_input_is_refused_with_one_line(case, model_dir, prepared, named_prepared, tmp_path, monkeypatch, capsys):
    script = load_script("tune.py")
    model = tmp_path / "model_output"
    shutil.copytree(model_dir, model)
    argv = [
        "--model_dir",
        str(model),
        "--dataset_dir",
        str(prepared["data"]),
        "--output_dir",
        str(tmp_path / "out"),
        *TINY,
    ]
    message = {
        "no_dataset": "is not there",
        "other_tokenizer": "has composers",
        "rounds_0": "--rounds 0",
        "output_exists": "already exists",
    }[case]
    if case == "no_dataset":
        argv = argv[:2] + argv[4:]  # no --dataset_dir: the one training_config.json names, which is gone
        config = json.loads((model / "training_config.json").read_text())
        config["data"]["dataset_dir"] = str(tmp_path / "moved_away")
        (model / "training_config.json").write_text(json.dumps(config))
    elif case == "other_tokenizer":
        argv[3] = str(named_prepared["data"])
    elif case == "rounds_0":
        argv += ["--rounds", "0"]
    else:
        (tmp_path / "out").mkdir()
    assert_refused(script, monkeypatch, capsys, tmp_path, argv, message)
