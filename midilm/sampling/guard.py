"""The musical guard: a LogitsProcessor that caps the notes starting at one onset, and in one bar.

Strong classifier-free guidance can push a model into a degenerate cluster: dozens of notes piled on
one onset. Every such note is grammatical (the REMI grammar only forbids the same pitch twice for a
program at one position), so `midilm.sampling.grammar` lets it through. The guard masks every vocabulary
item that would start one note more than the training data ever (or almost ever) holds:

* at one onset (the notes after one `Position`, every program together), at most
  `max_notes_per_onset`;
* in one bar (the notes after one `Bar`), at most `max_notes_per_bar`.

The bounds are learnt from the training split (`learn_bounds`: a high quantile, 99.9% by default, of
the notes per onset and per bar of the original pieces) and travel in the model's config.json under
`midilm_guard` (`bounds_to_config`, `bounds_from_config`), so `from_pretrained` carries them.

With BPE one vocabulary item spells several base tokens (`Pitch Velocity Duration Position Program
Pitch ...`). For every item the guard precomputes, from the base tokens `midilm.core.tokenizer.vocab_base_tokens`
gives (the table the grammar is built from), how many notes it adds to the current onset and bar
before its first `Position` / `Bar`, and whether the notes it leaves behind after one already break a
bound. A step is then one comparison per (row, item) against two per-row counters: no Python loop
over the vocabulary, and exact for every item.

Masking a note must not strand a row where the grammar demands one: after `Program` a `Pitch` must
follow, so once an onset is full an item that ends on `Program` is masked too (it needs one note
more than it spells); once a bar is full, so is one that ends on `Position` (the grammar would allow
only a tempo change with no note there). Which token types force a note is read from the grammar's
own type graph. A row whose prompt already broke a bound, so that nothing it may take is left, is
left to the grammar (the guard masks nothing on it) rather than stranded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import miditok
import numpy as np
import torch
from transformers import LogitsProcessor

from midilm.core.tokenizer import vocab_base_tokens
from midilm.sampling.grammar import RemiGrammar
from midilm.sampling.grammar_processor import StepTracker

CONFIG_KEY = "midilm_guard"
DEFAULT_QUANTILE = 0.999
SCAN_BATCH_ROWS = 1024  # rows per Arrow batch in `learn_bounds`: its memory, whatever the split's size
# Base-token kinds, as the guard sees them.
OTHER, NOTE, ONSET, BAR = 0, 1, 2, 3
NOTE_TYPES = ("Pitch", "PitchDrum")


def _kind(token: str, specials: set[str]) -> int:
    if token in specials:
        return BAR  # BOS, a composer, EOS, MELODY/FULL: a new piece or section, so new counts
    token_type = token.partition("_")[0]
    if token_type in NOTE_TYPES:
        return NOTE
    if token_type == "Position":
        return ONSET
    if token_type == "Bar":
        return BAR
    return OTHER


def item_kinds(tokenizer: miditok.REMI) -> list[list[int]]:
    """For every vocabulary id, the kinds (OTHER, NOTE, ONSET, BAR) of the base tokens it spells."""
    specials = set(tokenizer.special_tokens)
    return [[_kind(t, specials) for t in item] for item in vocab_base_tokens(tokenizer)]


def _note_forcing_types(grammar: RemiGrammar, resets: set[str]) -> set[str]:
    """Token types after which the grammar allows no way to a token of `resets` (or to EOS) but through a note."""
    graph = grammar._graph
    forcing = set()
    for start in graph:
        seen, frontier, free = {start}, [start], start == grammar.note_end_type
        while frontier and not free:
            following = []
            for t in frontier:
                for n in graph.get(t, ()):
                    if n in resets or n == grammar.note_end_type:
                        free = True
                    elif n not in NOTE_TYPES and n not in seen:
                        seen.add(n)
                        following.append(n)
            frontier = following
        if not free:
            forcing.add(start)
    return forcing - {"PRELUDE"}


@dataclass
class _Tables:
    """Per vocabulary item, as tensors on one device."""

    need_onset: torch.Tensor  # [V] notes the item adds to the current onset (+1 if it ends needing one more)
    need_bar: torch.Tensor  # [V] the same for the current bar
    static_ok: torch.Tensor  # [V] bool: the onsets and bars the item opens stay within the bounds
    resets_onset: torch.Tensor  # [V] bool: the item holds a Position or Bar (or a special token)
    resets_bar: torch.Tensor  # [V] bool: the item holds a Bar (or a special token)
    add_onset: torch.Tensor  # [V] notes added to the current onset (when no reset) or left on the new one
    add_bar: torch.Tensor  # [V] the same for bars


class NoteGuard:
    """The guard's tables for one tokenizer and one pair of bounds."""

    def __init__(self, tokenizer: miditok.REMI, max_notes_per_onset: int, max_notes_per_bar: int):
        if max_notes_per_onset < 1 or max_notes_per_bar < 1:
            raise ValueError(
                f"the guard's bounds must be at least 1 (got {max_notes_per_onset} per onset, {max_notes_per_bar} "
                "per bar)"
            )
        self.max_notes_per_onset, self.max_notes_per_bar = int(max_notes_per_onset), int(max_notes_per_bar)
        grammar = RemiGrammar.for_tokenizer(tokenizer)
        forcing_onset = _note_forcing_types(grammar, {"Position", "Bar"})
        # A Position opens an onset; in a full bar the grammar could only close it with a tempo change.
        forcing_bar = _note_forcing_types(grammar, {"Bar"}) | {"Position"}
        specials = set(tokenizer.special_tokens)
        items = vocab_base_tokens(tokenizer)
        columns = {
            name: np.zeros(len(items), dtype=np.int64) for name in ("need_onset", "need_bar", "add_onset", "add_bar")
        }
        flags = {name: np.zeros(len(items), dtype=bool) for name in ("resets_onset", "resets_bar")}
        static_ok = np.ones(len(items), dtype=bool)
        for v, item in enumerate(items):
            kinds = [_kind(t, specials) for t in item]
            last_type = item[-1].partition("_")[0] if item and item[-1] not in specials else None
            for counter, resets, forcing, bound in (
                ("onset", (ONSET, BAR), forcing_onset, self.max_notes_per_onset),
                ("bar", (BAR,), forcing_bar, self.max_notes_per_bar),
            ):
                groups = [0]  # notes per group, a group ending at each reset
                for k in kinds:
                    if k in resets:
                        groups.append(0)
                    elif k == NOTE:
                        groups[-1] += 1
                groups[-1] += last_type in forcing  # the note the grammar demands next
                columns[f"need_{counter}"][v] = groups[0]
                columns[f"add_{counter}"][v] = groups[-1] - (last_type in forcing)
                flags[f"resets_{counter}"][v] = len(groups) > 1
                static_ok[v] &= all(g <= bound for g in groups[1:])
        self._arrays = {**columns, **flags, "static_ok": static_ok}
        self._device_tables: dict[torch.device, _Tables] = {}

    @classmethod
    def from_bounds(cls, tokenizer: miditok.REMI, bounds: dict) -> NoteGuard:
        return cls(tokenizer, bounds["max_notes_per_onset"], bounds["max_notes_per_bar"])

    def _tables(self, device: torch.device) -> _Tables:
        if device not in self._device_tables:
            self._device_tables[device] = _Tables(
                **{k: torch.from_numpy(v).to(device) for k, v in self._arrays.items()}
            )
        return self._device_tables[device]

    def start(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[B, 2] counters (notes at the current onset, in the current bar) of rows before their first token."""
        return torch.zeros(batch_size, 2, dtype=torch.long, device=device)

    def advance(self, counts: torch.Tensor, ids: torch.Tensor) -> None:
        """Read one vocabulary item per row (in place)."""
        t = self._tables(counts.device)
        ids = ids.to(counts.device).long()
        counts[:, 0] = torch.where(t.resets_onset[ids], t.add_onset[ids], counts[:, 0] + t.add_onset[ids])
        counts[:, 1] = torch.where(t.resets_bar[ids], t.add_bar[ids], counts[:, 1] + t.add_bar[ids])

    def parse(self, ids: torch.Tensor) -> torch.Tensor:
        """The counters of every row after reading its whole prefix [B, L]."""
        counts = self.start(ids.shape[0], ids.device)
        for column in ids.T:
            self.advance(counts, column)
        return counts

    def allowed(self, counts: torch.Tensor) -> torch.Tensor:
        """[B, V] bool: the items that keep each row within both bounds."""
        t = self._tables(counts.device)
        onset_ok = counts[:, :1] + t.need_onset <= self.max_notes_per_onset
        bar_ok = counts[:, 1:] + t.need_bar <= self.max_notes_per_bar
        return onset_ok & bar_ok & t.static_ok


class NoteGuardLogitsProcessor(LogitsProcessor):
    """Masks (-inf) every item that would put more notes on one onset, or in one bar, than the bounds.

    Like `midilm.sampling.grammar_processor.GrammarLogitsProcessor` it works on any batch (left padding, the 2B rows of
    guidance), reads each row's prefix on the first call of a `generate()` and only the last token
    afterwards. Put it after the grammar and before any processor that samples or mixes rows
    (`midilm.sampling.guidance.CFGSamplingProcessor`).
    """

    def __init__(
        self, tokenizer: miditok.REMI | None = None, bounds: dict | None = None, guard: NoteGuard | None = None
    ):
        if guard is None:
            if tokenizer is None or bounds is None:
                raise ValueError("give a tokenizer and bounds, or a NoteGuard")
            guard = NoteGuard.from_bounds(tokenizer, bounds)
        self.guard = guard
        self._counts = StepTracker(self.guard)

    def reset(self) -> None:
        self._counts.reset()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.guard.allowed(self._counts.update(input_ids)).to(scores.device)
        if scores.shape[1] > mask.shape[1]:  # a model vocabulary padded past the tokenizer's: the grammar's business
            mask = torch.nn.functional.pad(mask, (0, scores.shape[1] - mask.shape[1]), value=True)
        stranded = ~(mask & ~torch.isneginf(scores)).any(dim=-1, keepdim=True)
        return scores.masked_fill(~mask & ~stranded, float("-inf"))


# Bounds ----------------------------------------------------------------------------------------


def count_histograms(tokenizer: miditok.REMI, rows: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(how many onsets hold k notes, how many bars hold k notes), k = 0, 1, ..., over token-id rows.

    Onsets and bars without a note are not counted. `rows` may be any iterable of id arrays; a row
    boundary ends an onset and a bar.
    """
    kinds = item_kinds(tokenizer)
    lengths = np.array([len(k) for k in kinds], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.array([k for item in kinds for k in item], dtype=np.int8)
    onset_hist, bar_hist = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    batch = []

    def flush():
        nonlocal onset_hist, bar_hist
        if not batch:
            return
        values = np.concatenate(batch)
        row_start = np.zeros(len(values), dtype=bool)
        row_start[np.cumsum([0] + [len(r) for r in batch[:-1]])] = True
        batch.clear()
        n = lengths[values]
        # the base tokens of every item, in order: item offset + position inside the item
        first = np.repeat(offsets[values], n)
        within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        base = flat[first + within]
        starts = np.repeat(row_start, n) & (within == 0)
        note = base == NOTE
        for reset, hist_name in (((base == ONSET) | (base == BAR) | starts, "onset"), ((base == BAR) | starts, "bar")):
            group = np.cumsum(reset)
            per_group = np.bincount(group[note], minlength=int(group[-1]) + 1 if len(group) else 1)
            counts = np.bincount(per_group[per_group > 0])
            if hist_name == "onset":
                onset_hist = _add(onset_hist, counts)
            else:
                bar_hist = _add(bar_hist, counts)

    size = 0
    for row in rows:
        row = np.asarray(row, dtype=np.int64)
        if len(row):
            batch.append(row)
            size += len(row)
        if size >= 1_000_000:
            flush()
            size = 0
    flush()
    return onset_hist, bar_hist


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)), dtype=np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def histogram_quantile(hist: np.ndarray, quantile: float) -> int:
    """The smallest k with at least `quantile` of the counted items at k or below; 0 for an empty histogram."""
    total = hist.sum()
    if total == 0:
        return 0
    return int(np.searchsorted(np.cumsum(hist), quantile * total - 1e-9 * total))


def learn_bounds(
    dataset_split, tokenizer: miditok.REMI, quantile: float = DEFAULT_QUANTILE, batch_size: int = SCAN_BATCH_ROWS
) -> dict:
    """The guard's bounds from a dataset split written by prepare_dataset.py (usually "train").

    Streams `input_ids` in Arrow batches (no Python list of the split). Counts the original pieces'
    continuation rows: transposed copies hold the same notes per onset, and accompaniment rows
    repeat the piece behind a melody. A dataset without those columns is counted whole.
    Returns a JSON-ready dict: the two bounds (the `quantile` of notes per onset and per bar, over
    onsets and bars that hold a note), the observed maxima, the quantile and how many onsets and bars
    were counted.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    present = set(dataset_split.column_names)
    columns = ["input_ids"] + [c for c in ("augmentation", "task") if c in present]

    def rows():
        for table in dataset_split.select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
            keep = np.ones(table.num_rows, dtype=bool)
            if "augmentation" in present:
                keep &= table.column("augmentation").to_numpy(zero_copy_only=False) == ""
            if "task" in present:
                keep &= table.column("task").to_numpy(zero_copy_only=False) == "continuation"
            ids = table.column("input_ids").combine_chunks()
            offsets = ids.offsets.to_numpy().astype(np.int64)
            values = ids.values.to_numpy()
            for k in np.flatnonzero(keep):
                yield values[offsets[k] : offsets[k + 1]]

    onset_hist, bar_hist = count_histograms(tokenizer, rows())
    if onset_hist.sum() == 0:
        raise ValueError("learn_bounds: the split holds no note (are there continuation rows of original pieces?)")
    return {
        "max_notes_per_onset": max(1, histogram_quantile(onset_hist, quantile)),
        "max_notes_per_bar": max(1, histogram_quantile(bar_hist, quantile)),
        "quantile": quantile,
        "observed_max_notes_per_onset": len(onset_hist) - 1,
        "observed_max_notes_per_bar": len(bar_hist) - 1,
        "onsets": int(onset_hist.sum()),
        "bars": int(bar_hist.sum()),
    }


def bounds_to_config(config, bounds: dict) -> None:
    """Store the bounds in a model config (`config.midilm_guard`), which `save_pretrained` writes to config.json."""
    setattr(config, CONFIG_KEY, dict(bounds))


def bounds_from_config(config) -> dict | None:
    """The bounds a model config carries, or None for a model saved without them."""
    bounds = getattr(config, CONFIG_KEY, None)
    return dict(bounds) if bounds else None


def guard_processor(tokenizer: miditok.REMI, config) -> NoteGuardLogitsProcessor | None:
    """The guard for a model config that carries bounds (`midilm_guard`); None for one saved without them."""
    bounds = bounds_from_config(config)
    return NoteGuardLogitsProcessor(tokenizer, bounds) if bounds else None


def load_bounds(model_dir: str | Path) -> dict | None:
    """The bounds in a model folder's config.json, without loading the model; None when it has none."""
    path = Path(model_dir) / "config.json"
    bounds = json.loads(path.read_text()).get(CONFIG_KEY) if path.is_file() else None
    return dict(bounds) if bounds else None


def onset_counts(tokenizer: miditok.REMI, ids: Iterable[int]) -> tuple[int, int]:
    """(most notes at one onset, most notes in one bar) of one token sequence: what the guard bounds."""
    onset_hist, bar_hist = count_histograms(tokenizer, [np.asarray(list(ids), dtype=np.int64)])
    return len(onset_hist) - 1, len(bar_hist) - 1
