"""midilm.sampling.guidance: the batched CFG processor is exact (formula, transformers' own processor, same draws)
and safe."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessorList
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    UnbatchedClassifierFreeGuidanceLogitsProcessor,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from midilm.sampling.guidance import CFGSamplingProcessor, guided_log_probs

VOCAB, BOS, EOS, PAD, COND, UNCOND = 48, 1, 2, 0, 3, 4
SETTINGS = {"temperature": 0.9, "top_k": 20, "top_p": 0.95, "repetition_penalty": 1.1}


class FixedLogits(torch.nn.Module):
    """Stands in for the model transformers' unbatched processor calls for the unconditional branch."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, **kwargs):
        return CausalLMOutputWithPast(logits=self.logits[:, None, :])


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).eval()


def greedy_config(new_tokens: int) -> GenerationConfig:
    """What midilm.sampling.generation passes: greedy, every transformers sampling flag neutral."""
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        guidance_scale=1.0,
        repetition_penalty=1.0,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )


def rows(batch: int, composer: int, length: int = 6) -> torch.LongTensor:
    prompt = torch.arange(10, 10 + length - 2).repeat(batch, 1)
    return torch.cat([torch.tensor([[BOS, composer]] * batch), prompt], dim=1)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.5, 3.0, 7.5])
def test_guidance_matches_formula_and_transformers(scale):
    torch.manual_seed(1)
    cond, uncond = torch.randn(3, VOCAB) * 4, torch.randn(3, VOCAB) * 4
    ours = guided_log_probs(cond, uncond, scale)

    c, u = cond.double().log_softmax(-1), uncond.double().log_softmax(-1)
    torch.testing.assert_close(ours.double(), u + scale * (c - u), rtol=1e-5, atol=1e-5)

    theirs = UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, FixedLogits(uncond))(rows(3, COND), cond.clone())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_sampling_scores_match_transformers_chain():
    """Guidance, then repetition penalty, temperature, top-k, top-p, as generate(do_sample=True) orders them."""
    torch.manual_seed(2)
    batch, scale = 4, 3.0
    scores = torch.randn(2 * batch, VOCAB) * 3
    input_ids = torch.cat([rows(batch, COND), rows(batch, UNCOND)])
    _, ours = CFGSamplingProcessor(scale, **SETTINGS).sampling_scores(input_ids, scores.clone())

    expected = UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, FixedLogits(scores[batch:]))(
        input_ids[:batch], scores[:batch].clone()
    )
    for step in (
        RepetitionPenaltyLogitsProcessor(SETTINGS["repetition_penalty"]),
        TemperatureLogitsWarper(SETTINGS["temperature"]),
        TopKLogitsWarper(SETTINGS["top_k"]),
        TopPLogitsWarper(SETTINGS["top_p"]),
    ):
        expected = step(input_ids[:batch], expected)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_forces_one_token_on_both_halves():
    torch.manual_seed(3)
    batch = 3
    scores = torch.randn(2 * batch, VOCAB)
    input_ids = torch.cat([rows(batch, COND), rows(batch, UNCOND)])
    out = CFGSamplingProcessor(2.0, seed=0)(input_ids, scores)
    assert out.shape == scores.shape
    chosen = out.argmax(-1)
    assert torch.equal(chosen[:batch], chosen[batch:])
    assert (out == 0).sum() == 2 * batch and torch.isneginf(out).sum() == 2 * batch * (VOCAB - 1)


def test_masked_tokens_give_no_nan_and_are_never_drawn():
    """A grammar or min_new_tokens masks the same tokens on both rows: -inf - -inf must not become nan."""
    torch.manual_seed(4)
    batch = 4
    scores = torch.randn(2 * batch, VOCAB)
    allowed = torch.tensor([7, 11, 30])
    masked = torch.full_like(scores, float("-inf"))
    masked[:, allowed] = scores[:, allowed]
    guided = guided_log_probs(masked[:batch], masked[batch:], 3.0)
    assert not guided.isnan().any()
    assert torch.isneginf(guided).sum() == batch * (VOCAB - 3)
    # A token masked on one row only (s = 0 would otherwise give 0 * -inf = nan) stays masked too.
    one_sided = scores.clone()
    one_sided[0, 5] = float("-inf")
    assert torch.isneginf(guided_log_probs(one_sided[:batch], one_sided[batch:], 0.0)[0, 5])

    input_ids = torch.cat([rows(batch, COND), rows(batch, UNCOND)])
    processor = CFGSamplingProcessor(3.0, **SETTINGS, seed=0)
    for _ in range(50):
        out = processor(input_ids, masked.clone())
        assert not out.isnan().any()
        assert torch.isin(out.argmax(-1), allowed).all()


def test_same_seed_same_tokens_and_reused_processor_restarts(model):
    ids = torch.cat([rows(2, COND), rows(2, UNCOND)])
    processor = CFGSamplingProcessor(3.0, **SETTINGS, seed=7)

    def run(p):
        return model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            generation_config=greedy_config(24),
            logits_processor=LogitsProcessorList([p]),
        )

    first, again = run(processor), run(processor)
    assert torch.equal(first, again)
    assert torch.equal(first, run(CFGSamplingProcessor(3.0, **SETTINGS, seed=7)))
    assert not torch.equal(first, run(CFGSamplingProcessor(3.0, **SETTINGS, seed=8)))
    assert torch.equal(first[:2, 6:], first[2:, 6:])  # both branches carry the same continuation


def test_scale_one_is_plain_sampling(model):
    """s = 1 on B rows draws exactly what generate(do_sample=True) draws with the same seed."""
    ids = rows(3, COND)
    torch.manual_seed(11)
    plain = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=30, min_new_tokens=30, **SETTINGS
    )
    ours = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        generation_config=greedy_config(30),
        logits_processor=LogitsProcessorList([CFGSamplingProcessor(1.0, **SETTINGS, seed=11)]),
    )
    assert torch.equal(plain, ours)


def test_batched_cfg_draws_what_transformers_cfg_draws(model):
    """One forward over 2B rows gives the same samples as generate(guidance_scale=..., negative_prompt_ids=...)."""
    cond, uncond = rows(2, COND), rows(2, UNCOND)
    torch.manual_seed(5)
    theirs = model.generate(
        cond,
        attention_mask=torch.ones_like(cond),
        do_sample=True,
        max_new_tokens=30,
        min_new_tokens=30,
        guidance_scale=3.0,
        negative_prompt_ids=uncond,
        negative_prompt_attention_mask=torch.ones_like(uncond),
        **SETTINGS,
    )
    both = torch.cat([cond, uncond])
    ours = model.generate(
        both,
        attention_mask=torch.ones_like(both),
        generation_config=greedy_config(30),
        logits_processor=LogitsProcessorList([CFGSamplingProcessor(3.0, **SETTINGS, seed=5)]),
    )
    assert torch.equal(theirs, ours[:2])


def test_min_new_tokens_mask_passes_through(model):
    """transformers' MinNewTokens processor runs before ours and masks EOS on both halves."""
    ids = torch.cat([rows(2, COND), rows(2, UNCOND)])
    scores = torch.zeros(4, VOCAB)
    scores[:, EOS] = 50.0  # EOS would win every draw if it were not masked
    masked = MinNewTokensLengthLogitsProcessor(ids.shape[1], 5, EOS)(ids, scores)
    out = CFGSamplingProcessor(3.0, seed=0)(ids, masked)
    assert not out.isnan().any() and (out.argmax(-1) != EOS).all()


def test_paired_processor_needs_an_even_batch():
    with pytest.raises(ValueError, match="2B rows"):
        CFGSamplingProcessor(3.0)(rows(3, COND), torch.zeros(3, VOCAB))
    with pytest.raises(ValueError, match=">= 0"):
        CFGSamplingProcessor(-1.0)
