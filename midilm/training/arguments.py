"""train.py's model and data arguments, and midilm's defaults for transformers' TrainingArguments
(TRAINING_DEFAULTS)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from midilm.core.errors import InputError
from midilm.core.modeling import MODEL_TYPES, PRESETS

# The share of the steps over which the warmup_stable_decay schedule decays, unless num_decay_steps is given.
WSD_DECAY_SHARE = 0.2

# midilm's defaults for transformers' TrainingArguments (which midilm does not own); config.json's
# `training` section and the flags override them.
TRAINING_DEFAULTS = {
    "output_dir": "model_output",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    # small models on a small vocabulary take a large rate; 5e-5 (transformers') barely moves the tiny preset
    "learning_rate": 1e-3,
    # Hold the peak rate, then decay over the last WSD_DECAY_SHARE of the steps: at the demo's 1500 steps a cosine
    # spends its last third below a quarter of the peak, and validation NLL ended 0.25 nats higher (bench/RESULTS.md).
    "lr_scheduler_type": "warmup_stable_decay",
    "warmup_steps": 50,  # a short warm-up keeps the first steps at a high rate from diverging
    "weight_decay": 0.1,  # the usual decoder-only choice; the corpora are small, so the model can overfit
    # make demo trains 1500, make demo-full 8000; the tiny preset's validation NLL still falls at 4000
    # (bench/RESULTS.md)
    "max_steps": 2000,
    "eval_strategy": "steps",
    "eval_steps": 250,
    "save_strategy": "steps",  # the same steps as evaluation: the best checkpoint can be kept
    "save_steps": 250,
    "save_total_limit": 3,
    "logging_steps": 25,
    "load_best_model_at_end": True,
    "metric_for_best_model": "eval_loss",  # the conditional loss (MidiTrainer), a function of the weights alone
    "greater_is_better": False,
    "report_to": ["tensorboard"],  # loss, perplexity, piano rolls and audio, offline
    "include_num_input_tokens_seen": True,  # the throughput figures in each log
    "train_sampling_strategy": "group_by_length",  # length-grouped batches leave under 1% padding
    "seed": 0,
    "dataloader_num_workers": 0,  # rows are tiny and memory-mapped: worker processes cost more than they save
}


@dataclass
class ModelArguments:
    model_type: str = field(
        default="llama", metadata={"help": f"Architecture: {' or '.join(MODEL_TYPES)} (llama uses RoPE)."}
    )
    model_preset: str = field(default="tiny", metadata={"help": f"Size preset: {', '.join(PRESETS)}."})
    model_overrides: str | None = field(
        default=None, metadata={"help": "JSON of HF config keys to override, e.g. '{\"num_hidden_layers\": 6}'."}
    )

    def overrides(self) -> dict:
        if not self.model_overrides:
            return {}
        try:
            value = (
                json.loads(self.model_overrides)
                if isinstance(self.model_overrides, str)
                else dict(self.model_overrides)
            )
        except json.JSONDecodeError as err:
            raise InputError(f"--model_overrides is not valid JSON ({err})") from err
        if not isinstance(value, dict):
            raise InputError("--model_overrides must be a JSON object of config keys")
        return value


@dataclass
class DataArguments:
    dataset_dir: str = field(default="data", metadata={"help": "DatasetDict written by prepare_dataset.py."})
    tokenizer_dir: str = field(
        default="tokenizer", metadata={"help": "Tokenizer folder written by prepare_dataset.py."}
    )
    max_seq_len: int | None = field(
        default=None,
        metadata={
            "help": (
                "Training context (default: the dataset's, prepare_dataset.py --max_seq_len); never shorter than "
                "the dataset's rows."
            )
        },
    )
    composer_dropout: float = field(
        default=0.15,
        metadata={
            "help": (
                "Probability that the composer token becomes COMPOSER_NONE (trains the unconditional branch for CFG)."
            )
        },
    )
    infill_share: float = field(
        default=0.5,
        metadata={
            "help": "For a dataset prepared with --tasks continuation,infill: the probability that a continuation "
            "row becomes an infill row (a span of 1-8 bars drawn anew each time the row is read)."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": (
                "Concatenate each batch's rows into one sequence with restarting position ids (transformers' "
                "DataCollatorWithFlattening) instead of padding them; attention stays within each row. For "
                "attention kernels that take packed rows (flash attention); with SDPA the mask spans the whole "
                "packed batch, and length-grouped batches (TRAINING_DEFAULTS) already leave little padding "
                "(bench/RESULTS.md, 'Padding in training batches')."
            )
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Debug: keep the first N training chunks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Debug: keep the first N validation chunks."})
    composer_balanced: bool = field(
        default=False,
        metadata={
            "help": (
                "Draw each epoch's training rows with replacement so that every composer is equally likely (each "
                "row weighted 1 / its composer's rows), grouped by length as --train_sampling_strategy "
                "group_by_length does; replaces that strategy."
            )
        },
    )
    unconditional_eval: bool = field(
        default=True,
        metadata={
            "help": (
                "At each evaluation, also score the validation rows with COMPOSER_NONE in place of the composer "
                "token (eval_uncond_loss) and log eval_composer_information = eval_uncond_loss - eval_loss, in "
                "nats per token (above 0: the model uses the composer token). Scores every validation row twice."
            )
        },
    )
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after this many evaluations without a better eval loss (0 = off)."}
    )
    samples_per_composer: int = field(
        default=1,
        metadata={"help": "Samples generated per composer at each evaluation and logged to TensorBoard (0 = off)."},
    )
    sample_max_new_tokens: int = field(default=256, metadata={"help": "Length of those samples in tokens."})
    soundfont: str | None = field(
        default=None,
        metadata={"help": "General MIDI soundfont for the TensorBoard audio (default: one found locally)."},
    )

    def __post_init__(self):
        if not 0.0 <= self.composer_dropout <= 1.0:
            raise InputError(f"--composer_dropout {self.composer_dropout} must be within [0, 1]")
        if not 0.0 < self.infill_share <= 1.0:
            raise InputError(f"--infill_share {self.infill_share} must be within (0, 1]")
