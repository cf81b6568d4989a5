"""What a row looks like: the one module that knows where each token of a row sits.

    continuation   [BOS, COMPOSER, music…, EOS]
    accompaniment  [BOS, COMPOSER, MELODY, melody bars k..j…, FULL, the full piece's bars k..j…, EOS]
    infill         [BOS, COMPOSER, bars before the span…, GAP, bars after it…, FILL, the span's bars…, EOS]

Every row opens with the header `[BOS, COMPOSER]`. The collator swaps the token at
`COMPOSER_POSITION` for COMPOSER_NONE (composer dropout) and never scores it; generation writes a
prompt after the header; a window over a row too long for the context restarts from the header.
EOS closes a piece's last row only: it means "the piece ends here". The MELODY and FULL markers are
special tokens (midilm.tokenizer), so BPE never merges them with music; so are GAP and FILL. An infill row
always ends with EOS: it closes the span (the bars that stood where GAP is), wherever in the piece that was.
Infill rows are not stored: the training collator draws them from continuation rows (`infill_row`).

Works on lists, numpy arrays and torch tensors alike; on a batch (2-D), on every row at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from midilm.tokenizer import infill_token_ids, section_token_ids

HEADER_TOKENS = 2  # BOS, COMPOSER
COMPOSER_POSITION = 1
TASKS = ("continuation", "accompaniment", "infill")
# Tokens a row holds besides its music: the header, EOS and, for accompaniment, MELODY and FULL;
# for infill, GAP and FILL.
OVERHEAD = {"continuation": HEADER_TOKENS + 1, "accompaniment": HEADER_TOKENS + 3, "infill": HEADER_TOKENS + 3}
IGNORED_LABEL = -100  # transformers' loss skips it
MAX_SPAN_BARS = 8  # training spans: 1 to 8 whole bars, a phrase or two, the rewrites people ask for


def music_room(max_len: int, task: str) -> int:
    """The music tokens a row of `task` may hold within `max_len` tokens."""
    return max_len - OVERHEAD[task]


def continuation_overhead(rows: int, pieces: int) -> int:
    """The non-music tokens of `rows` continuation rows cut from `pieces` pieces: a header on every row, EOS on each piece's last."""
    return HEADER_TOKENS * rows + pieces


def body_room(context: int) -> int:
    """The tokens after the header that fit `context`: prompt plus new tokens, or a window's body."""
    return context - HEADER_TOKENS


def header(ids):
    """`[BOS, COMPOSER]` of a row (of every row of a batch)."""
    return ids[..., :HEADER_TOKENS] if getattr(ids, "ndim", 1) > 1 else ids[:HEADER_TOKENS]


def body(ids):
    """Everything after the header: the tokens a row's likelihood is measured on (nothing predicts BOS or the composer)."""
    return ids[..., HEADER_TOKENS:] if getattr(ids, "ndim", 1) > 1 else ids[HEADER_TOKENS:]


def body_predictions(logits):
    """The outputs (batch, position, vocab) that predict the body: position t predicts token t + 1."""
    return logits[:, HEADER_TOKENS - 1 : -1]


def composer_of(ids) -> int:
    return int(ids[COMPOSER_POSITION])


def set_composer(ids, composer_id: int, rows=None):
    """Put `composer_id` in the composer's place, in place: of a row, of every row of a batch, or of `rows` of it."""
    if rows is None:
        ids[..., COMPOSER_POSITION] = composer_id
    else:
        ids[rows, COMPOSER_POSITION] = composer_id
    return ids


def with_composer(ids: Sequence[int], composer_id: int) -> list[int]:
    """A copy of a row with another composer token (COMPOSER_NONE: the unconditional twin)."""
    return [int(ids[0]), composer_id, *(int(i) for i in body(ids))]


def ignore_composer_label(labels):
    """Labels that skip the composer token (in place): nothing predicts it, since it is given."""
    labels[..., COMPOSER_POSITION] = IGNORED_LABEL
    return labels


def new_tokens_start(prompt_tokens: int) -> int:
    """Where the generated tokens begin in a generated row holding a prompt of `prompt_tokens`."""
    return HEADER_TOKENS + prompt_tokens


def has_header(ids: Sequence[int], bos: int, composer_ids) -> bool:
    """Whether a row starts `[BOS, one of composer_ids]`."""
    return len(ids) >= HEADER_TOKENS and int(ids[0]) == bos and int(ids[COMPOSER_POSITION]) in composer_ids


def header_problems(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, bos: int, composer_tokens: np.ndarray
) -> np.ndarray:
    """For flat Arrow rows (`values`, each row at `starts` with `lengths`): which do not open with
    `[BOS, composer_tokens[row]]` (`composer_tokens`: the expected composer token of each row)."""
    bad = lengths < HEADER_TOKENS
    ok = ~bad
    bad[ok] = (values[starts[ok]] != bos) | (values[starts[ok] + COMPOSER_POSITION] != composer_tokens[ok])
    return bad


def body_mask(total: int, starts: np.ndarray) -> np.ndarray:
    """For flat Arrow rows of `total` tokens beginning at `starts`: True on every body token."""
    scored = np.ones(total, dtype=bool)
    for k in range(HEADER_TOKENS):
        scored[starts + k] = False
    return scored


def windows(ids: Sequence[int], context: int) -> list[list[int]]:
    """A row cut to the model's context: each window restarts from the header and holds the next body tokens."""
    if len(ids) <= context:
        return [list(ids)]
    head, rest, width = list(header(ids)), body(ids), body_room(context)
    return [head + list(rest[i : i + width]) for i in range(0, len(rest), width)]


def is_accompaniment(ids, melody_id: int | None) -> bool:
    """Whether a row is an accompaniment row (MELODY right after the header)."""
    return melody_id is not None and len(ids) > HEADER_TOKENS and int(ids[HEADER_TOKENS]) == melody_id


def is_infill(ids, fill_id: int | None) -> bool:
    """Whether a row is an infill row (it holds the FILL marker)."""
    return fill_id is not None and any(int(i) == fill_id for i in ids)


def full_section(ids: list[int], full_id: int | None) -> list[int]:
    """The tokens after an accompaniment row's FULL marker (the whole row when it has none)."""
    if full_id is None or full_id not in ids:
        return ids
    return ids[len(ids) - ids[::-1].index(full_id) :]


@dataclass(frozen=True)
class RowLayout:
    """The ids of a tokenizer's row markers, and the builders of its rows."""

    bos: int
    eos: int
    sections: tuple[int, int] | None  # MELODY, FULL; None for a tokenizer made before they existed
    infill_markers: tuple[int, int] | None = None  # GAP, FILL; None for a tokenizer made before them: it cannot infill

    @classmethod
    def for_tokenizer(cls, tokenizer) -> RowLayout:
        return cls(
            tokenizer["BOS_None"], tokenizer["EOS_None"], section_token_ids(tokenizer), infill_token_ids(tokenizer)
        )

    @property
    def gap(self) -> int | None:
        return self.infill_markers[0] if self.infill_markers else None

    @property
    def fill(self) -> int | None:
        return self.infill_markers[1] if self.infill_markers else None

    @property
    def melody(self) -> int | None:
        return self.sections[0] if self.sections else None

    @property
    def full(self) -> int | None:
        return self.sections[1] if self.sections else None

    def header(self, composer_id: int) -> list[int]:
        return [self.bos, composer_id]

    def continuation(self, composer_id: int, music, last: bool) -> np.ndarray:
        """A continuation row (int32); EOS only when `last` (the piece's last chunk)."""
        return np.concatenate((self.header(composer_id), music, [self.eos] if last else [])).astype(np.int32)

    def accompaniment(self, composer_id: int, melody, full, last: bool) -> np.ndarray:
        """An accompaniment row (int32) of melody bars and the same bars in full; EOS only when `last`."""
        return np.concatenate(
            (self.accompaniment_prompt(composer_id, melody), full, [self.eos] if last else [])
        ).astype(np.int32)

    def continuation_prompt(self, composer_id: int, prompt: Sequence[int] = ()) -> list[int]:
        """What generate() reads to continue `prompt` (possibly empty) in `composer_id`'s style."""
        return [*self.header(composer_id), *prompt]

    def accompaniment_prompt(self, composer_id: int, melody: Sequence[int], written: Sequence[int] = ()) -> list[int]:
        """What generate() reads to write the full section under `melody`, after the full bars already `written`."""
        return [*self.header(composer_id), self.melody, *melody, self.full, *written]

    def infill(self, composer_id: int, before, after, span) -> np.ndarray:
        """An infill row (int32): the bars around a span, then the span and EOS. ValueError for a tokenizer without
        the GAP/FILL markers."""
        return np.concatenate((self.infill_prompt(composer_id, before, after), span, [self.eos])).astype(np.int32)

    def infill_prompt(self, composer_id: int, before: Sequence[int], after: Sequence[int]) -> list[int]:
        """What generate() reads to write the span that stood between `before` and `after` (each possibly empty)."""
        if self.infill_markers is None:
            raise ValueError("this tokenizer has no GAP/FILL markers: it was made before the infill task")
        return [*self.header(composer_id), *before, self.gap, *after, self.fill]

    def infill_parts(self, ids: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """(before, after, span) of an infill row; the span without EOS."""
        ids = [int(i) for i in ids]
        gap, fill = ids.index(self.gap), ids.index(self.fill)
        span = ids[fill + 1 :]
        return ids[HEADER_TOKENS:gap], ids[gap + 1 : fill], span[:-1] if span[-1:] == [self.eos] else span

    def is_accompaniment(self, ids) -> bool:
        return is_accompaniment(ids, self.melody)

    def is_infill(self, ids) -> bool:
        return is_infill(ids, self.fill)

    def music(self, ids: Sequence[int]) -> list[int]:
        """A row's music: the body of a continuation row, the full section of an accompaniment row, the span of an
        infill row; no EOS."""
        ids = [int(i) for i in ids]
        if self.is_infill(ids):
            return self.infill_parts(ids)[2]
        music = full_section(ids, self.full) if self.is_accompaniment(ids) else list(body(ids))
        return music[:-1] if music[-1:] == [self.eos] else music


def infill_row(layout: RowLayout, ids, starts_bar: np.ndarray, max_len: int, draw, max_span_bars: int = MAX_SPAN_BARS):
    """A continuation row turned into an infill row of at most `max_len` tokens: (row, first span bar, span bars),
    bars counted from the row's first bar line; None when the row holds no bar line to cut at.

    `draw(n)` gives an integer in [0, n). The span is 1 to `max_span_bars` whole bars (as many as the row holds at
    most), every length and then every place equally likely. A row longer than `music_room(max_len, "infill")` is
    first cut to a window of that many tokens at a drawn place, then back to its last bar line, so the span never
    ends inside a bar; tokens before the window's first bar line stay in the bars before the span.
    """
    ids = np.asarray(ids, dtype=np.int64)
    music = body(ids)
    if len(music) and music[-1] == layout.eos:
        music = music[:-1]
    lines = np.flatnonzero(starts_bar[music])
    room = music_room(max_len, "infill")
    if len(music) > room:
        start = draw(len(music) - room + 1)
        cut = music[start : start + room]
        lines = np.flatnonzero(starts_bar[cut])
        if start + room < len(music) and len(lines):
            cut, lines = cut[: lines[-1]], lines[:-1]
        music = cut
    if not len(lines):
        return None
    edges = [*lines.tolist(), len(music)]
    bars = 1 + draw(min(max_span_bars, len(lines)))
    first = draw(len(lines) - bars + 1)
    a, b = edges[first], edges[first + bars]
    return layout.infill(composer_of(ids), music[:a], music[b:], music[a:b]), first, bars
