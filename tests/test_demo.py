"""`make demo`'s pipeline (prepare → train → generate → evaluate) on a tiny subset of the bundled corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import REPO


def test_demo_pipeline_on_a_tiny_subset(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is not installed; `apt-get install make`")
    env = {**os.environ, "MIDILM_CACHE": str(tmp_path / "cache")}
    tiny = [
        "DEMO_COMPOSERS=bach,palestrina",
        "DEMO_FILES=4",
        "DEMO_MIN_PIECES=2",
        "DEMO_STEPS=6",
        "DEMO_SAMPLES=1",
        "DEMO_TOKENS=48",
        "DEMO_EVAL_STEPS=3",
        "DEMO_AUGMENT=",
        "DEMO_LONG_TOKENS=600",  # beyond the 512-token context: two windows
        "DEMO_TUNED=",  # preference tuning needs composers the classifier can measure: tests/test_preference_tune.py
        (
            "DEMO_EVAL=--num_samples_per_composer 1 --max_new_tokens 48 --adherence_scales 1,2 "
            "--adherence_samples_per_composer 2 --accompaniment_pieces 1"
        ),
    ]
    result = subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "pipeline", *tiny],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    for composer in ("bach", "palestrina"):
        for suffix in (".mid", ".wav", ".png", ".json"):
            assert (tmp_path / "samples" / f"{composer}_0{suffix}").is_file()
    # a held-out Bach chorale's soprano, harmonized: MIDI, WAV, PNG and JSON beside the samples
    for suffix in (".mid", ".wav", ".png", ".json"):
        assert (tmp_path / "samples" / f"accompaniment_bach_0{suffix}").is_file()
    record = json.loads((tmp_path / "samples" / "accompaniment_bach_0.json").read_text())
    assert record["melody_source"] == "track 'Soprano'" and record["syntax_error_rate"] == 0.0
    # bars 5-8 of the same held-out chorale rewritten, every other note kept
    for suffix in (".mid", ".wav", ".png", ".json"):
        assert (tmp_path / "samples" / f"infill_bach_0{suffix}").is_file()
    record = json.loads((tmp_path / "samples" / "infill_bach_0.json").read_text())
    assert record["bars"] == [5, 8] and record["syntax_error_rate"] == 0.0
    assert record["infill_midi"] == record["infill_midi"].strip() and record["infill_midi"].endswith(".mid")
    # one piece beyond the context, written in windows
    record = json.loads((tmp_path / "samples" / "long" / "bach_0.json").read_text())
    assert record["windows"] >= 2 and record["new_tokens"] > 0
    report = json.loads((tmp_path / "samples" / "eval" / "report.json").read_text())
    markdown = (tmp_path / "samples" / "eval" / "report.md").read_text()
    assert report["accompaniment"]["pieces"] and "## Accompaniment" in markdown
    assert report["infilling"]["spans"] and report["infilling"]["outside_identical_share"] == 1.0
    assert report["infilling"]["syntax_error_rate_max"] == 0.0 and "## Infilling" in markdown
    assert json.loads((tmp_path / "model_output" / "config.json").read_text())["composer_to_id"].keys() == {
        "bach",
        "palestrina",
    }
    # a second run finds every stage done and changes nothing
    again = subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "pipeline", *tiny], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "prepare_dataset.py" not in again.stdout


def test_demo_full_runs_the_same_pipeline_in_its_own_folder_with_the_longer_budget(tmp_path):
    # -n prints the stages without running them (the sub-make line runs, itself with -n)
    result = subprocess.run(
        ["make", "-n", "-f", str(REPO / "Makefile"), "pipeline-full", "FULL_STEPS=7", "FULL_EVAL_SAMPLES=5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"Entering directory '{tmp_path / 'demo-full'}'" in result.stdout
    assert "train.py --max_steps 7 " in result.stdout and "--adherence_samples_per_composer 5" in result.stdout
    assert "prepare_dataset.py" in result.stdout and "generate.py" in result.stdout
    assert "--tasks continuation,accompaniment,infill" in result.stdout and "--infill_midi" in result.stdout
    assert not (tmp_path / "data").exists()  # the quick demo's folders are left alone


def test_demo_ends_with_preference_tuning_and_the_tuned_models_evaluation(tmp_path):
    result = subprocess.run(
        ["make", "-n", "-f", str(REPO / "Makefile"), "pipeline", "DEMO_TUNE=--rounds 1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    tune = next(i for i, line in enumerate(lines) if "tune.py --model_dir model_output" in line)
    assert "--output_dir model_tuned --rounds 1" in lines[tune]
    assert any("evaluate_samples.py --model_dir model_output" in line for line in lines[:tune])
    assert any("evaluate_samples.py --model_dir model_tuned" in line for line in lines[tune + 1 :])
    skipped = subprocess.run(
        ["make", "-n", "-f", str(REPO / "Makefile"), "pipeline", "DEMO_TUNED="],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert skipped.returncode == 0 and "tune.py" not in skipped.stdout
