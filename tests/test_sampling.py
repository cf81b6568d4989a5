"""midilm.sampling.settings: one SamplingSettings, resolved against a model's defaults and checked once, with
one-line errors."""

import pytest

from midilm.core.errors import InputError
from midilm.sampling.settings import SamplingSettings, greedy_config

DEFAULTS = {
    "guidance_scale": 3.0,
    "temperature": 0.9,
    "top_k": 40,
    "top_p": 0.95,
    "repetition_penalty": 1.02,
    "max_new_tokens": 500,
}


@pytest.mark.parametrize(
    "given, message",
    [
        ({"guidance_scale": -1}, "--guidance_scale -1: must be >= 0 (1 = no guidance)"),
        ({"temperature": 0}, "--temperature 0: must be > 0"),
        ({"top_k": -1}, "--top_k -1: must be >= 0 (0 = off)"),
        ({"top_p": 0}, "--top_p 0: must be within (0, 1]"),
        ({"top_p": 1.5}, "--top_p 1.5: must be within (0, 1]"),
        ({"repetition_penalty": 0}, "--repetition_penalty 0: must be > 0 (1 = off)"),
        ({"max_new_tokens": 0}, "--max_new_tokens 0: must be at least 1"),
    ],
)
def test_bad_settings_are_one_line_errors(given, message):
    with pytest.raises(InputError) as err:
        SamplingSettings(**given)
    assert str(err.value) == message and "\n" not in str(err.value)


def test_a_bad_model_default_is_caught_when_resolved():
    with pytest.raises(InputError, match=r"^--temperature -0.5: must be > 0$"):
        SamplingSettings().resolve({**DEFAULTS, "temperature": -0.5}, context=1024)


def test_given_values_override_the_models_defaults_else_neutral():
    resolved = SamplingSettings(top_k=5, seed=3).resolve(DEFAULTS, context=1024)
    assert (resolved.guidance_scale, resolved.temperature, resolved.top_k, resolved.top_p) == (3.0, 0.9, 5, 0.95)
    assert resolved.max_new_tokens == 500 and resolved.seed == 3
    neutral = SamplingSettings().resolve({}, context=64)
    assert (neutral.guidance_scale, neutral.temperature, neutral.top_k, neutral.top_p, neutral.repetition_penalty) == (
        1.0,
        1.0,
        0,
        1.0,
        1.0,
    )
    assert neutral.max_new_tokens == 62  # the context less BOS and the composer


def test_the_default_length_is_bounded_by_the_context_an_asked_one_is_not():
    assert SamplingSettings().resolve(DEFAULTS, context=100).max_new_tokens == 98
    assert (
        SamplingSettings(max_new_tokens=400).resolve(DEFAULTS, context=100).max_new_tokens == 400
    )  # written in windows
    assert SamplingSettings(max_new_tokens=10, min_new_tokens=50).resolve(DEFAULTS, context=100).min_new_tokens == 10
    # the melody sets an accompaniment's length: no max_new_tokens then
    assert SamplingSettings(max_new_tokens=10).resolve(DEFAULTS).max_new_tokens is None


def test_one_rule_for_guided_or_not():
    settings = SamplingSettings(guidance_scale=2.0).resolve(DEFAULTS, context=100)
    assert settings.effective_guidance_scale([7, 4], none_id=4) == 2.0
    assert (
        settings.effective_guidance_scale([4, 4], none_id=4) == 1.0
    )  # COMPOSER_NONE guided towards itself: plain sampling
    assert SamplingSettings(guidance_scale=1.0).resolve(DEFAULTS, 100).effective_guidance_scale([7], none_id=4) == 1.0


def test_record_lists_the_resolved_values_in_order():
    settings = SamplingSettings(seed=2).resolve(DEFAULTS, context=100)
    record = settings.record(3.0, None, prompt_tokens=0, static_cache=False, compile=False)
    assert list(record) == [
        "guidance_scale",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "max_new_tokens",
        "effective_guidance_scale",
        "grammar",
        "seed",
        "prompt_tokens",
        "guard",
        "guard_bounds",
        "static_cache",
        "compile",
    ]
    assert record["seed"] == 2 and record["guard"] is False


def test_the_generation_config_is_greedy_and_neutral():
    config = greedy_config(16, bos=1, eos=2, pad=0)
    assert not config.do_sample and config.guidance_scale == 1.0 and config.repetition_penalty == 1.0
    assert (config.max_new_tokens, config.eos_token_id, config.pad_token_id) == (16, 2, 0)
