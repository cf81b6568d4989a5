"""Infilling: the GAP/FILL layout, spans drawn by the training collator, exact spans from generate(), notes outside
the span kept on real music21 chorales, generate.py --infill_midi and its refusals, and a tiny train + infill."""

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
from datasets import load_from_disk
from symusic import Score
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

from midilm.core.errors import InputError
from midilm.core.rows import IGNORED_LABEL, MAX_SPAN_BARS, RowLayout, infill_row, music_room
from midilm.core.tokenizer import (
    GAP_TOKEN,
    bar_start_table,
    build_tokenizer,
    infill_token_ids,
    load_tokenizer,
    make_tokenizer_config,
    save_tokenizer,
    section_token_ids,
    vocab_base_tokens,
)
from midilm.data.arguments import PrepareArguments
from midilm.data.dataset import split_bars
from midilm.sampling.grammar import RemiGrammar, count_syntax_errors
from midilm.sampling.infilling import infill_span, load_piece, parse_bars, plan_context, prepare_infill
from midilm.sampling.settings import SamplingSettings
from midilm.training.collator import MidiCollator
from midilm.training.data import dataset_tasks_and_row_len

CONTEXT = 256  # the dataset's rows
MODEL_CONTEXT = 768  # the random model's: room for a few bars of a four-voice chorale around a span


@pytest.fixture(scope="module")
def infill_data(prepared_infill) -> dict:
    return prepared_infill


@pytest.fixture(scope="module")
def tokenizer(infill_data):
    return load_tokenizer(infill_data["tokenizer"])[0]


@pytest.fixture(scope="module")
def model_dir(infill_data, tmp_path_factory) -> Path:
    """A random-weight tiny Llama on that tokenizer, saved as train.py saves one trained for infill."""
    out = tmp_path_factory.mktemp("infill_model") / "model_output"
    tokenizer, composer_map = load_tokenizer(infill_data["tokenizer"])
    return save_random_model(out, tokenizer, composer_map, MODEL_CONTEXT, midilm_tasks=["continuation", "infill"])


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def bars_of(tokenizer, ids) -> list[np.ndarray]:
    return split_bars(np.asarray(ids, dtype=np.int64), np.asarray(bar_start_table(tokenizer)))


def notes_outside(score: Score, start: int, end: int) -> list[tuple]:
    """Every note whose onset is outside [start, end): (track, program, onset, duration, pitch, velocity)."""
    return sorted(
        (k, t.program, n.time, n.duration, n.pitch, n.velocity)
        for k, t in enumerate(score.tracks)
        for n in t.notes
        if not start <= n.time < end
    )


# ---- layout and data -----------------------------------------------------------------------------


def test_markers_are_special_and_never_merged(tokenizer):
    gap, fill = infill_token_ids(tokenizer)
    base = vocab_base_tokens(tokenizer)
    assert base[gap] == [GAP_TOKEN] and base[fill] == ["FILL_None"]
    assert not [i for i, item in enumerate(base) if len(item) > 1 and {"GAP_None", "FILL_None"} & set(item)]
    assert {gap, fill}.isdisjoint(section_token_ids(tokenizer))
    assert RowLayout.for_tokenizer(tokenizer).infill_markers == (gap, fill)


def test_layout_round_trips_and_reads_under_the_grammar(infill_data, tokenizer):
    layout = RowLayout.for_tokenizer(tokenizer)
    grammar = RemiGrammar.for_tokenizer(tokenizer)
    dataset = load_from_disk(str(infill_data["data"]))["train"]
    music = layout.music(dataset[0]["input_ids"])
    bars = bars_of(tokenizer, music)
    assert len(bars) >= 4
    for first, stop in ((0, 1), (1, 3), (len(bars) - 2, len(bars)), (0, len(bars))):  # start, middle, end, all
        before = np.concatenate(bars[:first]).tolist() if first else []
        span = np.concatenate(bars[first:stop]).tolist()
        after = np.concatenate(bars[stop:]).tolist() if stop < len(bars) else []
        row = layout.infill(7, before, after, span).tolist()
        assert row[:2] == [layout.bos, 7] and row[-1] == layout.eos
        assert row.count(layout.gap) == 1 and row.count(layout.fill) == 1
        assert layout.infill_parts(row) == (before, after, span)
        assert layout.is_infill(row) and not layout.is_accompaniment(row)
        assert layout.music(row) == span
        assert row[: -len(span) - 1] == layout.infill_prompt(7, before, after)
        # GAP and FILL are read where a bar may begin (or right after the header); the span alone is measured
        assert grammar.first_violation(row) is None
        assert count_syntax_errors(tokenizer, row) == 0.0
    assert not layout.is_infill(dataset[0]["input_ids"])


def test_prepare_keeps_room_for_the_markers(infill_data, prepared):
    """An infill dataset is continuation rows only, each 2 tokens shorter than the context, so that the collator's
    infill row (2 markers more, and EOS) always fits; training reads the task from the report."""
    report = infill_data["report"]
    assert report["tasks"] == ["continuation", "infill"]
    assert report["splits"]["train"]["tasks"] == {"continuation": report["splits"]["train"]["chunks"]}
    dataset = load_from_disk(str(infill_data["data"]))["train"]
    assert set(dataset["task"]) == {"continuation"}
    assert max(len(ids) for ids in dataset["input_ids"]) <= CONTEXT - 2
    assert dataset_tasks_and_row_len(Path(infill_data["data"]), dataset) == (["continuation", "infill"], CONTEXT)
    assert dataset_tasks_and_row_len(Path(prepared["data"]), load_from_disk(str(prepared["data"]))["train"])[0] == [
        "continuation"
    ]
    with pytest.raises(InputError, match="infill rows are drawn from continuation rows"):
        PrepareArguments(tasks="infill")


def test_the_infill_task_moves_no_piece_between_splits(infill_data, prepared):
    """Splits come from a hash of the scan's token ids: the scan encodes without GAP/FILL, so its ids (and every
    corpus's splits) are those of the tokenizers made before the markers."""
    from midilm.data.scan import scan_vocabulary

    vocab = scan_vocabulary(TOKENIZER_SETTINGS)
    assert "GAP_None" not in vocab and "FILL_None" not in vocab and vocab[-1] != "FILL_None"
    with_markers = make_tokenizer_config(TOKENIZER_SETTINGS, []).special_tokens
    assert [t for t in with_markers if t not in ("GAP_None", "FILL_None")] == vocab[: len(with_markers) - 2]
    for split in ("train", "validation", "test"):
        plain = set(load_from_disk(str(prepared["data"]))[split]["source"])
        assert plain and set(load_from_disk(str(infill_data["data"]))[split]["source"]) == plain


def test_collator_draws_spans_within_bounds(infill_data, tokenizer):
    layout = RowLayout.for_tokenizer(tokenizer)
    starts_bar = np.asarray(bar_start_table(tokenizer))
    rows = load_from_disk(str(infill_data["data"]))["train"].select(range(16))
    pad, none_id = tokenizer.pad_token_id, tokenizer["COMPOSER_NONE"]
    collator = MidiCollator(
        pad,
        none_id,
        0.0,
        CONTEXT,
        generator=torch.Generator().manual_seed(0),
        infill_share=1.0,
        layout=layout,
        starts_bar=starts_bar,
    )
    lengths, firsts = set(), set()
    for _ in range(8):
        batch = collator(list(rows))
        for original, ids, mask, labels in zip(rows, batch["input_ids"], batch["attention_mask"], batch["labels"]):
            ids, labels = ids[mask.bool()].tolist(), labels[mask.bool()].tolist()
            assert len(ids) <= CONTEXT and ids[:2] == original["input_ids"][:2] and ids[-1] == layout.eos
            before, after, span = layout.infill_parts(ids)
            span_bars = bars_of(tokenizer, span)
            assert 1 <= len(span_bars) <= MAX_SPAN_BARS and starts_bar[span[0]]
            assert not after or starts_bar[after[0]], "the bars after the span start at a bar line"
            music = layout.music(original["input_ids"])  # no crop needed: the whole row, cut at the span's bar lines
            assert before + span + after == music
            lengths.add(len(span_bars))
            firsts.add(len(bars_of(tokenizer, before)) if before else 0)
            # scored: everything but the composer and the two markers (the span and its EOS included)
            ignored = [i for i, label in enumerate(labels) if label == IGNORED_LABEL]
            assert ignored == [1, ids.index(layout.gap), ids.index(layout.fill)]
    assert len(lengths) >= 5 and len(firsts) >= 5, "lengths and places are drawn"

    # a row longer than the context is cut to a window whose span still sits at bar lines and fits
    short = MidiCollator(
        pad, none_id, 0.0, 64, generator=torch.Generator().manual_seed(1), infill_share=1.0, layout=layout,
        starts_bar=starts_bar,
    )  # fmt: skip
    for ids in short(list(rows))["input_ids"]:
        ids = [i for i in ids.tolist() if i != pad]
        assert len(ids) <= 64 and ids[-1] == layout.eos
        _, after, span = layout.infill_parts(ids)
        assert starts_bar[span[0]] and 1 <= len(bars_of(tokenizer, span)) <= MAX_SPAN_BARS

    # evaluation draws the same spans every time; with share 0.5 some rows stay continuation rows
    half = MidiCollator(pad, none_id, 0.15, CONTEXT, infill_share=0.5, layout=layout, starts_bar=starts_bar)
    twin = half.for_evaluation()
    first, second = twin(list(rows)), twin(list(rows))
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    kinds = {layout.is_infill(ids.tolist()) for ids in first["input_ids"]}
    assert kinds == {True, False}


def test_infill_row_on_a_row_without_bar_lines(tokenizer):
    layout = RowLayout.for_tokenizer(tokenizer)
    starts_bar = np.asarray(bar_start_table(tokenizer))
    position = next(i for i, item in enumerate(vocab_base_tokens(tokenizer)) if item == ["Position_0"])
    assert infill_row(layout, [layout.bos, 5, position, position], starts_bar, CONTEXT, lambda n: 0) is None
    assert music_room(CONTEXT, "infill") == CONTEXT - 5


# ---- generation ----------------------------------------------------------------------------------


def test_parse_bars_and_plan_context():
    assert parse_bars("9-12") == (9, 12) and parse_bars(" 3 ") == (3, 3)
    for text, message in (
        ("12-9", "reversed"),
        ("nine", "give a bar range"),
        ("0-2", "counted from 1"),
        ("", "give a bar"),
    ):
        with pytest.raises(InputError, match=message):
            parse_bars(text)
    lengths = [10] * 20
    # the nearest bars, taken in turn from each side, while they fit: 5 + 30 + 10 * 6 <= 100
    assert plan_context(lengths, 8, 10, 100, 30) == (5, 13)
    assert plan_context(lengths, 0, 2, 100, 30) == (0, 8)  # nothing before: all the room goes after
    with pytest.raises(InputError, match="one bar of context on each side"):
        plan_context(lengths, 8, 10, 54, 30)


class Bias(LogitsProcessor):
    """Stands for a model with a taste: adds `value` to every item that begins a bar (or to EOS)."""

    def __init__(self, items: torch.Tensor, value: float):
        self.items, self.value = items, value

    def __call__(self, input_ids, scores):
        return scores + self.value * self.items.to(scores.dtype)


def with_bias(model, items: torch.Tensor, value: float, seen: list):
    """`model` whose generate() runs `Bias` before the plan's processors, and keeps each output in `seen`."""
    original = model.generate

    def generate(*args, logits_processor, **kwargs):
        output = original(
            *args, logits_processor=LogitsProcessorList([Bias(items, value), *logits_processor]), **kwargs
        )
        seen.append(output)
        return output

    model.generate = generate
    return model


@pytest.mark.parametrize("taste", ["bar lines", "no bar lines, no EOS"])
def test_the_span_has_exactly_its_bars(taste, model_dir, tokenizer, bach_files):
    """Whatever the model wants, the span has exactly the bars asked for: a model that would start a new bar at
    every step writes N bars then EOS; one that never would gets its bars completed (reported as cut)."""
    starts_bar = torch.tensor(bar_start_table(tokenizer))
    eos = tokenizer["EOS_None"]
    items = starts_bar if taste == "bar lines" else starts_bar | (torch.arange(len(tokenizer)) == eos)
    seen = []
    model = with_bias(
        AutoModelForCausalLM.from_pretrained(model_dir).eval(), items, 30.0 if taste == "bar lines" else -30.0, seen
    )
    job = prepare_infill(
        model_dir, bach_files[0].path, "2-4", composer="none", num_samples=2, settings=SamplingSettings(seed=0)
    )
    results = job.run(model)
    fill = infill_token_ids(tokenizer)[1]
    for k, result in enumerate(results):
        assert len(bars_of(tokenizer, result.ids)) == 3
        raw = seen[0][k].tolist()
        written = raw[raw.index(fill) + 1 :]
        if taste == "bar lines":
            assert written.index(eos) > 0 and len(bars_of(tokenizer, written[: written.index(eos)])) == 3
            assert result.cut_bars == 0
        else:
            assert eos not in written and len(bars_of(tokenizer, written)) == 1 and result.cut_bars == 3
        assert result.syntax_error_rate == 0.0


def test_notes_outside_the_span_are_identical_on_real_pieces(model, tokenizer, infill_data, bach_files):
    """Through the real generate path, on music21 chorales (their own ticks, tempos and time signatures): a span at
    the start, in the middle and at the end of a piece; every note outside it is the file's, every new note sits
    in the span."""
    _, composer_map = load_tokenizer(infill_data["tokenizer"])
    for file in bach_files[:3]:
        piece = load_piece(tokenizer, file.path)
        n = piece.num_bars
        for first, last in ((1, 1), (n // 2, n // 2 + 1), (n - 1, n)):
            results = infill_span(
                model,
                tokenizer,
                composer_map,
                piece,
                (first, last),
                ["alpha", "none"],
                settings=SamplingSettings(seed=first, guidance_scale=1.0),
            )
            start, end = piece.lines[first - 1], piece.lines[last]
            original = Score(file.path)
            for result in results:
                score = result.score
                assert notes_outside(score, start, end) == notes_outside(original, start, end)
                assert [t.name for t in score.tracks[: len(original.tracks)]] == [t.name for t in original.tracks]
                assert score.tempos == original.tempos and score.time_signatures == original.time_signatures
                assert score.ticks_per_quarter == original.ticks_per_quarter
                new = [(n_.time, n_.end) for t in result.span.tracks for n_ in t.notes]
                assert new and all(start <= a < end and b <= end for a, b in new)
                inside = sorted((n_.time, n_.pitch) for t in score.tracks for n_ in t.notes if start <= n_.time < end)
                assert inside == sorted((n_.time, n_.pitch) for t in result.span.tracks for n_ in t.notes)
                assert len(bars_of(tokenizer, result.ids)) == last - first + 1
                assert result.syntax_error_rate == 0.0
                # every new note lies in the bar it was written in: the span's bars are the original bar lines
                span_bars = bars_of(tokenizer, result.ids)
                assert result.bars == (first, last) and len(span_bars) == last - first + 1


# ---- generate.py ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    return load_script("generate.py")


def test_cli_writes_the_rewrites(script, model_dir, bach_files, tmp_path, monkeypatch, capsys):
    path = bach_files[1].path
    out = tmp_path / "samples"
    argv = ["--model_dir", str(model_dir), "--infill_midi", str(path), "--bars", "3-4", "--composer", "alpha"]
    assert run_cli(script, monkeypatch, *argv, "--num_samples", "2", "--seed", "0", "--output_dir", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"infill_alpha_{i}{s}" for i in (0, 1) for s in (".json", ".mid")]
    piece = load_piece(load_tokenizer(model_dir)[0], path)
    start, end = piece.lines[2], piece.lines[4]
    for i in (0, 1):
        record = json.loads((out / f"infill_alpha_{i}.json").read_text())
        assert record["bars"] == [3, 4] and record["infill_midi"] == str(path) and record["composer"] == "alpha"
        assert record["context_bars"]["before"] == [1, 2] and record["context_bars"]["after"][0] == 5
        assert record["syntax_error_rate"] == 0.0 and len(bars_of(load_tokenizer(model_dir)[0], record["tokens"])) == 2
        written = Score(out / f"infill_alpha_{i}.mid")
        assert notes_outside(written, start, end) == notes_outside(Score(path), start, end)
    assert "2 rewrite(s) of bars 3-4" in capsys.readouterr().out


def continuation_model(model_dir: Path, root: Path, tasks: list[str] | None) -> Path:
    """The same folder recorded as trained on `tasks` (None: no record, a model from before the key)."""
    out = root / f"tasks_{'_'.join(tasks or ['none'])}"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.pop("midilm_tasks", None)
    if tasks is not None:
        config["midilm_tasks"] = tasks
    (out / "config.json").write_text(json.dumps(config))
    return out


def no_markers_model(model_dir: Path, root: Path) -> Path:
    """A model folder from before the infill task: its tokenizer has no GAP/FILL (its config claims infill, so
    the tokenizer alone is what refuses)."""
    out = root / "old"
    shutil.copytree(model_dir, out)
    _, composer_map = load_tokenizer(out)
    config = make_tokenizer_config(TOKENIZER_SETTINGS, composer_map.names)
    config.special_tokens = [t for t in config.special_tokens if t not in ("GAP_None", "FILL_None")]
    import miditok

    old = miditok.REMI(config)
    save_tokenizer(old, composer_map, out)
    model_config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**model_config, "vocab_size": len(old)}))
    return out


def test_a_model_from_before_the_markers_still_samples(script, model_dir, tmp_path, monkeypatch):
    """A tokenizer without GAP/FILL loads and continues music as before; only infilling is refused."""
    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["alpha", "beta"], infill_markers=False)
    old = save_random_model(tmp_path / "old", tokenizer, composer_map, CONTEXT)
    assert infill_token_ids(load_tokenizer(old)[0]) is None
    out = tmp_path / "samples"
    argv = ["--model_dir", str(old), "--composer", "alpha", "--max_new_tokens", "48", "--output_dir", str(out)]
    assert run_cli(script, monkeypatch, *argv) == 0
    record = json.loads((out / "alpha_0.json").read_text())
    assert record["new_tokens"] > 0 and record["syntax_error_rate"] == 0.0


def short_context_model(model_dir: Path, root: Path) -> Path:
    out = root / "short"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 200}))
    return out


BAD_INFILLS = {
    "bars past the piece": (["--bars", "5-99"], "has {bars} bars (counted from 1)"),
    "bar zero": (["--bars", "0-2"], "--bars 0-2: bars are counted from 1"),
    "reversed bars": (["--bars", "4-2"], "--bars 4-2: the range is reversed (empty)"),
    "unparsable bars": (["--bars", "nine-twelve"], "--bars 'nine-twelve': give a bar range such as 9-12"),
    "no bars": ([], "--infill_midi needs --bars"),
    "with a prompt": (["--bars", "2-3", "--prompt_midi", "{piece}"], "--infill_midi and --prompt_midi: choose one"),
    "with a melody": (["--bars", "2-3", "--melody_midi", "{piece}"], "--infill_midi and --melody_midi: choose one"),
    "bars without a piece": (["--bars", "2-3", "--no_piece"], "--bars: the bars of --infill_midi to rewrite"),
    "continuation-only model": (
        ["--bars", "2-3", "--model_dir", "{continuation}"],
        (
            "this model was trained on continuation rows only, never on infill; prepare the data with --tasks "
            "continuation,infill"
        ),
    ),
    "model without recorded tasks": (
        ["--bars", "2-3", "--model_dir", "{unrecorded}"],
        "this model was trained on continuation rows only, never on infill",
    ),
    "accompaniment model": (
        ["--bars", "2-3", "--model_dir", "{accompaniment}"],
        "trained on continuation, accompaniment rows only, never on infill",
    ),
    "tokenizer from before the task": (["--bars", "2-3", "--model_dir", "{old}"], "no GAP/FILL markers"),
    "span too long for the context": (
        ["--bars", "3-6", "--model_dir", "{short}"],
        "more than the model's context of 200; choose fewer bars",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INFILLS))
def test_bad_infill_is_one_line_exit_2_and_leaves_nothing(
    case, script, model_dir, bach_files, tokenizer, tmp_path, monkeypatch, capsys
):
    extra, message = BAD_INFILLS[case]
    piece = bach_files[2].path
    places = {"piece": piece, "bars": load_piece(tokenizer, piece).num_bars}
    models = tmp_path / "models"
    models.mkdir()
    if "{continuation}" in extra:
        places["continuation"] = continuation_model(model_dir, models, ["continuation"])
    if "{unrecorded}" in extra:
        places["unrecorded"] = continuation_model(model_dir, models, None)
    if "{accompaniment}" in extra:
        places["accompaniment"] = continuation_model(model_dir, models, ["continuation", "accompaniment"])
    if "{old}" in extra:
        places["old"] = no_markers_model(model_dir, models)
    if "{short}" in extra:
        places["short"] = short_context_model(model_dir, models)
    argv = [a.format(**places) for a in extra]
    if "--no_piece" in argv:
        argv.remove("--no_piece")
    else:
        argv = ["--infill_midi", str(piece), *argv]
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


# ---- train + infill ------------------------------------------------------------------------------


def test_tiny_train_records_the_task_then_infills(infill_data, script, tmp_path, monkeypatch):
    """train.py on the infill data with no flag of its own (evaluation included: its twin draws fixed spans), then
    generate.py --infill_midi on the result."""
    out = tmp_path / "model_output"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "train.py"), "--dataset_dir", str(infill_data["data"])]
    command += ["--tokenizer_dir", str(infill_data["tokenizer"]), "--output_dir", str(out), "--max_steps", "6"]
    command += ["--per_device_train_batch_size", "4", "--warmup_steps", "0", "--eval_strategy", "steps"]
    command += ["--eval_steps", "6", "--max_eval_samples", "8", "--save_strategy", "no"]
    command += ["--load_best_model_at_end", "false", "--samples_per_composer", "0", "--logging_steps", "3"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["midilm_tasks"] == ["continuation", "infill"]
    assert "--infill_midi piece.mid --bars 9-12" in (out / "README.md").read_text()  # the model card says how
    assert "tasks continuation+infill" in result.stdout
    path = tmp_path / "piece.mid"
    make_piece(21, bars=8).dump_midi(path)
    samples = tmp_path / "samples"
    argv = ["--model_dir", str(out), "--infill_midi", str(path), "--bars", "3-5", "--composer", "beta"]
    assert run_cli(script, monkeypatch, *argv, "--output_dir", str(samples)) == 0
    record = json.loads((samples / "infill_beta_0.json").read_text())
    assert record["bars"] == [3, 5] and record["syntax_error_rate"] == 0.0
    piece = load_piece(load_tokenizer(out)[0], path)
    start, end = piece.lines[2], piece.lines[5]
    assert notes_outside(Score(samples / "infill_beta_0.mid"), start, end) == notes_outside(Score(path), start, end)
