"""Bars as a prompt dictates them, for accompaniment and infilling alike: each bar's time signature by the
tokenizer's table, and the logits processor that writes exactly as many bars as asked, then EOS."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor

from midilm.core.tokenizer import bar_start_table, vocab_base_tokens


def time_signature_table(tokenizer) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The TimeSig values of the vocabulary, and for every item: the index of the TimeSig it holds
    (-1 for none) and whether that TimeSig belongs to a bar the item begins (else to the current bar).
    With `encode_ids_split="bar"` a TimeSig only ever follows the Bar token."""
    base = vocab_base_tokens(tokenizer)
    values = sorted({t for item in base for t in item if t.startswith("TimeSig_")})
    index = {t: i for i, t in enumerate(values)}
    holds = np.full(len(base), -1, dtype=np.int64)
    new_bar = np.zeros(len(base), dtype=bool)
    for v, item in enumerate(base):
        for k, token in enumerate(item):
            if token in index:
                holds[v], new_bar[v] = index[token], k > 0 and item[k - 1].startswith("Bar_")
                break
    return values, holds, new_bar


def bar_time_signatures(tokenizer, bars: list[np.ndarray]) -> list[int]:
    """For each bar of tokens, the index (in `time_signature_table`) of the time signature it opens with; -1: none."""
    _, holds, _ = time_signature_table(tokenizer)
    signatures = []
    for bar in bars:
        found = [holds[i] for i in bar[:2].tolist() if holds[i] >= 0]
        signatures.append(int(found[0]) if found else -1)
    return signatures


class BarLimitLogitsProcessor(LogitsProcessor):
    """Keeps each row's full section to its melody's bars.

    Per row: the first new token begins a bar (a window never adds to a bar it was given); EOS waits
    until the full section (the tokens after FULL) has `targets[row]` bars; from then on the
    probability of beginning another bar goes to EOS; and a bar's time signature is the one of the
    melody bar it stands under (`time_signatures[row, j]` for the section's bar j, -1 = any).
    Put it after the grammar processor and before the CFG sampler; rows i and i+B of guidance hold
    the same tokens after the composer, so they get the same mask.
    """

    def __init__(self, tokenizer, full_id: int, eos_id: int, targets: torch.Tensor, time_signatures: torch.Tensor):
        _, holds, new_bar = time_signature_table(tokenizer)
        self.starts_bar = torch.tensor(bar_start_table(tokenizer))
        self.holds, self.new_bar = torch.from_numpy(holds), torch.from_numpy(new_bar)
        self.full_id, self.eos_id = full_id, eos_id
        self.targets, self.time_signatures = targets.long(), time_signatures.long()
        self._prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        device = scores.device
        vocab = self.starts_bar.shape[0]
        if self._prompt_length is None or input_ids.shape[1] <= self._prompt_length:
            self._prompt_length = input_ids.shape[1]  # a new generate() call
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        is_full = (input_ids == self.full_id).long()
        after = positions > (is_full * positions).max(dim=1, keepdim=True).values  # after the (only) FULL token
        starts_bar = self.starts_bar.to(input_ids.device)
        bars = (starts_bar[input_ids.clamp(max=vocab - 1)] & after).sum(dim=1).to(device)
        targets, signatures = self.targets.to(device), self.time_signatures.to(device)
        starts_bar, holds, new_bar = starts_bar.to(device), self.holds.to(device), self.new_bar.to(device)
        extra = scores.shape[1] - vocab  # a model vocabulary padded past the tokenizer's
        if extra > 0:
            starts_bar = torch.nn.functional.pad(starts_bar, (0, extra), value=False)
            holds = torch.nn.functional.pad(holds, (0, extra), value=-1)
            new_bar = torch.nn.functional.pad(new_bar, (0, extra), value=False)

        scores = scores.clone()
        neg_inf = float("-inf")
        # time signatures: an item that begins bar j holds bar j's; one that continues bar j-1, bar j-1's
        last = signatures.shape[1] - 1
        expected_new = signatures.gather(1, bars.clamp(max=last).unsqueeze(1))
        expected_now = signatures.gather(1, (bars - 1).clamp(min=0, max=last).unsqueeze(1))
        expected = torch.where(new_bar.unsqueeze(0), expected_new, expected_now)
        wrong = (holds.unsqueeze(0) >= 0) & (expected >= 0) & (holds.unsqueeze(0) != expected)
        scores.masked_fill_(wrong, neg_inf)
        if input_ids.shape[1] == self._prompt_length:
            scores.masked_fill_(~starts_bar.unsqueeze(0), neg_inf)
        done = bars >= targets
        if done.any():
            moved = torch.logsumexp(
                torch.cat([scores[done][:, starts_bar], scores[done][:, self.eos_id : self.eos_id + 1]], dim=1), dim=1
            )
            rows = done.nonzero().flatten()
            scores[rows.unsqueeze(1), starts_bar.nonzero().flatten().unsqueeze(0)] = neg_inf
            scores[rows, self.eos_id] = moved
        if (~done).any():
            scores[~done, self.eos_id] = neg_inf
        # A row left with nothing (the grammar allowed only what this processor forbids) ends.
        stuck = torch.isneginf(scores).all(dim=1)
        scores[stuck, self.eos_id] = 0.0
        return scores
