"""What train.py needs beyond the HF Trainer: arguments, data checks, the collator, logging, resume."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import torch
from datasets import DatasetDict
from transformers import Trainer, TrainerCallback

from midilm.dataset import load_prepared
from midilm.modeling import MODEL_TYPES, PRESETS
from midilm.sources import InputError
from midilm.tokenizer import ComposerMap

TRAINING_CONFIG_FILE = "training_config.json"


@dataclass
class ModelArguments:
    model_type: str = field(default="llama", metadata={"help": f"Architecture: {' or '.join(MODEL_TYPES)} (llama uses RoPE)."})
    model_preset: str = field(default="tiny", metadata={"help": f"Size preset: {', '.join(PRESETS)}."})
    model_overrides: str | None = field(default=None, metadata={"help": 'JSON of HF config keys to override, e.g. \'{"num_hidden_layers": 6}\'.'})

    def overrides(self) -> dict:
        if not self.model_overrides:
            return {}
        try:
            value = json.loads(self.model_overrides) if isinstance(self.model_overrides, str) else dict(self.model_overrides)
        except json.JSONDecodeError as err:
            raise InputError(f"--model_overrides is not valid JSON ({err})") from err
        if not isinstance(value, dict):
            raise InputError("--model_overrides must be a JSON object of config keys")
        return value


@dataclass
class DataArguments:
    dataset_dir: str = field(default="data", metadata={"help": "DatasetDict written by prepare_dataset.py."})
    tokenizer_dir: str = field(default="tokenizer", metadata={"help": "Tokenizer folder written by prepare_dataset.py."})
    max_seq_len: int = field(default=1024, metadata={"help": "Training context; longer chunks are randomly cropped (keeping BOS, COMPOSER)."})
    composer_dropout: float = field(default=0.15, metadata={"help": "Probability that the composer token becomes COMPOSER_NONE (trains the unconditional branch for CFG)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Debug: keep the first N training chunks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Debug: keep the first N validation chunks."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Stop after this many evaluations without a better eval loss (0 = off)."})
    samples_per_composer: int = field(default=1, metadata={"help": "Samples generated per composer at each evaluation and logged to TensorBoard (0 = off)."})
    sample_max_new_tokens: int = field(default=256, metadata={"help": "Length of those samples in tokens."})
    soundfont: str | None = field(default=None, metadata={"help": "General MIDI soundfont for the TensorBoard audio (default: one found locally)."})

    def __post_init__(self):
        if not 0.0 <= self.composer_dropout <= 1.0:
            raise InputError(f"--composer_dropout {self.composer_dropout} must be within [0, 1]")


def load_training_data(args: DataArguments, tokenizer, composer_map: ComposerMap) -> DatasetDict:
    """Load the dataset and check it belongs to this tokenizer, before any model is built."""
    path = Path(args.dataset_dir)
    dataset = load_prepared(path, ("train", "validation"), {"input_ids", "composer"}, composer_map.names, f"--tokenizer_dir {args.tokenizer_dir}")
    for split in ("train", "validation"):
        ds = dataset[split]
        if len(ds):
            flat = pc.list_flatten(ds.data.column("input_ids"))
            top = pc.max(flat).as_py()
            if top is not None and top >= len(tokenizer):
                raise InputError(
                    f"--dataset_dir {path}: token id {top} is outside the tokenizer's vocabulary ({len(tokenizer)}); "
                    "the dataset was built with another tokenizer"
                )
            first = ds[0]["input_ids"][:2]
            if first[0] != tokenizer["BOS_None"] or first[1] not in composer_map.token_ids:
                raise InputError(f"--dataset_dir {path}: rows do not start with [BOS, COMPOSER]; rebuild it with prepare_dataset.py")
    if len(dataset["train"]) == 0 or len(dataset["validation"]) == 0:
        raise InputError(f"--dataset_dir {path}: the train or validation split is empty; prepare more pieces")
    if args.max_train_samples:
        dataset["train"] = dataset["train"].select(range(min(args.max_train_samples, len(dataset["train"]))))
    if args.max_eval_samples:
        dataset["validation"] = dataset["validation"].select(range(min(args.max_eval_samples, len(dataset["validation"]))))
    return DatasetDict({s: dataset[s].select_columns(["input_ids"]) for s in ("train", "validation")})


class MidiCollator:
    """Pads to the longest row, crops rows over `max_seq_len` at a random place (keeping BOS and the
    composer token in front), and swaps the composer token for COMPOSER_NONE with probability
    `composer_dropout`. Labels ignore padding and the composer token (nothing predicts it)."""

    def __init__(self, pad_id: int, none_id: int, composer_dropout: float, max_seq_len: int, generator: torch.Generator | None = None):
        self.pad_id, self.none_id = pad_id, none_id
        self.composer_dropout, self.max_seq_len = composer_dropout, max_seq_len
        self.generator = generator

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        seqs = []
        for row in rows:
            ids = torch.as_tensor(row["input_ids"], dtype=torch.long)
            if len(ids) > self.max_seq_len:
                body = len(ids) - 2
                start = int(torch.randint(0, body - (self.max_seq_len - 2) + 1, (1,), generator=self.generator))
                ids = torch.cat([ids[:2], ids[2 + start : 2 + start + self.max_seq_len - 2]])
            seqs.append(ids)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = s
            attention_mask[i, : len(s)] = 1
        drop = torch.rand(len(seqs), generator=self.generator) < self.composer_dropout
        input_ids[drop, 1] = self.none_id
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, 1] = -100
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MidiTrainer(Trainer):
    """The HF Trainer, with eval perplexity in every evaluation log (tokens/s comes from the Trainer's
    own `train_tokens_per_second` with `include_num_input_tokens_seen`)."""

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        super().log(logs, *args, **kwargs)


class SampleLoggingCallback(TrainerCallback):
    """At each evaluation: a few samples per composer, written as MIDI and logged to TensorBoard as a
    piano roll and as audio you can play in the browser."""

    def __init__(self, tokenizer, composer_map: ComposerMap, samples_per_composer: int, max_new_tokens: int, soundfont: str | None, writer_source):
        self.tokenizer, self.composer_map = tokenizer, composer_map
        self.samples_per_composer, self.max_new_tokens = samples_per_composer, max_new_tokens
        self.soundfont, self.writer_source = soundfont, writer_source
        self._audio_warned = False

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.samples_per_composer <= 0 or model is None:
            return
        from midilm.generation import sample_scores
        from midilm.render import AudioUnavailable, piano_roll_array, render_audio

        writer = self.writer_source()
        out_dir = Path(args.output_dir) / "samples" / f"step-{state.global_step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = model.training
        model.eval()
        samples = sample_scores(
            model, self.tokenizer, self.composer_map, self.composer_map.names, self.samples_per_composer,
            max_new_tokens=self.max_new_tokens, seed=state.global_step,
        )
        model.train(was_training)
        for i, (composer, score) in enumerate(samples):
            tag = f"samples/{composer}_{i % self.samples_per_composer}"
            score.dump_midi(out_dir / f"{composer}_{i % self.samples_per_composer}.mid")
            if writer is None:
                continue
            writer.add_image(f"{tag}/piano_roll", piano_roll_array(score, title=f"{composer} · step {state.global_step}"), state.global_step, dataformats="HWC")
            try:
                audio, rate = render_audio(score, soundfont=self.soundfont), 22050
                writer.add_audio(f"{tag}/audio", torch.from_numpy(audio).unsqueeze(0), state.global_step, sample_rate=rate)
            except AudioUnavailable as err:
                if not self._audio_warned:
                    print(f"no audio in TensorBoard: {err}")
                    self._audio_warned = True
        if writer is not None:
            writer.flush()


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that was saved completely.

    The Trainer writes trainer_state.json last, so a checkpoint cut off by a kill lacks it (or holds
    half of it); such a folder is skipped and the one before it is used.
    """
    candidates = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in candidates:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            print(f"skipping incomplete checkpoint {checkpoint} (killed while saving?)")
            continue
        return checkpoint
    return None
