"""The evaluation's infilling figures (midilm.evaluation.infilling): seeded spans, span NLL with and without the bars
after, seams, notes outside the span, and evaluate_samples.py's report on a tiny model trained with the task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO
from symusic import Note, Score, TimeSignature, Track

from midilm.core.errors import InputError
from midilm.evaluation.arguments import EvaluateArguments
from midilm.evaluation.infilling import draw_spans, outside_notes, seams, span_nll
from midilm.evaluation.steps import infilling_section

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def infill_data(prepared_infill) -> dict:
    return prepared_infill


@pytest.fixture(scope="module")
def trained(infill_data, tmp_path_factory) -> Path:
    """train.py, 40 steps on continuation + infill rows."""
    out = tmp_path_factory.mktemp("eval_infill_model") / "model_output"
    command = [sys.executable, str(REPO / "train.py"), "--dataset_dir", str(infill_data["data"])]
    command += ["--tokenizer_dir", str(infill_data["tokenizer"]), "--output_dir", str(out), "--max_steps", "40"]
    command += ["--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--warmup_steps", "0"]
    command += ["--eval_strategy", "no", "--load_best_model_at_end", "false", "--samples_per_composer", "0"]
    command += ["--dataloader_num_workers", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=ENV, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def report(trained, infill_data, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval_infill_report") / "eval_report"
    command = [sys.executable, str(REPO / "evaluate_samples.py"), "--model_dir", str(trained)]
    command += ["--dataset_dir", str(infill_data["data"]), "--output_dir", str(out), "--num_samples_per_composer", "1"]
    command += ["--max_new_tokens", "32", "--adherence_scales", "", "--infill_pieces", "1"]
    command += ["--infill_spans_per_piece", "2", "--infill_max_bars", "2"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=ENV, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "infilling (" in result.stdout  # the headline line
    return json.loads((out / "report.json").read_text()), out


def test_report_holds_the_infilling_figures(report):
    data, out = report
    section = data["infilling"]
    composers = data["settings"]["composers_evaluated"]
    assert data["infilling_skipped"] is None
    assert 0 < section["spans"] <= 2 * len(composers) and section["pieces"] <= len(composers)
    assert section["outside_identical_share"] == 1.0
    assert section["syntax_error_rate_max"] == 0.0
    spans = section["per_span"]
    assert all(e["outside_identical"] and e["outside_notes"] > 0 for e in spans)
    for e in spans:  # 1-2 bars, a bar on each side
        first, last = e["bars"]
        assert 2 <= first <= last <= e["piece_bars"] - 1 and last - first < 2
        assert e["context_bars"]["before"][1] == first - 1 and e["context_bars"]["after"][0] == last + 1
        assert np.isfinite(e["infill_nll"]) and e["infill_nll"] > 0 and e["prefix_nll"] > 0
    notes = sum(e["span_notes"] for e in spans)
    infill, prefix = sum(e["infill_nll"] for e in spans), sum(e["prefix_nll"] for e in spans)
    assert section["infill_nll_per_note"] == pytest.approx(infill / notes)
    assert section["nll_reduction"] == pytest.approx(1 - infill / prefix)
    no_after = sum(e["no_after_nll"] for e in spans)
    assert section["nll_reduction_from_the_bars_after"] == pytest.approx(1 - infill / no_after)
    assert no_after != infill and no_after != prefix  # three different rows
    assert section["metric_gap"] is not None and section["real_spans_gap"] is not None
    assert set(section["seams"]) == {
        f"{s}_{m}" for s in ("entry", "exit") for m in ("top_voice_leap", "register_shift", "density_jump")
    }
    markdown = (out / "report.md").read_text()
    assert "## Infilling:" in markdown and "NLL reduction from the bars after" in markdown
    assert len(list((out / "samples" / "infill").glob("*.mid"))) == section["spans"]
    assert data["timings"]["infilling_s"] > 0
    assert data["settings"]["infill_max_bars"] == 2


def test_span_nll_is_the_models_own_loss(trained):
    """span_nll against transformers' loss with every label but the span's ignored."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained).eval()
    ids = list(range(5, 45))
    (total,) = span_nll(model, [(ids, 30, 40)], model.config.pad_token_id)
    input_ids = torch.tensor([ids])
    labels = torch.full_like(input_ids, -100)
    labels[0, 30:40] = input_ids[0, 30:40]
    with torch.no_grad():
        loss = model(input_ids=input_ids, labels=labels).loss
    assert total == pytest.approx(10 * float(loss), rel=1e-4)


def test_spans_are_seeded_and_keep_a_bar_on_each_side():
    assert draw_spans(10, 3, 4, np.random.default_rng([0, 1])) == draw_spans(10, 3, 4, np.random.default_rng([0, 1]))
    assert draw_spans(2, 3, 4, np.random.default_rng(0)) == []
    assert draw_spans(3, 5, 4, np.random.default_rng(0)) == [(1, 2)]  # the only span with neighbours
    seen = set()
    for seed in range(200):
        spans = draw_spans(9, 2, 4, np.random.default_rng(seed))
        assert len(spans) == 2 and len(set(spans)) == 2
        for first, stop in spans:
            assert 1 <= first < stop <= 8 and stop - first <= 4
            seen.add((first, stop))
    assert {(1, 2), (7, 8), (1, 5), (4, 8)} <= seen  # every length and place can be drawn


def four_bars(pitches: list[list[int]]) -> Score:
    """Bars of 4/4 at 480 ticks a quarter; bar k holds `pitches[k]`, one chord or note per quarter."""
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(program=0)
    for k, bar in enumerate(pitches):
        for beat, pitch in enumerate(bar):
            track.notes.append(Note(k * 1920 + beat * 480, 480, pitch, 80))
    score.tracks.append(track)
    return score


def test_seams_measure_the_jumps_across_the_bar_lines():
    score = four_bars([[60, 62, 64, 65], [72, 74], [48, 50, 52, 53], [60]])
    lines = [0, 1920, 3840, 5760, 7680]
    got = seams(score, lines, 1, 3)  # the span: bars 2 and 3 (0-based 1, 2)
    entry, exit_ = got["entry"], got["exit"]
    assert entry["top_voice_leap"] == 7  # 65 -> 72
    assert entry["register_shift"] == pytest.approx(73 - 62.75)
    assert entry["density_jump"] == pytest.approx(abs(np.log2(3 / 5)))
    assert exit_["top_voice_leap"] == 7  # 53 -> 60
    assert exit_["register_shift"] == pytest.approx(60 - 50.75)
    assert exit_["density_jump"] == pytest.approx(abs(np.log2(2 / 5)))
    chord = four_bars([[60, 62], [64], [65], [67]])
    chord.tracks[0].notes.append(Note(480, 480, 79, 80))  # a chord on bar 1's last onset: its top note counts
    assert seams(chord, lines, 1, 2)["entry"]["top_voice_leap"] == 15  # 79 -> 64
    silent = four_bars([[60], [], [65], [67]])
    assert seams(silent, lines, 1, 2)["entry"]["top_voice_leap"] is None  # nothing to leap to


def test_notes_outside_catch_any_change():
    score = four_bars([[60, 62], [64], [65], [67]])
    same = score.copy()
    assert outside_notes(score, 1920, 3840) == outside_notes(same, 1920, 3840)
    same.tracks[0].notes[0].velocity = 81
    assert outside_notes(score, 1920, 3840) != outside_notes(same, 1920, 3840)
    changed_inside = score.copy()
    changed_inside.tracks[0].notes[2].pitch = 70  # onset 1920: inside the span
    assert outside_notes(score, 1920, 3840) == outside_notes(changed_inside, 1920, 3840)


def test_infilling_is_skipped_with_its_reason():
    def run_of(tasks, **flags):
        return SimpleNamespace(args=EvaluateArguments(**flags), config=SimpleNamespace(midilm_tasks=tasks))

    got, _ = infilling_section(run_of(["continuation", "accompaniment"]), {})
    assert got["infilling"] is None and "never on infill" in got["infilling_skipped"]
    got, _ = infilling_section(run_of(["continuation", "infill"], infill_pieces=0), {})
    assert got["infilling"] is None and "0" in got["infilling_skipped"]
    with pytest.raises(InputError, match="--infill_spans_per_piece -1"):
        EvaluateArguments(infill_spans_per_piece=-1)
