"""What the evaluation loads once and every step reads (`Context`, `load_context`), the real passages measured once
per length (`RealPassages`), and `timed`, which records a stage's seconds."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import DatasetDict
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from midilm.core.errors import InputError
from midilm.core.modeling import context_length, load_midilm_dir, sampling_defaults
from midilm.core.rows import body_room
from midilm.core.tokenizer import load_tokenizer
from midilm.evaluation.arguments import EvaluateArguments
from midilm.evaluation.data import TrainingScan, join_pieces, load_eval_dataset, scan_training, token_rows
from midilm.evaluation.memorization import MemorizationIndex
from midilm.evaluation.samples import Sampler, passage_runs, read_samples, real_passages
from midilm.sampling.generation import composer_names, decode_ids, load_model
from midilm.training.finetune import with_base_data


@dataclass(frozen=True)
class Context:
    """The model folder and the data, loaded once: what every step of `evaluate` reads and none writes."""

    args: EvaluateArguments
    config: object
    tokenizer: object
    composer_map: object
    dataset: DatasetDict
    composers: list[str]  # those evaluated
    held_rows: list[dict]  # the held-out split's continuation rows
    real: list[dict]  # its pieces, decoded: the reference of every music metric
    training: TrainingScan
    defaults: dict  # the model folder's sampling defaults
    device: str
    model: object
    random_model: object  # the same architecture with random weights
    sampler: Sampler
    max_new_tokens: int
    samples_from_dir: tuple | None  # generate.py's files, when --samples_dir names them


@dataclass
class RealPassages:
    """The real pieces cut into passages, measured once per length: by bars for the music metrics, by notes for
    memorization (several steps compare with the same passages)."""

    real: list[dict]
    tokenizer: object
    index: MemorizationIndex  # the training split's
    by_bars: dict[int, list[dict]] = field(default_factory=dict)
    runs_by_notes: dict[int, list[dict]] = field(default_factory=dict)

    def of_bars(self, n_bars: int) -> list[dict]:
        """The real pieces as passages of `n_bars` bars (`samples.real_passages`)."""
        if n_bars not in self.by_bars:
            self.by_bars[n_bars] = real_passages(self.real, n_bars)
        return self.by_bars[n_bars]

    def runs(self, n_notes: int) -> list[dict]:
        """The real pieces' shared interval runs as passages of `n_notes` notes (`samples.passage_runs`)."""
        if n_notes not in self.runs_by_notes:
            self.runs_by_notes[n_notes] = passage_runs(self.real, self.tokenizer, self.index, n_notes)
        return self.runs_by_notes[n_notes]


@contextmanager
def timed(timings: dict, name: str):
    """Record the seconds the block takes as `timings[name]`."""
    tick = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - tick


def evaluated_composers(args: EvaluateArguments, composer_map, held_pieces: list[dict]) -> list[str]:
    """--composers (default: all), less those without held-out pieces when the corpus is small and none was
    asked for."""
    composers = composer_map.names
    if args.composers:
        try:
            composers = [
                composer_map.name_of(composer_map.id_of(c)) for c in composer_names(composer_map, args.composers)
            ]
        except KeyError as err:
            raise InputError(f"--composers: {err.args[0]}") from err
    missing = [c for c in composers if not any(composer_map.names[p["composer"]] == c for p in held_pieces)]
    if missing and not args.composers and len(missing) < len(composers):
        # A small corpus can leave a composer without held-out pieces: evaluate the others, say so.
        print(f"warning: no {args.split} pieces of {', '.join(missing)}; the report leaves them out")
        return [c for c in composers if c not in missing]
    if missing:
        raise InputError(
            f"--dataset_dir {args.dataset_dir}: no {args.split} pieces of {', '.join(missing)}, so nothing to "
            "compare their "
            f"samples with; try --split {'test' if args.split == 'validation' else 'validation'}, or leave them out "
            "with --composers"
        )
    return composers


def load_context(args: EvaluateArguments, timings: dict) -> Context:
    """Load the model folder and the dataset and check that they belong together; scan the training
    split once (row checks, token counts, the memorization index); decode the held-out pieces. Records the
    scan's and the decoding's seconds in `timings`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config, tokenizer, _ = load_midilm_dir(args.model_dir)
    room = body_room(context_length(config))
    if args.long_tokens and args.long_tokens < 2 * room:
        raise InputError(
            f"--long_tokens {args.long_tokens}: must be at least {2 * room}, twice the model's context less BOS and "
            f"the composer, so that a piece's first and last windows do not overlap ({4 * room} is 4x; 0 = off)"
        )
    # composers.json keeps the dataset's ClassLabel order (config.json's composer map is sorted by name).
    _, composer_map = load_tokenizer(args.model_dir)
    dataset = load_eval_dataset(args.dataset_dir, args.split, tokenizer, composer_map)
    if args.base_dataset_dir:
        dataset = with_base_data(dataset, args.base_dataset_dir, composer_map)
    held_rows = token_rows(
        dataset[args.split], tokenizer, composer_map, f"--dataset_dir {args.dataset_dir} ({args.split})"
    )
    pieces = join_pieces(held_rows, config.eos_token_id)
    composers = evaluated_composers(args, composer_map, pieces)
    held_pieces = [p for p in pieces if composer_map.names[p["composer"]] in composers]
    defaults = sampling_defaults(args.model_dir)
    max_new_tokens = min(args.max_new_tokens, body_room(context_length(config)))
    samples_from_dir = read_samples(Path(args.samples_dir), composers, tokenizer) if args.samples_dir else None
    model = load_model(args.model_dir, device)
    with timed(timings, "training_scan_s"):
        flag = f"--dataset_dir {args.dataset_dir} (train)"
        training = scan_training(dataset["train"], tokenizer, composer_map, flag)
    with timed(timings, "decode_s"):
        real = [
            {
                **p,
                "composer": composer_map.names[p["composer"]],
                "name": p["source"],
                "score": decode_ids(tokenizer, p["ids"]),
            }
            for p in tqdm(held_pieces, desc=f"decoding {args.split} pieces", unit="piece")
        ]
    torch.manual_seed(args.seed)
    random_model = AutoModelForCausalLM.from_config(config).to(device).eval()
    # generate() fills unset flags from the model's generation_config; one derived from config.json
    # carries training's use_cache=False (no KV cache: quadratic, 60x slower at 512 tokens).
    random_model.generation_config = model.generation_config
    sampler = Sampler(tokenizer, composer_map, config, defaults, max_new_tokens, device, args.sample_batch_size)
    return Context(
        args,
        config,
        tokenizer,
        composer_map,
        dataset,
        composers,
        held_rows,
        real,
        training,
        defaults,
        device,
        model,
        random_model,
        sampler,
        max_new_tokens,
        samples_from_dir,
    )
