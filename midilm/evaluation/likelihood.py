"""Likelihood of held-out rows: NLL per token and per note, under the model and under a unigram
baseline."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from midilm.core.modeling import context_length
from midilm.core.rows import body, body_predictions
from midilm.core.rows import windows as row_windows


def scored_tokens(ids: list[int]) -> list[int]:
    """The tokens a row's likelihood is measured on: its body (nothing predicts BOS or the composer)."""
    return list(body(ids))


def fit_unigram(rows: list[list[int]], vocab_size: int) -> np.ndarray:
    """Log-probabilities (nats) of a unigram model over the scored tokens of `rows`, add-one smoothed."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in rows:
        np.add.at(counts, np.asarray(scored_tokens(ids), dtype=np.int64), 1)
    return unigram_from_counts(counts)


def unigram_from_counts(counts: np.ndarray) -> np.ndarray:
    """Log-probabilities (nats) from token counts, add-one smoothed over the whole vocabulary."""
    smoothed = counts.astype(np.float64) + 1.0
    return np.log(smoothed / smoothed.sum())


def unigram_nll(log_probs: np.ndarray, rows: list[list[int]]) -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of `rows` under a unigram model."""
    tokens = np.concatenate(
        [np.asarray(scored_tokens(ids), dtype=np.int64) for ids in rows] or [np.zeros(0, dtype=np.int64)]
    )
    return float(-log_probs[tokens].sum()), len(tokens)


@torch.no_grad()
def model_nll(
    model, rows: list[list[int]], batch_size: int = 8, pad_id: int = 0, desc: str = "likelihood"
) -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of `rows` under a causal LM, in padded batches.

    Rows longer than the model's context are scored in windows (see `windows`).
    """
    context = context_length(model.config)
    pieces = sorted((w for ids in rows for w in row_windows(ids, context)), key=len)
    total, count = 0.0, 0
    for start in tqdm(range(0, len(pieces), batch_size), desc=desc, unit="batch", leave=False):
        batch = pieces[start : start + batch_size]
        width = max(len(w) for w in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, w in enumerate(batch):
            input_ids[i, : len(w)] = torch.tensor(w)
            mask[i, : len(w)] = 1
        input_ids, mask = input_ids.to(model.device), mask.to(model.device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        log_probs = body_predictions(logits).log_softmax(dim=-1)
        nll = -log_probs.gather(-1, body(input_ids).unsqueeze(-1)).squeeze(-1)
        keep = body(mask).bool()
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return total, count


def likelihood_summary(total_nll: float, tokens: int, notes: int) -> dict:
    """Per-token NLL (nats), perplexity, per-note NLL (nats and bits) from totals."""
    per_token = total_nll / tokens if tokens else None
    per_note = total_nll / notes if notes else None
    return {
        "total_nll": total_nll,
        "nll_per_token": per_token,
        "perplexity": math.exp(min(per_token, 700.0)) if per_token is not None else None,
        "nll_per_note": per_note,
        "bits_per_note": per_note / math.log(2) if per_note is not None else None,
    }
