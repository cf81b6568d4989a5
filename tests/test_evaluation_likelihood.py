"""midilm.evaluation.likelihood: the likelihood arithmetic by hand, and against the model's own loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from midilm.evaluation.likelihood import fit_unigram, likelihood_summary, model_nll, unigram_nll


def test_unigram_by_hand():
    # scored tokens (after BOS=1 and the composer) of the training row: 5, 5, 6, 2
    log_probs = fit_unigram([[1, 3, 5, 5, 6, 2]], vocab_size=8)
    counts = [1, 1, 2, 1, 1, 3, 2, 1]  # add-one: 8 + 4 = 12 in all
    assert log_probs.tolist() == pytest.approx([math.log(c / 12) for c in counts])
    total, tokens = unigram_nll(log_probs, [[1, 4, 5, 2]])  # scores 5 and 2
    assert tokens == 2 and total == pytest.approx(-math.log(3 / 12) - math.log(2 / 12))
    assert likelihood_summary(total, tokens, notes=1)["perplexity"] == pytest.approx(math.sqrt(12 / 3 * 12 / 2))


class FixedModel(torch.nn.Module):
    """Predicts the same next-token distribution everywhere: NLLs are sums of -log p by hand."""

    def __init__(self, probs: list[float], context: int = 64):
        super().__init__()
        self.log_p = torch.tensor(probs).log()
        self.config = SimpleNamespace(max_position_embeddings=context)
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.log_p.expand(*input_ids.shape, -1).clone())


def test_nll_per_note_by_hand():
    model = FixedModel([0.1, 0.2, 0.3, 0.4])
    rows = [[1, 3, 2, 2], [1, 2, 3]]  # scored: 2, 2 | 3; the second row is padded with id 0 (p = 0.1) in a batch of two
    total, tokens = model_nll(model, rows, batch_size=2)
    assert tokens == 3
    assert total == pytest.approx(-2 * math.log(0.3) - math.log(0.4))
    summary = likelihood_summary(total, tokens, notes=2)
    assert summary["nll_per_note"] == pytest.approx(total / 2)
    assert summary["nll_per_token"] == pytest.approx(total / 3)
    assert summary["bits_per_note"] == pytest.approx(total / 2 / math.log(2))


def test_model_nll_matches_the_models_own_loss():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=12,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    rows = [[1, 3, 5, 6, 7, 8, 2], [1, 4, 9, 2], [1, 3, 10, 11, 5]]
    total, tokens = model_nll(model, rows, batch_size=3)
    expected = 0.0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row])
            labels = ids.clone()
            labels[:, 1] = -100  # nothing predicts the composer token
            expected += model(input_ids=ids, labels=labels).loss.item() * (len(row) - 2)
    assert tokens == sum(len(r) - 2 for r in rows)
    assert total == pytest.approx(expected, rel=1e-5)
