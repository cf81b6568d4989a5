"""Model configs (Llama with RoPE, or GPT-2) sized by preset, and the midilm model folder.

A model folder is a plain `transformers` folder: `AutoModelForCausalLM.from_pretrained` loads it
without midilm. Its config.json carries the composer map (`composer_to_id`, `composer_none_id`) and
midilm's guidance default (`midilm_guidance_scale`); the tokenizer files sit beside the weights.
generation_config.json holds plain sampling settings only, so that a bare `model.generate()` samples
plainly: with `guidance_scale` there, transformers would run its own CFG, whose unconditional branch
is the prompt's last token (the composer token itself), not COMPOSER_NONE.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import miditok
from transformers import AutoConfig, GenerationConfig, GPT2Config, LlamaConfig, PretrainedConfig

from midilm.core.errors import InputError
from midilm.core.rows import body_room
from midilm.core.tokenizer import COMPOSERS_FILE, TOKENIZER_FILE, ComposerMap, load_tokenizer

MODEL_TYPES = ("llama", "gpt2")
# Sizes: tiny trains in minutes on a laptop CPU (tests, demo); small (8 x 512, 8k context) is the
# largest that trains a long-context model on one GPU in hours; base is about 85M parameters, the GPT-2 small class.
PRESETS = {
    "tiny": {"num_layers": 4, "num_heads": 4, "hidden": 128, "ffn": 512, "context": 1024},
    "small": {"num_layers": 8, "num_heads": 8, "hidden": 512, "ffn": 2048, "context": 8192},
    "base": {"num_layers": 12, "num_heads": 12, "hidden": 768, "ffn": 2048, "context": 8192},
}
# Sampling defaults written to generation_config.json: a temperature a little under 1 and top-k/top-p
# cut the long tail of unlikely tokens (stray pitches, odd durations) that pure sampling draws now and
# then, while keeping variety; a slight repetition penalty discourages stuck loops of one bar.
SAMPLING_DEFAULTS = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.02}
# midilm's guidance default lives in config.json under a key transformers never reads.
GUIDANCE_KEY = "midilm_guidance_scale"
DEFAULT_GUIDANCE_SCALE = 3.0
# The resolved configuration train.py saves in the model folder.
TRAINING_CONFIG_FILE = "training_config.json"
# train.py records the dataset's tasks here; a model saved before that key existed saw continuation rows only.
TASKS_KEY = "midilm_tasks"
# A model fine-tuned from another records what it was built on here (midilm.training.finetune.lineage).
BASE_KEY = "midilm_base_model"


def build_config(
    model_type: str,
    preset: str,
    tokenizer: miditok.REMI,
    composer_map: ComposerMap,
    max_seq_len: int,
    overrides: dict | None = None,
) -> PretrainedConfig:
    if model_type not in MODEL_TYPES:
        raise InputError(f"--model_type {model_type!r} is unknown; choose one of {', '.join(MODEL_TYPES)}")
    if preset not in PRESETS:
        raise InputError(f"--model_preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    size = PRESETS[preset]
    if max_seq_len > size["context"]:
        raise InputError(
            f"--max_seq_len {max_seq_len} is over the {preset} preset's context of {size['context']} tokens"
        )
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer["BOS_None"],
        "eos_token_id": tokenizer["EOS_None"],
    }
    if model_type == "llama":
        config = LlamaConfig(
            hidden_size=size["hidden"],
            intermediate_size=size["ffn"],
            num_hidden_layers=size["num_layers"],
            num_attention_heads=size["num_heads"],
            num_key_value_heads=size["num_heads"],
            max_position_embeddings=max_seq_len,
            tie_word_embeddings=True,  # the vocabulary is small; tying saves parameters at no cost here
            **ids,
        )
    else:
        config = GPT2Config(
            n_embd=size["hidden"],
            n_inner=size["ffn"],
            n_layer=size["num_layers"],
            n_head=size["num_heads"],
            n_positions=max_seq_len,
            **ids,
        )
    config._attn_implementation = "sdpa"
    setattr(config, GUIDANCE_KEY, DEFAULT_GUIDANCE_SCALE)  # before the overrides, which may set it
    for key, value in (overrides or {}).items():
        if not hasattr(config, key):
            raise InputError(f"--model_overrides: {key!r} is not a {type(config).__name__} key")
        setattr(config, key, value)
    config.update(composer_map.to_config())
    return config


def generation_config(config: PretrainedConfig) -> GenerationConfig:
    return GenerationConfig(
        do_sample=True,
        max_new_tokens=min(1024, body_room(context_length(config))),
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        **SAMPLING_DEFAULTS,
    )


def sampling_defaults(source: str | Path | PretrainedConfig, generation: GenerationConfig | None = None) -> dict:
    """midilm's sampling defaults for a model folder (or its config and generation config):
    guidance_scale, temperature, top_k, top_p, repetition_penalty, max_new_tokens (None where unset).

    The guidance default is config.json's `midilm_guidance_scale`; a folder written before that key
    existed kept it in generation_config.json, so that is read next, then DEFAULT_GUIDANCE_SCALE.
    """
    if isinstance(source, (str, Path)):
        config = AutoConfig.from_pretrained(source)
        try:
            generation = GenerationConfig.from_pretrained(source)
        except OSError:
            generation = None
    else:
        config = source
    if generation is None:
        generation = generation_config(config)
    guidance = getattr(config, GUIDANCE_KEY, None)
    if guidance is None:
        guidance = getattr(generation, "guidance_scale", None)
    names = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")
    return {
        "guidance_scale": float(DEFAULT_GUIDANCE_SCALE if guidance is None else guidance),
        **{name: getattr(generation, name, None) for name in names},
    }


def model_tasks(config: PretrainedConfig) -> list[str]:
    """The tasks a model was trained on, from its config.json."""
    return list(getattr(config, TASKS_KEY, None) or ["continuation"])


def context_length(config: PretrainedConfig) -> int:
    return getattr(config, "max_position_embeddings", None) or config.n_positions


def copy_tokenizer(tokenizer_dir: Path, model_dir: Path) -> None:
    for name in (TOKENIZER_FILE, COMPOSERS_FILE):
        shutil.copy2(Path(tokenizer_dir) / name, Path(model_dir) / name)


def load_midilm_dir(model_dir: str | Path, flag: str = "--model_dir"):
    """Check a model folder and return (config, tokenizer, composer map); one clear error naming `flag` if it is
    not one."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{flag} {model_dir}: no config.json; train a model with train.py first")
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"{flag} {model_dir}: not a transformers model folder ({str(err).strip().splitlines()[0][:200]})"
        ) from err
    try:
        composer_map = ComposerMap.from_config(config)
        tokenizer, tokenizer_map = load_tokenizer(model_dir)
    except (ValueError, FileNotFoundError) as err:
        raise InputError(f"{flag} {model_dir}: not a midilm model ({err})") from err
    if len(tokenizer) != config.vocab_size or tokenizer_map.to_config() != composer_map.to_config():
        raise InputError(
            f"{flag} {model_dir}: the tokenizer ({len(tokenizer)} tokens) does not match the model "
            f"({config.vocab_size} tokens) or its composer map"
        )
    return config, tokenizer, composer_map
