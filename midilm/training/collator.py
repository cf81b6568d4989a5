"""The collator: crops rows to the context, builds infill spans, drops composers (classifier-free guidance),
sets the labels."""

from __future__ import annotations

import copy
import zlib

import numpy as np
import torch
from transformers import DataCollatorWithFlattening

from midilm.core.rows import (
    IGNORED_LABEL,
    body,
    body_room,
    header,
    ignore_composer_label,
    infill_row,
    is_accompaniment,
    set_composer,
)


class MidiCollator:
    """Pads to the longest row, crops rows over `max_seq_len`, and swaps the composer token for
    COMPOSER_NONE with probability `composer_dropout`. Labels ignore padding and the composer token
    (nothing predicts it).

    A continuation row over `max_seq_len` is cropped at a random place, keeping BOS and the composer
    token in front. An accompaniment row (`[BOS, COMPOSER, MELODY, melody…, FULL, full…, EOS]`, known
    by the MELODY token from `section_ids`) is cut at its end instead: a crop inside it would drop
    the section markers, or pair a melody with bars it does not hold. train.py never lets rows exceed
    the context, so this guards direct users of the collator.

    With `infill_share` > 0 (a dataset prepared with `--tasks ...,infill`), each continuation row becomes an
    infill row with that probability, each time it is drawn (`midilm.core.rows.infill_row`: a span of 1-8 whole bars at
    a drawn place; `layout` and `starts_bar` of the tokenizer are then needed). Its labels skip the GAP and FILL
    markers, which stand where the draw put them; the bars before and after the span, the span and its EOS are
    scored.

    `for_evaluation()` gives the validation twins: no dropout and no random crop, so an evaluation
    is a function of the weights alone; their infill draws are seeded by each row's tokens.
    """

    def __init__(
        self,
        pad_id: int,
        none_id: int,
        composer_dropout: float,
        max_seq_len: int,
        generator: torch.Generator | None = None,
        section_ids: tuple[int, int] | None = None,
        padding_free: bool = False,
        infill_share: float = 0.0,
        layout=None,
        starts_bar=None,
    ):
        if infill_share > 0 and (layout is None or layout.infill_markers is None or starts_bar is None):
            raise ValueError("infill_share needs the layout of a tokenizer with GAP/FILL markers, and its starts_bar")
        self.infill_share, self.layout = infill_share, layout
        self.starts_bar = None if starts_bar is None else np.asarray(starts_bar, dtype=bool)
        self.pad_id, self.none_id = pad_id, none_id
        self.composer_dropout, self.max_seq_len = composer_dropout, max_seq_len
        self.generator = generator
        self.section_ids = section_ids
        self.random_crop = True
        # -100 between rows: the last token of one row never learns to predict the next row's BOS
        self.flatten = (
            DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORED_LABEL) if padding_free else None
        )

    def for_evaluation(self, unconditional: bool = False) -> MidiCollator:
        """A copy for validation batches. Every row keeps its composer token (`unconditional`: every row
        gets COMPOSER_NONE instead), and a row over the context is cut at its end. Dropout at eval time
        would mix the conditional and unconditional losses at random, so `eval_loss`, the best
        checkpoint and early stopping would move with the draw rather than with the model."""
        twin = copy.copy(self)
        twin.composer_dropout = 1.0 if unconditional else 0.0
        twin.random_crop = False
        return twin

    def _dropped(self, n: int) -> torch.Tensor:
        """Which of `n` rows lose their composer token. Rates 0 and 1 draw nothing: evaluating must not
        move the random stream training reads from."""
        if self.composer_dropout <= 0.0 or self.composer_dropout >= 1.0:
            return torch.full((n,), self.composer_dropout >= 1.0)
        return torch.rand(n, generator=self.generator) < self.composer_dropout

    def crop(self, ids: torch.Tensor) -> torch.Tensor:
        if len(ids) <= self.max_seq_len:
            return ids
        if self.section_ids is not None and is_accompaniment(ids, self.section_ids[0]):
            full_at = (ids == self.section_ids[1]).nonzero()
            if not len(full_at) or int(full_at[0]) >= self.max_seq_len - 1:
                raise ValueError(
                    f"an accompaniment row's melody section alone is longer than the context ({self.max_seq_len} "
                    "tokens); "
                    "prepare the dataset with this --max_seq_len"
                )
            return ids[: self.max_seq_len]
        if not self.random_crop:
            return ids[: self.max_seq_len]
        rest, room = body(ids), body_room(self.max_seq_len)
        start = int(torch.randint(0, len(rest) - room + 1, (1,), generator=self.generator))
        return torch.cat([header(ids), rest[start : start + room]])

    def infill(self, ids: torch.Tensor) -> torch.Tensor | None:
        """`ids` turned into an infill row, or None when this draw keeps it a continuation row."""
        if self.infill_share <= 0.0 or is_accompaniment(ids, self.section_ids[0] if self.section_ids else None):
            return None
        # training draws from the collator's stream; evaluation from the row's own, so it is the same every time
        generator = (
            self.generator if self.random_crop else torch.Generator().manual_seed(zlib.crc32(ids.numpy().tobytes()))
        )
        if self.infill_share < 1.0 and float(torch.rand(1, generator=generator)) >= self.infill_share:
            return None

        def draw(n: int) -> int:
            return int(torch.randint(0, n, (1,), generator=generator))

        made = infill_row(self.layout, ids, self.starts_bar, self.max_seq_len, draw)
        return None if made is None else torch.from_numpy(made[0].astype(np.int64))

    def labels(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Labels of rows already masked for padding (in place): nothing predicts the composer or an infill marker."""
        labels = ignore_composer_label(input_ids)
        if self.infill_share > 0.0:
            labels.masked_fill_((labels == self.layout.gap) | (labels == self.layout.fill), IGNORED_LABEL)
        return labels

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        seqs = []
        for row in rows:
            ids = torch.as_tensor(row["input_ids"], dtype=torch.long)
            infilled = self.infill(ids)
            seqs.append(self.crop(ids) if infilled is None else infilled)
        if self.flatten is not None:
            drop = self._dropped(len(seqs))
            packed = []
            for s, dropped in zip(seqs, drop):
                s = s.clone()
                if dropped:
                    set_composer(s, self.none_id)
                packed.append({"input_ids": s, "labels": self.labels(s.clone())})
            return self.flatten(packed)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = s
            attention_mask[i, : len(s)] = 1
        drop = self._dropped(len(seqs))
        set_composer(input_ids, self.none_id, rows=drop)
        labels = self.labels(input_ids.masked_fill(attention_mask == 0, IGNORED_LABEL))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
