"""midilm.core.rows: the one place that knows a row's layout; builders and parsers agree, windows keep the header."""

import numpy as np
import pytest
import torch

from midilm.core import rows
from midilm.core.rows import RowLayout

LAYOUT = RowLayout(bos=1, eos=2, sections=(5, 6))
COMPOSER, NONE = 9, 4


def test_long_rows_are_scored_in_windows_that_keep_the_header():
    row = [1, 7] + list(range(10, 20))
    parts = rows.windows(row, context=6)
    assert [p[:2] for p in parts] == [[1, 7]] * 3
    assert [t for p in parts for t in p[2:]] == row[2:]
    assert rows.windows(row, context=12) == [row]


@pytest.mark.parametrize("last", [True, False])
def test_continuation_row_round_trips(last):
    music = np.array([20, 21, 22])
    row = LAYOUT.continuation(COMPOSER, music, last=last)
    assert row.dtype == np.int32
    assert row.tolist() == [1, COMPOSER, 20, 21, 22] + ([2] if last else [])
    assert rows.composer_of(row) == COMPOSER and rows.has_header(row, 1, {COMPOSER})
    assert not LAYOUT.is_accompaniment(row)
    assert LAYOUT.music(row) == music.tolist()
    assert list(rows.header(row)) == LAYOUT.header(COMPOSER)
    assert list(rows.body(row)) == row.tolist()[2:]


@pytest.mark.parametrize("last", [True, False])
def test_accompaniment_row_round_trips(last):
    melody, full = np.array([30, 31]), np.array([40, 41, 42])
    row = LAYOUT.accompaniment(COMPOSER, melody, full, last=last)
    assert row.tolist() == [1, COMPOSER, 5, 30, 31, 6, 40, 41, 42] + ([2] if last else [])
    assert LAYOUT.is_accompaniment(row) and rows.is_accompaniment(row, 5)
    assert LAYOUT.music(row) == full.tolist()
    assert rows.full_section(row.tolist(), 6)[: len(full)] == full.tolist()
    # the generation prompt is the row up to FULL, then the full bars already written
    assert LAYOUT.accompaniment_prompt(COMPOSER, melody.tolist(), [40]) == row.tolist()[:7]


def test_overhead_is_what_a_row_adds_to_its_music():
    melody, full = np.array([30, 31]), np.array([40, 41, 42])
    assert len(LAYOUT.accompaniment(COMPOSER, melody, full, last=True)) == rows.OVERHEAD["accompaniment"] + 5
    assert len(LAYOUT.continuation(COMPOSER, full, last=True)) == rows.OVERHEAD["continuation"] + 3
    assert rows.music_room(24, "continuation") == 21 and rows.music_room(24, "accompaniment") == 19
    assert rows.body_room(24) == 22 and rows.new_tokens_start(3) == 5
    chunks = [LAYOUT.continuation(COMPOSER, np.arange(20, 20 + k), last=k == 2) for k in (4, 2)]  # one piece, two rows
    assert sum(map(len, chunks)) - rows.continuation_overhead(rows=2, pieces=1) == 6


def test_composer_swaps_and_labels_on_one_row_and_a_batch():
    row = torch.tensor([1, COMPOSER, 20, 21])
    assert rows.with_composer(row.tolist(), NONE) == [1, NONE, 20, 21]
    assert rows.set_composer(row.clone(), NONE).tolist() == [1, NONE, 20, 21]
    batch = torch.tensor([[1, COMPOSER, 20], [1, COMPOSER, 21]])
    rows.set_composer(batch, NONE, rows=torch.tensor([False, True]))
    assert batch[:, 1].tolist() == [COMPOSER, NONE]
    labels = rows.ignore_composer_label(batch.clone())
    assert (labels[:, 1] == rows.IGNORED_LABEL).all() and torch.equal(labels[:, [0, 2]], batch[:, [0, 2]])
    assert torch.equal(rows.body(batch), batch[:, 2:]) and torch.equal(rows.header(batch), batch[:, :2])
    logits = torch.zeros(2, 3, 7)
    assert rows.body_predictions(logits).shape == (2, 1, 7)  # position 1 predicts the body's first token


def test_flat_arrow_rows_checked_and_masked():
    values = np.array([1, COMPOSER, 20, 1, 8, 21, 22])
    starts, lengths = np.array([0, 3]), np.array([3, 4])
    bad = rows.header_problems(values, starts, lengths, 1, np.array([COMPOSER, COMPOSER]))
    assert bad.tolist() == [False, True]
    assert values[rows.body_mask(len(values), starts)].tolist() == [20, 21, 22]
