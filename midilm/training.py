"""What train.py needs beyond the HF Trainer: arguments, data checks, the collator, logging, resume."""

from __future__ import annotations

import copy
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict
from transformers import DataCollatorWithFlattening, ProgressCallback, Trainer, TrainerCallback

from midilm.dataset import load_prepared
from midilm.errors import InputError
from midilm.generation import sample_scores
from midilm.guard import learn_bounds
from midilm.modeling import MODEL_TYPES, PRESETS
from midilm.prepare import CONFIG_FILE as PREPARE_CONFIG_FILE
from midilm.prepare import REPORT_FILE as PREPARE_REPORT_FILE
from midilm.render import AudioUnavailable, piano_roll_array, render_audio
from midilm.rows import (
    IGNORED_LABEL,
    TASKS,
    body,
    body_room,
    has_header,
    header,
    ignore_composer_label,
    infill_row,
    is_accompaniment,
    set_composer,
)
from midilm.sample_files import sample_stem
from midilm.sampling import SamplingSettings
from midilm.tokenizer import ComposerMap

# The share of the steps over which the warmup_stable_decay schedule decays, unless num_decay_steps is given.
WSD_DECAY_SHARE = 0.2
# midilm's defaults for transformers' TrainingArguments (which midilm does not own); config.json's
# `training` section and the flags override them.
TRAINING_DEFAULTS = {
    "output_dir": "model_output",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "learning_rate": 1e-3,  # small models on a small vocabulary take a large rate; 5e-5 (transformers') barely moves the tiny preset
    # Hold the peak rate, then decay over the last WSD_DECAY_SHARE of the steps: at the demo's 1500 steps a cosine
    # spends its last third below a quarter of the peak, and validation NLL ended 0.25 nats higher (bench/RESULTS.md).
    "lr_scheduler_type": "warmup_stable_decay",
    "warmup_steps": 50,  # a short warm-up keeps the first steps at a high rate from diverging
    "weight_decay": 0.1,  # the usual decoder-only choice; the corpora are small, so the model can overfit
    "max_steps": 2000,  # make demo trains 1500, make demo-full 4000; the tiny preset's validation NLL still falls at 4000 (bench/RESULTS.md)
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
            "help": "Training context (default: the dataset's, prepare_dataset.py --max_seq_len); never shorter than the dataset's rows."
        },
    )
    composer_dropout: float = field(
        default=0.15,
        metadata={
            "help": "Probability that the composer token becomes COMPOSER_NONE (trains the unconditional branch for CFG)."
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
            "help": "Concatenate each batch's rows into one sequence with restarting position ids (transformers' DataCollatorWithFlattening) instead of padding them; attention stays within each row. For attention kernels that take packed rows: with SDPA on CPU it ran 2.2x slower than padding, the mask spanning the whole packed batch (length-grouped batches, config.json's default, leave under 1% padding)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Debug: keep the first N training chunks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Debug: keep the first N validation chunks."})
    composer_balanced: bool = field(
        default=False,
        metadata={
            "help": "Draw each epoch's training rows with replacement so that every composer is equally likely (each row weighted 1 / its composer's rows), grouped by length as --train_sampling_strategy group_by_length does; replaces that strategy."
        },
    )
    unconditional_eval: bool = field(
        default=True,
        metadata={
            "help": "At each evaluation, also score the validation rows with COMPOSER_NONE in place of the composer token (eval_uncond_loss) and log eval_composer_information = eval_uncond_loss - eval_loss, in nats per token (above 0: the model uses the composer token). Doubles evaluation time."
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


@dataclass
class TrainingData:
    """The train and validation rows (input_ids only), and what the dataset says about them."""

    splits: DatasetDict
    train_rows: Dataset  # the whole training split, every column: what the guard's bounds are learnt from
    tasks: list[str]  # tasks of the training rows, in midilm.dataset.TASKS order
    row_len: int  # prepare_dataset.py --max_seq_len: no row is longer
    longest: int  # the longest train or validation row
    train_composers: list[int]  # composer index of each row of splits["train"]


def load_training_data(args: DataArguments, tokenizer, composer_map: ComposerMap) -> TrainingData:
    """Load the dataset and check it belongs to this tokenizer, before any model is built."""
    path = Path(args.dataset_dir)
    dataset = load_prepared(
        path,
        ("train", "validation"),
        {"input_ids", "composer"},
        composer_map.names,
        f"--tokenizer_dir {args.tokenizer_dir}",
    )
    longest = 0
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
            if not has_header(ds[0]["input_ids"], tokenizer["BOS_None"], composer_map.token_ids):
                raise InputError(
                    f"--dataset_dir {path}: rows do not start with [BOS, COMPOSER]; rebuild it with prepare_dataset.py"
                )
            longest = max(longest, pc.max(pc.list_value_length(ds.data.column("input_ids"))).as_py() or 0)
    if len(dataset["train"]) == 0 or len(dataset["validation"]) == 0:
        raise InputError(f"--dataset_dir {path}: the train or validation split is empty; prepare more pieces")
    tasks, row_len = dataset_tasks_and_row_len(path, dataset["train"])
    train_rows = dataset["train"]
    if args.max_train_samples:
        dataset["train"] = dataset["train"].select(range(min(args.max_train_samples, len(dataset["train"]))))
    if args.max_eval_samples:
        dataset["validation"] = dataset["validation"].select(
            range(min(args.max_eval_samples, len(dataset["validation"])))
        )
    splits = DatasetDict({s: dataset[s].select_columns(["input_ids"]) for s in ("train", "validation")})
    return TrainingData(
        splits, train_rows, tasks, max(row_len or 0, longest), longest, list(dataset["train"]["composer"])
    )


def learn_guard_bounds(data: TrainingData, tokenizer, dataset_dir: str) -> dict:
    """The musical guard's bounds (midilm.guard.learn_bounds) from the whole training split, whatever
    --max_train_samples keeps: they describe the music, not the steps. The original pieces'
    continuation rows are counted; a dataset of accompaniment rows only is counted whole (its MELODY
    and FULL markers each start a new bar)."""
    rows = data.train_rows
    if "continuation" not in data.tasks and "task" in rows.column_names:
        rows = rows.remove_columns("task")
    try:
        return learn_bounds(rows, tokenizer)
    except ValueError as err:
        raise InputError(f"--dataset_dir {dataset_dir}: cannot learn the musical guard's bounds ({err})") from err


def dataset_tasks_and_row_len(path: Path, train) -> tuple[list[str], int | None]:
    """The training rows' tasks (their `task` column, else the prepare report's) and prepare's
    --max_seq_len (None for a dataset without prepare_config.json)."""
    recorded = {}
    for name in (PREPARE_CONFIG_FILE, PREPARE_REPORT_FILE):
        try:
            recorded[name] = json.loads((path / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            recorded[name] = {}
    if "task" in train.column_names:
        present = set(pc.unique(train.data.column("task")).to_pylist())
    else:  # a dataset from before the accompaniment task: continuation rows only
        present = set(recorded[PREPARE_REPORT_FILE].get("tasks", ["continuation"]))
    if "infill" in recorded[PREPARE_REPORT_FILE].get("tasks", []):  # drawn from continuation rows while training
        present.add("infill")
    row_len = recorded[PREPARE_CONFIG_FILE].get("prepare", {}).get("max_seq_len")
    return [t for t in TASKS if t in present], int(row_len) if row_len else None


def training_context(args: DataArguments, data: TrainingData) -> int:
    """--max_seq_len, else the dataset's row length; a context shorter than the rows is refused,
    since the model would then never read a whole row (an accompaniment row's melody and its full
    texture could not even meet)."""
    if args.max_seq_len is None:
        return data.row_len
    if args.max_seq_len < data.longest:
        raise InputError(
            f"--max_seq_len {args.max_seq_len} is shorter than the rows of --dataset_dir {args.dataset_dir} "
            f"(up to {data.longest} tokens), so the model would never see a whole row; leave --max_seq_len out "
            f"to use the dataset's {data.row_len}, give at least {data.longest}, or re-prepare the dataset with "
            f"prepare_dataset.py --max_seq_len {args.max_seq_len}"
        )
    return args.max_seq_len


class MidiCollator:
    """Pads to the longest row, crops rows over `max_seq_len`, and swaps the composer token for
    COMPOSER_NONE with probability `composer_dropout`. Labels ignore padding and the composer token
    (nothing predicts it).

    A continuation row over `max_seq_len` is cropped at a random place, keeping BOS and the composer
    token in front. An accompaniment row (`[BOS, COMPOSER, MELODY, melody…, FULL, full…, EOS]`, known
    by the MELODY token from `section_ids`) is cut at its end instead: a crop inside it would drop
    the section markers, or pair a melody with bars it does not hold. train.py never lets rows exceed
    the context, so this guards direct users of the collator.

    With `infill_share` > 0 (a dataset prepared with `--tasks ...,infill`), each continuation row becomes an
    infill row with that probability, each time it is drawn (`midilm.rows.infill_row`: a span of 1-8 whole bars at
    a drawn place; `layout` and `starts_bar` of the tokenizer are then needed). Its labels skip the GAP and FILL
    markers, which stand where the draw put them; the bars before and after the span, the span and its EOS are
    scored.

    `for_evaluation()` gives the validation twins: no dropout and no random crop, so an evaluation
    is a function of the weights alone; their infill draws are seeded by each row's tokens.
    """

    def __init__(
        self,
        pad_id: int,
        none_id: int,
        composer_dropout: float,
        max_seq_len: int,
        generator: torch.Generator | None = None,
        section_ids: tuple[int, int] | None = None,
        padding_free: bool = False,
        infill_share: float = 0.0,
        layout=None,
        starts_bar=None,
    ):
        if infill_share > 0 and (layout is None or layout.infill_markers is None or starts_bar is None):
            raise ValueError("infill_share needs the layout of a tokenizer with GAP/FILL markers, and its starts_bar")
        self.infill_share, self.layout = infill_share, layout
        self.starts_bar = None if starts_bar is None else np.asarray(starts_bar, dtype=bool)
        self.pad_id, self.none_id = pad_id, none_id
        self.composer_dropout, self.max_seq_len = composer_dropout, max_seq_len
        self.generator = generator
        self.section_ids = section_ids
        self.random_crop = True
        # -100 between rows: the last token of one row never learns to predict the next row's BOS
        self.flatten = (
            DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORED_LABEL) if padding_free else None
        )

    def for_evaluation(self, unconditional: bool = False) -> MidiCollator:
        """A copy for validation batches. Every row keeps its composer token (`unconditional`: every row
        gets COMPOSER_NONE instead), and a row over the context is cut at its end. Dropout at eval time
        would mix the conditional and unconditional losses at random, so `eval_loss`, the best
        checkpoint and early stopping would move with the draw rather than with the model."""
        twin = copy.copy(self)
        twin.composer_dropout = 1.0 if unconditional else 0.0
        twin.random_crop = False
        return twin

    def _dropped(self, n: int) -> torch.Tensor:
        """Which of `n` rows lose their composer token. Rates 0 and 1 draw nothing: evaluating must not
        move the random stream training reads from."""
        if self.composer_dropout <= 0.0 or self.composer_dropout >= 1.0:
            return torch.full((n,), self.composer_dropout >= 1.0)
        return torch.rand(n, generator=self.generator) < self.composer_dropout

    def crop(self, ids: torch.Tensor) -> torch.Tensor:
        if len(ids) <= self.max_seq_len:
            return ids
        if self.section_ids is not None and is_accompaniment(ids, self.section_ids[0]):
            full_at = (ids == self.section_ids[1]).nonzero()
            if not len(full_at) or int(full_at[0]) >= self.max_seq_len - 1:
                raise ValueError(
                    f"an accompaniment row's melody section alone is longer than the context ({self.max_seq_len} tokens); "
                    "prepare the dataset with this --max_seq_len"
                )
            return ids[: self.max_seq_len]
        if not self.random_crop:
            return ids[: self.max_seq_len]
        rest, room = body(ids), body_room(self.max_seq_len)
        start = int(torch.randint(0, len(rest) - room + 1, (1,), generator=self.generator))
        return torch.cat([header(ids), rest[start : start + room]])

    def infill(self, ids: torch.Tensor) -> torch.Tensor | None:
        """`ids` turned into an infill row, or None when this draw keeps it a continuation row."""
        if self.infill_share <= 0.0 or is_accompaniment(ids, self.section_ids[0] if self.section_ids else None):
            return None
        # training draws from the collator's stream; evaluation from the row's own, so it is the same every time
        generator = (
            self.generator if self.random_crop else torch.Generator().manual_seed(zlib.crc32(ids.numpy().tobytes()))
        )
        if self.infill_share < 1.0 and float(torch.rand(1, generator=generator)) >= self.infill_share:
            return None

        def draw(n: int) -> int:
            return int(torch.randint(0, n, (1,), generator=generator))

        made = infill_row(self.layout, ids, self.starts_bar, self.max_seq_len, draw)
        return None if made is None else torch.from_numpy(made[0].astype(np.int64))

    def labels(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Labels of rows already masked for padding (in place): nothing predicts the composer or an infill marker."""
        labels = ignore_composer_label(input_ids)
        if self.infill_share > 0.0:
            labels.masked_fill_((labels == self.layout.gap) | (labels == self.layout.fill), IGNORED_LABEL)
        return labels

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        seqs = []
        for row in rows:
            ids = torch.as_tensor(row["input_ids"], dtype=torch.long)
            infilled = self.infill(ids)
            seqs.append(self.crop(ids) if infilled is None else infilled)
        if self.flatten is not None:
            drop = self._dropped(len(seqs))
            packed = []
            for s, dropped in zip(seqs, drop):
                s = s.clone()
                if dropped:
                    set_composer(s, self.none_id)
                packed.append({"input_ids": s, "labels": self.labels(s.clone())})
            return self.flatten(packed)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = s
            attention_mask[i, : len(s)] = 1
        drop = self._dropped(len(seqs))
        set_composer(input_ids, self.none_id, rows=drop)
        labels = self.labels(input_ids.masked_fill(attention_mask == 0, IGNORED_LABEL))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ComposerBalancedSampler(torch.utils.data.Sampler):
    """Each epoch, len(rows) row indices drawn with replacement, every composer equally likely (a row
    weighs 1 / its composer's rows), then grouped by length as the Trainer's LengthGroupedSampler
    does: mega-batches of 50 batches, each sorted longest first, so batches stay nearly unpadded.
    Seeded by `seed` and the epoch (`set_epoch`, which the Trainer and accelerate call)."""

    MEGA_BATCHES = 50  # LengthGroupedSampler's mega-batch, in batches

    def __init__(self, composers: list[int], lengths: list[int], batch_size: int, seed: int):
        counts = torch.bincount(torch.tensor(composers))
        self.weights = 1.0 / counts[torch.tensor(composers)].double()
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, len(self.lengths), replacement=True, generator=generator).tolist()
        mega = self.batch_size * self.MEGA_BATCHES
        for start in range(0, len(drawn), mega):
            yield from sorted(drawn[start : start + mega], key=lambda i: -self.lengths[i])


class MidiTrainer(Trainer):
    """The HF Trainer, with eval perplexity in every evaluation log, the padding it trains on, and a
    validation that shows whether the model uses the composer token.

    Beside the Trainer's `train_tokens_per_second` (every input position, padding included, since
    the start of this session; `include_num_input_tokens_seen`), each training log holds
    `train_real_tokens_per_second` (the same, real tokens only, over the same time) and
    `train_padding_share` (the share of padding positions in the batches since the previous log).
    Both are summed over all processes. The final log holds the session's padding share.

    With a `MidiCollator` as `data_collator`, validation batches come from its `for_evaluation()` twin
    (no composer dropout, no random crop): `eval_loss` is the conditional loss, the same twice for
    the same weights, and it alone picks the best checkpoint and drives early stopping. With
    `unconditional_eval`, every evaluation also scores the same rows with COMPOSER_NONE in place of
    the composer token (`eval_uncond_loss`, `eval_uncond_runtime`) and logs their difference,
    `eval_composer_information` = uncond loss - cond loss: the nats per token that knowing the
    composer saves the model on validation (above 0: it uses the token). That doubles evaluation
    time. Both losses are the Trainer's own mean (per-batch token means, averaged over rows), over the
    same batches and the same predicted positions, so their difference compares like with like. Under
    DDP the Trainer gathers both from every process.
    """

    def __init__(self, *args, unconditional_eval: bool = True, balance_composers: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._balance_composers = balance_composers  # a composer index per training row: ComposerBalancedSampler
        # [real tokens, input positions] this process fed to training steps: this session, and at the last log
        self._seen = torch.zeros(2, dtype=torch.int64, device=self.args.device)
        self._seen_at_log = torch.zeros(2, dtype=torch.int64)
        self._eval_collators = None
        if isinstance(self.data_collator, MidiCollator):
            self._eval_collators = {"cond": self.data_collator.for_evaluation()}
            if unconditional_eval:
                self._eval_collators["uncond"] = self.data_collator.for_evaluation(unconditional=True)
        self._eval_pass = "cond"
        self._eval_loaders_by_pass: dict[str, dict] = {}
        self._uncond_metrics: dict[str, dict] = {}  # metric prefix -> the unconditional pass's figures, until logged

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # warmup_stable_decay needs its decay length in steps; unless given, the last WSD_DECAY_SHARE of this run
        # (lent to the Trainer for this call only, so a later train() with another length derives its own)
        given = self.args.lr_scheduler_kwargs
        if self.args.lr_scheduler_type != "warmup_stable_decay" or "num_decay_steps" in (given or {}):
            return super().create_scheduler(num_training_steps, optimizer)
        self.args.lr_scheduler_kwargs = {
            **(given or {}),
            "num_decay_steps": max(1, round(WSD_DECAY_SHARE * num_training_steps)),
        }
        try:
            return super().create_scheduler(num_training_steps, optimizer)
        finally:
            self.args.lr_scheduler_kwargs = given

    def _get_train_sampler(self, train_dataset=None):
        if self._balance_composers is None:
            return super()._get_train_sampler(train_dataset)
        dataset = (
            self.train_dataset if train_dataset is None else train_dataset
        )  # the Trainer passes a column-pruned copy
        if len(dataset) != len(self._balance_composers):
            raise ValueError(
                f"balance_composers holds {len(self._balance_composers)} composers for {len(dataset)} training rows"
            )
        lengths = pc.list_value_length(
            dataset.with_format("arrow")[:]["input_ids"]
        ).to_pylist()  # [:] honours a select()
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return ComposerBalancedSampler(self._balance_composers, lengths, batch, self.args.seed)

    def get_eval_dataloader(self, eval_dataset=None):
        if self._eval_collators is None:
            return super().get_eval_dataloader(eval_dataset)
        # The Trainer builds eval loaders from self.data_collator and, with persistent workers, keeps one
        # per dataset name: each pass gets its own collator and its own cache of loaders.
        train_collator, self.data_collator = self.data_collator, self._eval_collators[self._eval_pass]
        self._eval_dataloaders = self._eval_loaders_by_pass.setdefault(self._eval_pass, {})
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        several = isinstance(eval_dataset if eval_dataset is not None else self.eval_dataset, dict)
        if several or self._eval_collators is None or "uncond" not in self._eval_collators:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # a dict comes back here per dataset
        prefix = f"{metric_key_prefix}_uncond"
        start = time.time()
        self._eval_pass = "uncond"
        try:
            output = self.evaluation_loop(
                self.get_eval_dataloader(eval_dataset),
                description="Evaluation with COMPOSER_NONE",
                prediction_loss_only=True,
                ignore_keys=ignore_keys,
                metric_key_prefix=prefix,
            )
        finally:
            self._eval_pass = "cond"
        for callback in self.callback_handler.callbacks:  # its bar ends at on_evaluate, which this pass does not call
            if isinstance(callback, ProgressCallback) and callback.prediction_bar is not None:
                callback.prediction_bar.close()
                callback.prediction_bar = None
        # The conditional pass logs its metrics and hands them to the callbacks (samples, early
        # stopping) once: these join that one record in log(), and so its return value.
        self._uncond_metrics[metric_key_prefix] = {
            f"{prefix}_loss": output.metrics[f"{prefix}_loss"],
            f"{prefix}_runtime": round(time.time() - start, 4),
        }
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def training_step(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        # a padding-free batch (DataCollatorWithFlattening) has no attention mask: every position is real
        real = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
        self._seen += torch.stack(
            [torch.as_tensor(real, device=self._seen.device), torch.tensor(ids.numel(), device=self._seen.device)]
        )
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict, start_time: float | None = None, *args, **kwargs) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        for prefix in [p for p in self._uncond_metrics if f"{p}_loss" in logs]:
            uncond = self._uncond_metrics.pop(prefix)
            logs.update(uncond)
            logs[f"{prefix}_composer_information"] = uncond[f"{prefix}_uncond_loss"] - logs[f"{prefix}_loss"]
        if "loss" in logs or "train_loss" in logs:
            # every process logs training at the same steps, so this reduction meets on all of them
            seen = self.accelerator.reduce(self._seen.clone(), reduction="sum").cpu()
            interval = seen - self._seen_at_log if "loss" in logs else seen
            if interval[1] > 0:
                logs["train_padding_share"] = round(1.0 - interval[0].item() / interval[1].item(), 4)
            if start_time is not None and time.time() > start_time:
                logs["train_real_tokens_per_second"] = round(seen[0].item() / (time.time() - start_time), 3)
            self._seen_at_log = seen
        super().log(logs, start_time, *args, **kwargs)


class SampleLoggingCallback(TrainerCallback):
    """At each evaluation: a few samples per composer, written as MIDI and logged to TensorBoard as a
    piano roll and as audio you can play in the browser."""

    def __init__(
        self,
        tokenizer,
        composer_map: ComposerMap,
        samples_per_composer: int,
        max_new_tokens: int,
        soundfont: str | None,
        writer_source,
    ):
        self.tokenizer, self.composer_map = tokenizer, composer_map
        self.samples_per_composer, self.max_new_tokens = samples_per_composer, max_new_tokens
        self.soundfont, self.writer_source = soundfont, writer_source
        self._audio_warned = False

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.samples_per_composer <= 0 or model is None:
            return
        writer = self.writer_source()
        out_dir = Path(args.output_dir) / "samples" / f"step-{state.global_step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = model.training
        model.eval()
        samples = sample_scores(
            model,
            self.tokenizer,
            self.composer_map,
            self.composer_map.names,
            self.samples_per_composer,
            SamplingSettings(max_new_tokens=self.max_new_tokens, seed=state.global_step),
        )
        model.train(was_training)
        for i, (composer, score) in enumerate(samples):
            stem = sample_stem(
                composer, i % self.samples_per_composer
            )  # the name as generate.py writes it: no `/` from `AC/DC`
            tag = f"samples/{stem}"
            score.dump_midi(out_dir / f"{stem}.mid")
            if writer is None:
                continue
            writer.add_image(
                f"{tag}/piano_roll",
                piano_roll_array(score, title=f"{composer} · step {state.global_step}"),
                state.global_step,
                dataformats="HWC",
            )
            try:
                audio, rate = render_audio(score, soundfont=self.soundfont), 22050
                writer.add_audio(
                    f"{tag}/audio", torch.from_numpy(audio).unsqueeze(0), state.global_step, sample_rate=rate
                )
            except AudioUnavailable as err:
                if not self._audio_warned:
                    print(f"no audio in TensorBoard: {err}")
                    self._audio_warned = True
        if writer is not None:
            writer.flush()


def evaluation_samples(trainer: Trainer, samples_per_composer: int) -> int:
    """The samples per composer that evaluations may log, after one line on what FSDP does here.

    Under FSDP, sample logging is off: it runs generate() on rank 0 alone, which a model sharded over
    the processes cannot serve. And FSDP asked for on a machine without GPUs is not FSDP: accelerate
    keeps FSDP for accelerators (GPU, XPU, NPU, ...) and on CPU builds plain DDP, dropping the FSDP
    settings without a word.
    """
    requested = bool(trainer.args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if requested and not trainer.is_fsdp_enabled and trainer.is_world_process_zero():
        print(
            f"FSDP was asked for, but accelerate runs it on GPUs and other accelerators only: this run is "
            f"{trainer.accelerator.distributed_type.value} over {trainer.args.world_size} process(es), each holding the whole model"
        )
    if trainer.is_fsdp_enabled and samples_per_composer > 0:
        if trainer.is_world_process_zero():
            print(
                "sample logging at evaluation is off under FSDP (the model is sharded over the processes); generate from the saved folder"
            )
        return 0
    return samples_per_composer


def save_full_model(trainer: Trainer) -> None:
    """trainer.save_model(), with one whole model.safetensors under FSDP too.

    configs/fsdp.yaml checkpoints with SHARDED_STATE_DICT (each process writes its shard: fast, and
    what resuming reads), and with that the Trainer's save_model writes no weights at all. Switching
    the plugin to FULL_STATE_DICT for the final save gathers the weights, as accelerate intends
    ("trains with sharded, but final save is with full"). Every process must call this.
    """
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model()


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
