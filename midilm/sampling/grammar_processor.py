"""The REMI grammar inside `generate()`: the per-row state carried across its calls (`StepTracker`, which the
guard uses too) and the LogitsProcessor that masks every item that would break the grammar."""

from __future__ import annotations

import miditok
import torch
from transformers import LogitsProcessor

from midilm.sampling.grammar import RemiGrammar


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
    Put it before any processor that samples or mixes rows (e.g. `midilm.sampling.guidance.CFGSamplingProcessor`).
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
