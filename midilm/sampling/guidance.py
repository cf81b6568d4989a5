"""Classifier-free guidance that costs one batched forward: a LogitsProcessor that mixes, samples and forces.

`generate()` gets 2B rows: B conditional (`[BOS, COMPOSER_x, prompt…]`) and B unconditional
(`[BOS, COMPOSER_NONE, prompt…]`), and runs with `do_sample=False`. Each step this processor

1. mixes row i with row i+B as `uncond + s * (cond - uncond)` in log-softmax space,
2. applies repetition penalty, temperature, top-k and top-p (transformers' own processors, in the
   order `generate(do_sample=True)` applies them),
3. draws one token per pair from its own seeded `torch.Generator`,
4. returns scores that are -inf everywhere but that token, on both rows of the pair,

so greedy decoding picks the same token for both branches and one forward over 2B rows (KV cache,
static cache, torch.compile) serves them. transformers' `generate(guidance_scale=...)` instead runs
a second, eager model call per step with its own cache.

With s = 1 there is nothing to mix: the caller gives B rows only and the processor samples from
the raw logits, exactly as `generate(do_sample=True)` does (same draw for the same seed).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def guided_log_probs(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """`uncond + s * (cond - uncond)` on log-softmaxed logits; a token masked (-inf) in either row stays masked.

    Without the mask, a token that a grammar or `min_new_tokens` removed from both rows would give
    `-inf - -inf = nan` and poison the softmax.
    """
    cond, uncond = cond.log_softmax(dim=-1), uncond.log_softmax(dim=-1)
    guided = uncond + guidance_scale * (cond - uncond)
    return guided.masked_fill(torch.isneginf(cond) | torch.isneginf(uncond), float("-inf"))


class CFGSamplingProcessor(LogitsProcessor):
    """Guidance, sampling warpers and the draw itself, for `generate(do_sample=False)`.

    Must come last in the `logits_processor` list: processors before it (a grammar, min_new_tokens)
    see both halves and may mask tokens; nothing after it may change the forced scores.

    Args:
        guidance_scale: s; 1 means no guidance and expects B rows, any other value 2B rows.
        temperature, top_k, top_p, repetition_penalty: as in `GenerationConfig`; 0 / 1.0 turn each off.
        seed: seeds the processor's generator; a new `generate()` call (shorter input) reseeds it, so
            re-running the same call gives the same tokens.
    """

    def __init__(
        self,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
    ):
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self.guidance_scale = float(guidance_scale)
        self.paired = self.guidance_scale != 1.0
        self.seed = seed
        # Same conditions and order as transformers' `_get_logits_processor` for do_sample=True.
        self.warpers = []
        if repetition_penalty is not None and repetition_penalty != 1.0:
            self.warpers.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
        if temperature is not None and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self._generator: torch.Generator | None = None
        self._last_length = -1

    def _rng(self, device: torch.device, length: int) -> torch.Generator:
        if self._generator is None or self._generator.device != device or length <= self._last_length:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self._last_length = length
        return self._generator

    def sampling_scores(
        self, input_ids: torch.LongTensor, scores: torch.Tensor
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """The rows that are sampled (their input ids) and their final scores, before the draw."""
        if self.paired:
            if scores.shape[0] % 2:
                raise ValueError(
                    f"guidance_scale {self.guidance_scale} needs 2B rows (B conditional, then B unconditional), got "
                    f"{scores.shape[0]}"
                )
            half = scores.shape[0] // 2
            input_ids, scores = input_ids[:half], guided_log_probs(scores[:half], scores[half:], self.guidance_scale)
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        return input_ids, scores

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        generator = self._rng(scores.device, input_ids.shape[1])
        _, sampled = self.sampling_scores(input_ids, scores)
        tokens = torch.multinomial(sampled.softmax(dim=-1), num_samples=1, generator=generator)
        if self.paired:
            tokens = torch.cat([tokens, tokens])
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens, 0.0)
