"""The training data: the prepared dataset read and checked against the tokenizer, the guard's bounds learnt
from it, the tasks and row length it was prepared with, the context training uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from midilm.core.errors import InputError
from midilm.core.rows import (
    TASKS,
    has_header,
)
from midilm.core.tokenizer import ComposerMap
from midilm.data.dataset import load_prepared
from midilm.data.prepare import CONFIG_FILE as PREPARE_CONFIG_FILE
from midilm.data.prepare import REPORT_FILE as PREPARE_REPORT_FILE
from midilm.sampling.guard import learn_bounds
from midilm.training.arguments import DataArguments


@dataclass
class TrainingData:
    """The train and validation rows (input_ids only), and what the dataset says about them."""

    splits: DatasetDict
    train_rows: Dataset  # the whole training split, every column: what the guard's bounds are learnt from
    tasks: list[str]  # tasks of the training rows, in midilm.data.dataset.TASKS order
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
    """The musical guard's bounds (midilm.sampling.guard.learn_bounds) from the whole training split, whatever
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
