"""Samples longer than the context, written in windows: each window reads again the latest bars (up to
WINDOW_PAST_SHARE of the context) and writes the next ones; `run_windows` is `GenerationPlan.run` beyond the
context. Also the progress bar over new tokens and left padding of rows."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.generation import StoppingCriteria, StoppingCriteriaList

from midilm.core.rows import HEADER_TOKENS, RowLayout, body_room
from midilm.core.tokenizer import bar_start_table
from midilm.sampling.settings import SamplingSettings, fast_sampling, greedy_config

if TYPE_CHECKING:  # annotations only: the module that defines it imports this one
    from midilm.sampling.generation import GenerationPlan


WINDOW_PAST_SHARE = (
    0.5  # of the context, at most, for the latest bars a window reads again (as accompaniment's windows)
)


@dataclass
class Windowed:
    """What writing a plan in windows needs beyond the plan itself (`build_plan` sets it)."""

    context: int
    sampling: SamplingSettings  # resolved: lengths, seed, and the sampler each window gets anew
    guidance_scale: float  # the effective one
    composer_ids: list[int]  # one per sample
    none_id: int


class TokenProgress(StoppingCriteria):
    """A tqdm bar over a piece's new tokens, moved once per decoding step; it never stops generation."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm  # only when a bar is asked for

        self.bar = tqdm(total=total, desc="sampling", unit="token")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def close(self) -> None:
        self.bar.close()


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Prompts of different lengths as one batch, padded on the left so every row's next token comes
    last: (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def window_start(ids: list[int], starts_bar: np.ndarray, past: int) -> int | None:
    """Where a window over `ids` (a row's music so far) starts: at the first bar line within its last
    `past` tokens, else at its last bar line (one bar longer than `past`), None when it has none."""
    if len(ids) <= past:
        return 0
    bar_lines = np.flatnonzero(starts_bar[np.asarray(ids, dtype=np.int64)])
    if not len(bar_lines):
        return None
    inside = bar_lines[bar_lines >= len(ids) - past]
    return int(inside[0]) if len(inside) else int(bar_lines[-1])


def run_windows(plan: GenerationPlan, model, progress: bool = False, **generate_kwargs) -> torch.LongTensor:
    """Write a plan longer than the context, one batched generate() call per window.

    Each window is `[BOS, COMPOSER]` then the row's latest whole bars (at most WINDOW_PAST_SHARE of the
    context, or the current bar when it alone is longer), left-padded to the batch's longest; under
    guidance each row has its COMPOSER_NONE twin, as in one call. The grammar and the guard read every
    window's prefix afresh: a bar line resets all their state (bar length, position, notes played, counts),
    so what they derive from a window that starts at one is what they would derive from the whole row.
    Window k samples with seed + k. A row ends at EOS; one whose current bar alone fills the context
    stops there, with a warning. Returns the conditional rows, `[BOS, COMPOSER, prompt, new tokens…]`,
    right-padded.
    """
    w, config = plan.windowed, plan.generation_config
    starts_bar = np.asarray(bar_start_table(plan.tokenizer))
    layout = RowLayout.for_tokenizer(plan.tokenizer)
    room, past = body_room(w.context), int(body_room(w.context) * WINDOW_PAST_SHARE)
    total, least = w.sampling.max_new_tokens, w.sampling.min_new_tokens or 0
    music = [list(plan.prompt_ids) for _ in w.composer_ids]
    active, written, plan.windows = list(range(len(w.composer_ids))), 0, 0
    meter = TokenProgress(total) if progress else None
    device = model.device
    while active and written < total:
        # Each unfinished row's window: the header and its latest bars
        starts = {}
        for k in list(active):
            start = window_start(music[k], starts_bar, past)
            if start is None or len(music[k]) - start >= room:
                warnings.warn(
                    f"sample {k}: its current bar fills the model's context; it ends after {written} new tokens",
                    stacklevel=3,
                )
                active.remove(k)
            else:
                starts[k] = start
        if not active:
            break
        rows = [layout.continuation_prompt(w.composer_ids[k], music[k][starts[k] :]) for k in active]
        if w.guidance_scale != 1.0:
            rows += [layout.continuation_prompt(w.none_id, row[HEADER_TOKENS:]) for row in rows]
        input_ids, attention_mask = left_padded(rows, config.pad_token_id)
        width = input_ids.shape[1]

        # One generate() call: the plan's grammar and guard, read afresh, and this window's sampler
        new = min(w.context - width, total - written)
        gen_config = greedy_config(
            new,
            config.bos_token_id,
            config.eos_token_id,
            config.pad_token_id,
            min(least - written, new) if least > written else None,
        )
        fast_sampling(gen_config, w.sampling.static_cache, w.sampling.compile, w.sampling.compile_backend, device)
        processors = LogitsProcessorList(plan.logits_processor[:-1])
        for processor in processors:
            processor.reset()
        processors.append(w.sampling.sampler(w.guidance_scale, seed_offset=plan.windows))
        kwargs = {
            "attention_mask": attention_mask.to(device),
            "generation_config": gen_config,
            "logits_processor": processors,
        }
        if meter is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([meter])
        output = model.generate(input_ids.to(device), **{**kwargs, **generate_kwargs})
        plan.windows += 1

        # Keep what each row wrote; a row that wrote EOS is finished
        for i, k in enumerate(list(active)):
            tokens = output[i, width:].tolist()
            if config.eos_token_id in tokens:
                music[k] += tokens[: tokens.index(config.eos_token_id) + 1]
                active.remove(k)
            else:
                music[k] += tokens
        written += output.shape[1] - width
    if meter is not None:
        meter.close()
    rows = [layout.continuation_prompt(c, ids) for c, ids in zip(w.composer_ids, music)]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [config.pad_token_id] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
