"""The REMI grammar as a finite automaton over the (BPE) vocabulary, and the LogitsProcessor that enforces it.

The rules are miditok's own: the token-type successions of `REMI._create_token_types_graph`, and the
value checks of `MusicTokenizer._tokens_errors` (a Position must move forward within its bar, no
pitch twice for one program at one position). To them we add what miditok's REMI encoder always
writes and its decoder relies on, so that a sample reads back as the music it spells:

* the music starts with a `Bar`, and a `TimeSig` comes only right after a `Bar`;
* a bar's notes come after a `Position` (never straight after `Bar`/`TimeSig`);
* a `Position` stays inside the bar of the current time signature (the decoder would otherwise
  place its notes inside the next bar, behind the next bar's own notes);
* the drums program (-1) plays `PitchDrum` tokens, every other program `Pitch` tokens.

A state is (type of the last base token, bar length in positions, current position). With BPE a
vocabulary item stands for several base tokens; `RemiGrammar` precomputes, for every (state, item),
whether reading the item's base tokens one by one keeps the sequence valid and the state it leads
to. Generating then costs one gather per step (`allowed[state]`) and one table lookup to advance.

Before the music comes a prelude the grammar reads but never writes: padding, BOS, a composer token
and, in the accompaniment layout, MELODY (then the melody's bars). The FULL token that ends the
melody section is read wherever a bar could begin, and returns to the prelude's state: the full
piece starts again with a `Bar`. The infilling layout's GAP and FILL markers are read the same way: each ends
the bars before it wherever a bar could begin (or right after the prelude, where those bars are none), and the
bars after it start again with a `Bar`.

The duplicate-note rule depends on which (program, pitch) pairs were already played at the current
position: that is kept per row as a small boolean table, checked with a few more gathers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import miditok
import numpy as np
import torch
from miditok.constants import TIME_SIGNATURE
from miditok.utils import compute_ticks_per_bar
from symusic import TimeSignature
from transformers import LogitsProcessor

from midilm.tokenizer import COMPOSER_PREFIX, infill_token_ids, section_token_ids, vocab_base_tokens

# Fixed automaton states; the music states are numbered after them.
DEAD, PRELUDE, END = 0, 1, 2
NUM_PITCHES = 128  # MIDI pitches: the width of one program's row in the played-notes table
MUSIC_TYPES = ("Bar", "TimeSig", "Position", "Tempo", "Program", "Pitch", "PitchDrum", "Velocity", "Duration")
# Options that add token types (or token streams) this automaton does not model.
UNSUPPORTED = (
    "use_chords",
    "use_rests",
    "use_key_signatures",
    "use_sustain_pedals",
    "use_pitch_bends",
    "use_control_changes",
    "use_pitch_intervals",
    "program_changes",
)
_GRAMMARS: dict[str, RemiGrammar] = {}
_MAX_CACHED = 8


def _check_supported(tokenizer: miditok.REMI) -> None:
    if not isinstance(tokenizer, miditok.REMI):
        raise ValueError(f"the grammar is REMI's; got a {type(tokenizer).__name__} tokenizer")
    config = tokenizer.config
    used = [name for name in UNSUPPORTED if getattr(config, name, False)]
    extra = config.additional_params
    if extra.get("use_bar_end_tokens") or extra.get("max_bar_embedding") is not None:
        used.append("use_bar_end_tokens/max_bar_embedding")
    if config.use_programs and not config.one_token_stream_for_programs:
        used.append("use_programs without one_token_stream_for_programs")
    if config.use_note_duration_programs and not set(config.programs) <= set(config.use_note_duration_programs):
        used.append("use_note_duration_programs on some programs only")
    if used:
        raise ValueError(f"the REMI grammar does not model these tokenizer options: {', '.join(used)}")


def _bar_length(tokenizer: miditok.REMI, time_sig: Sequence[int], num_positions: int) -> int:
    """Positions in one bar, computed as miditok's REMI decoder computes ticks per bar and per position."""
    num, den = (int(x) for x in time_sig[:2])
    ticks_per_pos = tokenizer._compute_ticks_per_pos(tokenizer._tpb_per_ts[den])
    ticks_per_bar = compute_ticks_per_bar(TimeSignature(0, num, den), tokenizer.time_division)
    return min(-(-ticks_per_bar // ticks_per_pos), num_positions)


def tokenizer_fingerprint(tokenizer: miditok.REMI) -> str:
    """What the automaton depends on: the tokenizer config and the base tokens of every vocabulary item."""
    data = {"config": tokenizer.config.to_dict(serialize=True), "items": vocab_base_tokens(tokenizer)}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RowState:
    """Where each row of a batch stands in the grammar."""

    state: torch.Tensor  # [B] automaton state
    program: torch.Tensor  # [B] index (in `RemiGrammar.programs`) of the last Program token
    notes: torch.Tensor  # [B, programs * 128 + 1] (program, pitch) played at the current position; last column unused


@dataclass
class _Tables:
    """The precomputed tables, as tensors on one device."""

    allowed: torch.Tensor  # [S, V] bool
    trans: torch.Tensor  # [S, V] int16: the state after the item (DEAD where not allowed)
    resets: torch.Tensor  # [V] bool: the item holds a Position or Bar (new position, played notes forgotten)
    add_keys: torch.Tensor  # [V, m] played-note keys the item leaves behind (padded with the unused column)
    pre_keys: torch.Tensor  # [V, m'] keys the item plays before its first reset (checked against the row)
    has_lead: torch.Tensor  # [V] bool: the item starts with a pitch whose program is the row's current one
    lead_pitch: torch.Tensor  # [V] that pitch (0 where none)
    last_program: torch.Tensor  # [V] index of the item's last Program token, -1 where none
    lead_conflict: torch.Tensor  # [P, V] bool: the leading pitch is wrong for that current program


class RemiGrammar:
    """The automaton of one REMI tokenizer (with or without BPE). Build it with `for_tokenizer` (cached)."""

    def __init__(self, tokenizer: miditok.REMI):
        _check_supported(tokenizer)
        config = tokenizer.config
        self.vocab_size = len(tokenizer)
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_token_id, tokenizer["BOS_None"], tokenizer["EOS_None"]
        composers = {tokenizer[t] for t in tokenizer.special_tokens if t.startswith(COMPOSER_PREFIX)}
        sections = section_token_ids(tokenizer)
        self.prelude_ids = {self.pad_id, self.bos_id} | composers | ({sections[0]} if sections else set())
        self.full_id = sections[1] if sections else None
        # FULL, GAP, FILL: read where a bar could begin, then the music starts again from a bar line
        self.restart_ids = ({self.full_id} if sections else set()) | set(infill_token_ids(tokenizer) or ())
        self.programs = sorted(config.programs)
        self.check_duplicates = bool(config.remove_duplicated_notes)
        self.use_programs = bool(config.use_programs)
        self.drum_pitch_tokens = bool(config.use_programs and config.use_pitchdrum_tokens)
        self._notes_width = len(self.programs) * NUM_PITCHES + 1
        num_positions = sum(1 for t in tokenizer.vocab if t.startswith("Position_"))
        self._default_bar = _bar_length(tokenizer, TIME_SIGNATURE, num_positions)
        self._use_time_signatures = bool(config.use_time_signatures)
        # Bar length (in positions) after each TimeSig token, keyed by the token's value ("6/8").
        time_sigs = [t.partition("_")[2] for t in tokenizer.vocab if t.startswith("TimeSig_")]
        self._bar_lengths = {ts: _bar_length(tokenizer, ts.split("/"), num_positions) for ts in time_sigs}
        self._graph = self._music_graph(tokenizer)
        # The last token of a complete note: EOS may follow it (and nothing shorter than one note).
        self.note_end_type = (
            "Duration" if config.using_note_duration_tokens else "Velocity" if config.use_velocities else "Pitch"
        )
        self._build(vocab_base_tokens(tokenizer), set(tokenizer.special_tokens))
        self._device_tables: dict[torch.device, _Tables] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: miditok.REMI) -> RemiGrammar:
        """The grammar of this tokenizer, built once per process for every equal tokenizer."""
        key = tokenizer_fingerprint(tokenizer)
        if key not in _GRAMMARS:
            if len(_GRAMMARS) >= _MAX_CACHED:
                _GRAMMARS.pop(next(iter(_GRAMMARS)))
            _GRAMMARS[key] = cls(tokenizer)
        return _GRAMMARS[key]

    # ---- the rules -------------------------------------------------------------------------------

    def _music_graph(self, tokenizer: miditok.REMI) -> dict[str, set[str]]:
        """miditok's type graph, narrowed to what its REMI encoder writes (see the module docstring)."""
        graph = {t: set(n) & set(MUSIC_TYPES) for t, n in tokenizer.tokens_types_graph.items() if t in MUSIC_TYPES}
        note_start = {"Program"} if self.use_programs else {"Pitch", "PitchDrum"}
        for token_type, nexts in graph.items():
            if token_type != "Bar":
                nexts.discard("TimeSig")  # time signatures change on bar lines only
            if token_type in ("Bar", "TimeSig"):
                nexts -= note_start  # the encoder writes Position_0 before a bar's first note
        graph["PRELUDE"] = {"Bar"}
        return graph

    def _step(self, state: tuple, token: tuple[str, str | None]) -> tuple | None:
        """One base token from a music state; None when it breaks the grammar."""
        last_type, bar_length, position = state
        token_type, value = token
        if token_type not in self._graph.get(last_type, ()):
            return None
        if token_type == "Bar":
            return ("Bar", 0 if self._use_time_signatures else self._default_bar, -1)
        if token_type == "TimeSig":
            return ("TimeSig", self._bar_lengths[value], -1)
        if token_type == "Position":
            new_position = int(value)
            # tokens_errors: a Position must be after the current one; the decoder: inside the bar
            if new_position <= position or new_position >= bar_length:
                return None
            return ("Position", bar_length, new_position)
        return (token_type, bar_length, position)

    # ---- precompute --------------------------------------------------------------------------------

    def _build(self, items: list[list[str]], specials: set[str]) -> None:
        # Base music tokens that move the automaton differently: every type, and each Position / TimeSig value.
        def token_class(token: str) -> tuple[str, str | None] | None:
            token_type, _, value = token.partition("_")
            if token_type not in MUSIC_TYPES:
                return None
            return (token_type, value if token_type in ("Position", "TimeSig") else None)

        classes = sorted({c for item in items for t in item if t not in specials and (c := token_class(t))}, key=str)

        # Every state reachable from the prelude, breadth first.
        start = ("PRELUDE", 0, -1)
        index = {start: PRELUDE}
        keys = [None, start, None]
        frontier, steps = [start], {}
        while frontier:
            following = []
            for state in frontier:
                for c in classes:
                    new = self._step(state, c)
                    if new is not None and new not in index:
                        index[new] = len(keys)
                        keys.append(new)
                        following.append(new)
                    steps[state, c] = DEAD if new is None else index[new]
            frontier = following
        self.num_states = len(keys)
        self.state_keys = keys
        by_class = {}
        for c in classes:
            column = np.full(self.num_states, DEAD, dtype=np.int64)
            for state, i in index.items():
                column[i] = steps[state, c]
            by_class[c] = column

        # Every item from every state: its base tokens one after the other.
        num_items = len(items)
        trans = np.full((self.num_states, num_items), DEAD, dtype=np.int64)
        item_ok = np.zeros(num_items, dtype=bool)
        all_states = np.arange(self.num_states)
        for v, item in enumerate(items):
            if not item or any(t in specials for t in item):
                continue
            current = all_states
            for t in item:
                c = token_class(t)
                if c is None:
                    current = np.full(self.num_states, DEAD)
                    break
                current = by_class[c][current]
            trans[:, v] = current
            trans[DEAD, v] = DEAD
            item_ok[v] = True
        self._dynamic_tables(items, item_ok)
        allowed = (trans != DEAD) & item_ok[None, :]

        # Special tokens: the prelude (PAD for left padding, BOS, composer) is read but never generated;
        # EOS ends the piece after a complete note; after EOS only padding (or EOS) follows.
        for token_id in self.prelude_ids:
            trans[PRELUDE, token_id] = PRELUDE
        bar_step = by_class.get(("Bar", None))
        self._step_allows_bar = bar_step != DEAD if bar_step is not None else np.zeros(self.num_states, dtype=bool)
        for restart in self.restart_ids:  # a section ends where a bar could begin
            trans[np.flatnonzero(self._step_allows_bar), restart] = PRELUDE
        note_ends = [i for i, k in enumerate(keys) if k is not None and k[0] == self.note_end_type]
        trans[note_ends, self.eos_id] = END
        allowed[note_ends, self.eos_id] = True
        trans[END, :] = END
        allowed[END, :] = False
        allowed[END, [self.pad_id, self.eos_id]] = True
        allowed[DEAD, :] = False
        # int16 keeps a 20k-item BPE vocabulary's table small; states are far fewer than 32k.
        self._allowed, self._trans = allowed, trans.astype(np.int16 if self.num_states < 2**15 else np.int32)

    def _dynamic_tables(self, items: list[list[str]], item_ok: np.ndarray) -> None:
        """What each item does to the per-row (program, pitch) table, and the item-internal note checks."""
        program_index = {p: i for i, p in enumerate(self.programs)}
        unused = self._notes_width - 1
        drums = program_index.get(-1)
        num_items, num_programs = len(items), len(self.programs)
        resets = np.zeros(num_items, dtype=bool)
        has_lead = np.zeros(num_items, dtype=bool)
        lead_pitch = np.zeros(num_items, dtype=np.int64)
        last_program = np.full(num_items, -1, dtype=np.int64)
        lead_conflict = np.zeros((num_programs, num_items), dtype=bool)
        add_keys, pre_keys = [], []
        for v, item in enumerate(items):
            played, before_reset = set(), []
            program = None if self.use_programs else program_index[0]
            for k, token in enumerate(item if item_ok[v] else []):
                token_type, _, value = token.partition("_")
                if token_type in ("Bar", "Position"):
                    resets[v] = True
                    played = set()
                elif token_type == "Program":
                    program = last_program[v] = program_index[int(value)]
                elif token_type in ("Pitch", "PitchDrum"):
                    pitch = int(value)
                    if program is None:  # the Program token was the previous item's last one
                        if k == 0:
                            has_lead[v], lead_pitch[v] = True, pitch
                        continue
                    wrong_kind = self.drum_pitch_tokens and (program == drums) != (token_type == "PitchDrum")
                    key = program * NUM_PITCHES + pitch
                    if wrong_kind or (self.check_duplicates and key in played):
                        item_ok[v] = False
                    played.add(key)
                    if not resets[v]:
                        before_reset.append(key)
            if has_lead[v]:
                drum_token = item[0].startswith("PitchDrum")
                for q in range(num_programs):
                    wrong_kind = self.drum_pitch_tokens and (q == drums) != drum_token
                    duplicate = self.check_duplicates and q * NUM_PITCHES + lead_pitch[v] in before_reset
                    lead_conflict[q, v] = wrong_kind or duplicate
            # The leading note itself is keyed by the row's program, so `advance` adds it at run time.
            add_keys.append(sorted(played))
            pre_keys.append(before_reset if self.check_duplicates else [])

        def padded(lists: list[list[int]]) -> np.ndarray:
            out = np.full((num_items, max([len(x) for x in lists] + [1])), unused, dtype=np.int64)
            for v, x in enumerate(lists):
                out[v, : len(x)] = x
            return out

        self._dynamic = dict(
            resets=resets,
            add_keys=padded(add_keys),
            pre_keys=padded(pre_keys),
            has_lead=has_lead,
            lead_pitch=lead_pitch,
            last_program=last_program,
            lead_conflict=lead_conflict,
        )

    def _tables(self, device: torch.device) -> _Tables:
        if device not in self._device_tables:
            self._device_tables[device] = _Tables(
                allowed=torch.from_numpy(self._allowed).to(device),
                trans=torch.from_numpy(self._trans).to(device),
                **{k: torch.from_numpy(v).to(device) for k, v in self._dynamic.items()},
            )
        return self._device_tables[device]

    # ---- running it ------------------------------------------------------------------------------

    def start(self, batch_size: int, device: torch.device | str = "cpu") -> RowState:
        """Rows before their first token. Like miditok's decoder, the current program starts as 0."""
        device = torch.device(device)
        first_program = self.programs.index(0) if 0 in self.programs else 0
        return RowState(
            state=torch.full((batch_size,), PRELUDE, dtype=torch.long, device=device),
            program=torch.full((batch_size,), first_program, dtype=torch.long, device=device),
            notes=torch.zeros(batch_size, self._notes_width, dtype=torch.bool, device=device),
        )

    def advance(self, rows: RowState, ids: torch.Tensor) -> None:
        """Read one vocabulary item per row (in place)."""
        t = self._tables(rows.state.device)
        ids = ids.to(rows.state.device).long()
        unused = self._notes_width - 1
        # Played notes: forget them at a new position, then add the ones the item leaves behind.
        lead_key = torch.where(t.has_lead[ids] & ~t.resets[ids], rows.program * NUM_PITCHES + t.lead_pitch[ids], unused)
        rows.notes.masked_fill_(t.resets[ids].unsqueeze(1), False)
        rows.notes.scatter_(1, t.add_keys[ids], True)
        rows.notes.scatter_(1, lead_key.unsqueeze(1), True)
        rows.notes[:, unused] = False
        last_program = t.last_program[ids]
        rows.program = torch.where(last_program >= 0, last_program, rows.program)
        rows.state = t.trans[rows.state, ids].long()

    def allowed(self, rows: RowState) -> torch.Tensor:
        """[B, V] bool: the items each row may take next."""
        t = self._tables(rows.state.device)
        mask = t.allowed[rows.state]  # the static grammar: one gather
        # An item that starts with a pitch belongs to the row's current program: its kind
        # (Pitch / PitchDrum), and its clash with notes later in the item, depend on that program.
        bad = t.lead_conflict[rows.program]
        if self.check_duplicates:
            unused = self._notes_width - 1
            lead_keys = torch.where(t.has_lead, rows.program.unsqueeze(1) * NUM_PITCHES + t.lead_pitch, unused)
            bad |= rows.notes.gather(1, lead_keys)
            bad |= rows.notes[:, t.pre_keys].any(dim=-1)
        return mask & ~bad

    def parse(self, ids: torch.Tensor) -> RowState:
        """The state of every row after reading its whole prefix [B, L]; ValueError if a row breaks the grammar."""
        rows = self.start(ids.shape[0], ids.device)
        for column in ids.T:
            self.advance(rows, column)
        broken = (rows.state == DEAD).nonzero().flatten().tolist()
        if broken:
            row = broken[0]
            at = self.first_violation(ids[row].tolist())
            raise ValueError(
                f"prompt row {row} breaks the REMI grammar at token {at} (id {ids[row, at].item()}): a prompt is "
                "[PAD…] BOS COMPOSER_x then music that starts at a bar line, as the tokenizer writes it "
                "(or, for accompaniment, MELODY melody-bars FULL full-bars)"
            )
        return rows

    def complete_length(self, ids: Sequence[int]) -> int:
        """Length of the longest prefix of `ids` (music from a bar line on) after which a new bar may
        begin: no half-written note. The static rules only; what the sampler wrote already passed the rest."""
        state, keep = PRELUDE, 0
        for i, token in enumerate(ids):
            state = int(self._trans[state, token])
            if state == DEAD:
                break
            if state != PRELUDE and self._step_allows_bar[state]:
                keep = i + 1
        return keep

    def first_violation(self, ids: Sequence[int]) -> int | None:
        """Index of the first token the grammar would have masked (prelude tokens accepted), or None."""
        rows = self.start(1)
        read_only = self.prelude_ids | self.restart_ids
        for i, token in enumerate(ids):
            read = token in read_only and self._trans[rows.state.item(), token] != DEAD
            if not read and not self.allowed(rows)[0, token]:
                return i
            self.advance(rows, torch.tensor([token]))
        return None


class StepTracker:
    """Per-row state that a logits processor carries across the calls of one `generate()`: the
    first call parses each row's whole prefix (`model.parse`); a call that continues the previous one
    by exactly one token only advances it (`model.advance`). A new `generate()` is recognised by the
    input length and last tokens; `reset()` forces it."""

    def __init__(self, model):
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.state = None
        self._length = -1
        self._last: torch.Tensor | None = None

    def update(self, input_ids: torch.LongTensor):
        batch, length = input_ids.shape
        continues = (
            self.state is not None
            and length == self._length + 1
            and batch == self._last.shape[0]
            and length >= 2
            and torch.equal(input_ids[:, -2], self._last)
        )
        if continues:
            self.model.advance(self.state, input_ids[:, -1])
        else:
            self.state = self.model.parse(input_ids)
        self._length, self._last = length, input_ids[:, -1].clone()
        return self.state


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks (-inf) every vocabulary item that would break the REMI grammar.

    Works on any batch, left padding included, and on the 2B rows of classifier-free guidance (rows
    i and i+B get the same tokens, so the same mask). The first call of a `generate()` reads each
    row's prefix (BOS, composer, prompt music); later calls read only the last token. A new
    `generate()` is recognised by the input length and last tokens; `reset()` forces it.
    Put it before any processor that samples or mixes rows (e.g. `midilm.guidance.CFGSamplingProcessor`).
    """

    def __init__(self, tokenizer: miditok.REMI | None = None, grammar: RemiGrammar | None = None):
        if grammar is None and tokenizer is None:
            raise ValueError("give a tokenizer or a grammar")
        self.grammar = grammar or RemiGrammar.for_tokenizer(tokenizer)
        self._rows = StepTracker(self.grammar)

    def reset(self) -> None:
        self._rows.reset()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.grammar.allowed(self._rows.update(input_ids)).to(scores.device)
        if scores.shape[1] > mask.shape[1]:  # a model vocabulary padded past the tokenizer's
            mask = torch.nn.functional.pad(mask, (0, scores.shape[1] - mask.shape[1]), value=False)
        # A row with nothing left (all 88 pitches of a program taken at one position, or a token
        # forced from outside the grammar) ends with EOS rather than poisoning the softmax.
        mask[:, self.grammar.eos_id] |= ~mask.any(dim=-1)
        return scores.masked_fill(~mask, float("-inf"))


def count_syntax_errors(tokenizer: miditok.REMI, ids: Sequence[int] | np.ndarray | torch.Tensor) -> float:
    """miditok's `tokens_errors` (errors per token) on one of our sequences.

    Leading PAD/BOS/composer tokens are dropped and the sequence ends at its first EOS; a special
    token left inside the music counts as one error (miditok cannot read it). In the accompaniment
    layout only the full-piece section (after the FULL token) is measured: the melody section is given; in the
    infilling layout only the span (after the FILL token).
    """
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    special = {tokenizer[t] for t in tokenizer.special_tokens}
    eos = tokenizer["EOS_None"]
    if eos in ids:
        ids = ids[: ids.index(eos)]
    for marker in ((section_token_ids(tokenizer) or (None, None))[1], (infill_token_ids(tokenizer) or (None, None))[1]):
        if marker is not None and marker in ids:
            ids = ids[len(ids) - ids[::-1].index(marker) :]
    start = 0
    while start < len(ids) and ids[start] in special:
        start += 1
    music = [i for i in ids[start:] if i not in special]
    stray = len(ids) - start - len(music)
    sequence = miditok.TokSequence(ids=music, are_ids_encoded=tokenizer.is_trained)
    tokenizer.decode_token_ids(sequence)  # to base tokens, as tokens_errors does (BPE's bare '▁' reads as none)
    errors = round(tokenizer.tokens_errors(sequence) * len(sequence)) if len(sequence) else 0
    # normalised like tokens_errors on our ids: per generated item, not per base token
    return (errors + stray) / max(1, len(music) + stray)
