"""The evaluation as a list of steps: `evaluate(args)` loads the model and the data once (`Evaluation`),
then each step returns one section of the report (see the package docstring). Writes nothing."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from midilm.core.errors import InputError
from midilm.core.modeling import TASKS_KEY, context_length, load_midilm_dir, model_tasks, sampling_defaults
from midilm.core.rows import body_room, with_composer
from midilm.core.tokenizer import bar_start_table, load_tokenizer
from midilm.data.held_out import source_root
from midilm.evaluation.accompaniment import accompaniment_pieces, evaluate_accompaniment
from midilm.evaluation.adherence import UNCONDITIONAL, composer_adherence, sweep_key
from midilm.evaluation.data import TrainingScan, join_pieces, load_eval_dataset, scan_training, token_rows
from midilm.evaluation.infilling import evaluate_infill
from midilm.evaluation.likelihood import likelihood_summary, model_nll, unigram_from_counts, unigram_nll
from midilm.evaluation.long_pieces import drift
from midilm.evaluation.samples import (
    Sampler,
    measure,
    median_notes,
    memorization,
    passage_runs,
    read_samples,
    real_passages,
    set_comparison,
    sweep_row,
)
from midilm.metrics.piece import median_bars
from midilm.sampling.generation import composer_names, decode_ids, load_model
from midilm.sampling.grammar import count_syntax_errors
from midilm.sampling.guard import bounds_from_config
from midilm.sampling.settings import SamplingSettings
from midilm.training.finetune import new_composers_of, with_base_data

HELD_OUT_SPLITS = ("validation", "test")


@dataclass
class EvaluateArguments:
    model_dir: str = field(default="model_output", metadata={"help": "Model folder written by train.py."})
    dataset_dir: str = field(
        default="data", metadata={"help": "DatasetDict written by prepare_dataset.py (the model's own)."}
    )
    base_dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "For a model fine-tuned from another (train.py --init_from): the base model's dataset, whose "
                "pieces of the base's composers join --dataset_dir's, so that every composer, old and new, is "
                "judged against real pieces (the classifier is trained on both)."
            )
        },
    )
    output_dir: str = field(
        default="eval_report", metadata={"help": "Where report.json, report.md and the evaluated samples go."}
    )
    samples_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "Evaluate the <composer>_<i>.mid files generate.py wrote here instead of sampling anew (the "
                "sweep and the random baseline are always sampled)."
            )
        },
    )
    num_samples_per_composer: int = field(
        default=8, metadata={"help": "Samples per composer for each sample set and guidance scale."}
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Tokens per sample (capped to the model's context)."})
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": (
                "Guidance scale of the main sample sets (default: the scale this evaluation chooses with "
                "--write_default_guidance, else the model's midilm_guidance_scale in config.json)."
            )
        },
    )
    adherence_scales: str = field(
        default="1,1.5,2,3,5",
        metadata={
            "help": (
                "Comma-separated guidance scales of the sweep: at each, every composer is sampled with the "
                "musical guard on and off, and judged by the composer classifier, the music metrics, degenerate "
                "onsets and memorization; unconditional samples give the base rate. Empty = no sweep, no "
                "adherence section."
            )
        },
    )
    adherence_samples_per_composer: int = field(
        default=16,
        metadata={
            "help": (
                "Samples per composer at each sweep scale (and guard setting); as many unconditional samples as "
                "one scale holds."
            )
        },
    )
    guidance_scales: str | None = field(
        default=None, metadata={"help": "The former name of --adherence_scales; when given, it replaces them."}
    )
    write_default_guidance: bool = field(
        default=False,
        metadata={
            "help": (
                "Write the guidance scale the sweep chooses (the highest composer adherence whose degenerate "
                "samples, guard on, stay at or below the real pieces' rate) into --model_dir's config.json "
                "(midilm_guidance_scale), so generate.py uses it by default."
            )
        },
    )
    sample_batch_size: int = field(
        default=64,
        metadata={
            "help": (
                "Samples per generate() call (twice as many rows under guidance): bounds the memory of the KV cache."
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "Seeds the samples and the random-weight model."})
    split: str = field(
        default="validation",
        metadata={"help": "Held-out split of the reference pieces and the likelihood: validation or test."},
    )
    composers: str | None = field(
        default=None, metadata={"help": "Comma-separated composers to evaluate (default: all of the model's)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass of the likelihood evaluation."})
    accompaniment_pieces: int = field(
        default=2,
        metadata={
            "help": (
                "Held-out pieces per composer (the shortest) whose melody the trained and the random-weight "
                "model accompany, for melody adherence and harmonic fit beside the real piece's; 0 = none. Only "
                "when the dataset holds accompaniment rows (prepare_dataset.py --tasks accompaniment)."
            )
        },
    )
    long_tokens: int = field(
        default=0,
        metadata={
            "help": (
                "Also draw --long_samples_per_composer pieces of exactly this many new tokens per composer (EOS "
                "held off; written in windows beyond the context, at the main guidance scale) and report their "
                "drift: the music-metric gap of each piece's last window against its first, beside the gap between "
                "two sets of the composer's real pieces. At least twice the context less BOS and the composer, so "
                "that the two windows do not overlap (4x the context is issue 23's figure); 0 = off."
            )
        },
    )
    long_samples_per_composer: int = field(
        default=4, metadata={"help": "Long pieces per composer with --long_tokens (one batched windowed run)."}
    )
    infill_pieces: int = field(
        default=2,
        metadata={
            "help": (
                "For a model trained with the infill task: held-out pieces per composer (the shortest) whose spans "
                "are scored (NLL given the bars before and after, against the bars before only) and rewritten (metric "
                "gap to the real spans, seams, notes outside the span, syntax); 0 = off."
            )
        },
    )
    infill_spans_per_piece: int = field(
        default=2, metadata={"help": "Spans per piece for the infilling figures (seeded by --seed)."}
    )
    infill_max_bars: int = field(
        default=4, metadata={"help": "Longest span for the infilling figures, in bars (each span: 1 to this many)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output_dir."})

    def __post_init__(self):
        if self.split not in HELD_OUT_SPLITS:
            raise InputError(f"--split {self.split!r}: choose a held-out split ({' or '.join(HELD_OUT_SPLITS)})")
        for name in (
            "num_samples_per_composer",
            "max_new_tokens",
            "batch_size",
            "adherence_samples_per_composer",
            "sample_batch_size",
            "long_samples_per_composer",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} {getattr(self, name)}: must be at least 1")
        for name in ("infill_pieces", "infill_spans_per_piece", "infill_max_bars"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name} {getattr(self, name)}: must be 0 (off) or more")
        if self.long_tokens < 0:
            raise InputError(f"--long_tokens {self.long_tokens}: must be 0 (off) or a length in tokens")
        if self.accompaniment_pieces < 0:
            raise InputError(f"--accompaniment_pieces {self.accompaniment_pieces}: must be 0 or more")
        flag, text = (
            ("--guidance_scales", self.guidance_scales)
            if self.guidance_scales is not None
            else ("--adherence_scales", self.adherence_scales)
        )
        try:
            # sorted and unique: the table reads top to bottom, and one scale is sampled once
            self.scales = sorted({float(s) for s in str(text).split(",") if s.strip()})
        except ValueError as err:
            raise InputError(f"{flag} {text!r}: expected numbers such as 1,1.5,2,3,5") from err
        if any(s < 0 for s in self.scales):
            raise InputError("guidance scales must be >= 0 (1 = no guidance)")
        SamplingSettings(guidance_scale=self.guidance_scale)  # its checks


def check_output_dir(args: EvaluateArguments) -> Path:
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not args.overwrite:
        raise InputError(
            f"--output_dir {output_dir} already exists; pass --overwrite to replace it, or choose another folder"
        )
    return output_dir


def evaluate(args: EvaluateArguments) -> dict:
    """Run the whole evaluation and return the report (see the package docstring); writes nothing."""
    started = time.perf_counter()
    run = load_evaluation(args)
    likelihood = likelihood_section(run)
    adherence = adherence_section(run)
    comparison = sample_sets_section(run, adherence)
    accompaniment = accompaniment_section(run)
    long_pieces = long_pieces_section(run)
    infilling = infilling_section(run)
    run.timings["total_s"] = time.perf_counter() - started
    return {
        "settings": settings_section(run),
        "data": data_section(run),
        "likelihood": likelihood,
        "pieces": {
            **run.measured,
            "sweep": {f"{s:g}": run.sweep_sets[s] for s in args.scales if sweep_key(s) in run.drawn},
        },
        "comparison": comparison,
        "adherence": adherence,
        "cfg_sweep": sweep_section(run),
        **accompaniment,
        "long_pieces": long_pieces,
        **infilling,
        "memorization": {k: memorization(v, run.composers) for k, v in run.measured.items()},
        "memorization_real_passages": {
            "notes": run.window_notes,
            "runs": memorization(run.real_passage_runs(), run.composers),
        },
        "memorization_by_scale": {f"{s:g}": memorization(run.sweep_sets[s], run.composers) for s in args.scales},
        "checks": checks_section(run),
        "timings": run.timings,
        "_midi": dict(run.drawn),  # dropped before JSON; written as MIDI beside the report
    }


@dataclass
class Evaluation:
    """What the steps of `evaluate` share: the model folder, the data, and what earlier steps drew and measured."""

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
    timings: dict = field(default_factory=dict)
    drawn: dict[str, list[dict]] = field(default_factory=dict)  # sample sets by name
    measured: dict[str, list[dict]] = field(default_factory=dict)  # their metrics
    sweep_sets: dict[float, list[dict]] = field(default_factory=dict)  # metrics of the guarded sweep set per scale
    main_scale: float | None = None
    trained_scale: float | None = None
    window_bars: int | None = None  # the length of the real passages samples are compared with: the sweep's median
    passages: dict[int, list[dict]] = field(default_factory=dict)  # real_passages by length in bars
    window_notes: int | None = None  # the length of the real passages memorization is measured on: the sweep's median
    real_runs: list[dict] | None = None  # their shared runs (`real_passage_runs`)

    def real_passages(self, n_bars: int) -> list[dict]:
        """The real pieces as passages of `n_bars` bars, measured once per length."""
        if n_bars not in self.passages:
            self.passages[n_bars] = real_passages(self.real, n_bars)
        return self.passages[n_bars]

    def real_passage_runs(self) -> list[dict]:
        """The real pieces' shared interval runs as passages of `window_notes` notes, measured once."""
        if self.real_runs is None:
            self.real_runs = passage_runs(self.real, self.tokenizer, self.training.index, self.window_notes)
        return self.real_runs

    @contextmanager
    def timed(self, name: str):
        tick = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - tick


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


def load_evaluation(args: EvaluateArguments) -> Evaluation:
    """Load the model folder and the dataset and check that they belong together; scan the training
    split once (row checks, token counts, the memorization index); decode the held-out pieces."""
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
    timings = {}
    tick = time.perf_counter()
    training = scan_training(dataset["train"], tokenizer, composer_map, f"--dataset_dir {args.dataset_dir} (train)")
    timings["training_scan_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    real = [
        {
            **p,
            "composer": composer_map.names[p["composer"]],
            "name": p["source"],
            "score": decode_ids(tokenizer, p["ids"]),
        }
        for p in tqdm(held_pieces, desc=f"decoding {args.split} pieces", unit="piece")
    ]
    timings["decode_s"] = time.perf_counter() - tick
    torch.manual_seed(args.seed)
    random_model = AutoModelForCausalLM.from_config(config).to(device).eval()
    # generate() fills unset flags from the model's generation_config; one derived from config.json
    # carries training's use_cache=False (no KV cache: quadratic, 60x slower at 512 tokens).
    random_model.generation_config = model.generation_config
    sampler = Sampler(tokenizer, composer_map, config, defaults, max_new_tokens, device, args.sample_batch_size)
    return Evaluation(
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
        timings,
    )


def likelihood_section(run: Evaluation) -> dict:
    """Likelihood of the held-out rows: the model, the same architecture with random weights, a unigram
    model, and the model again with COMPOSER_NONE in the composer's place (what the composer token is worth)."""
    with run.timed("likelihood_s"):
        args, config = run.args, run.config
        rows = [r["input_ids"] for r in run.held_rows]
        notes = sum(r["n_notes"] for r in run.held_rows)
        trained_nll, tokens = model_nll(
            run.model, rows, args.batch_size, config.pad_token_id, desc="likelihood (trained)"
        )
        random_nll, _ = model_nll(
            run.random_model, rows, args.batch_size, config.pad_token_id, desc="likelihood (random weights)"
        )
        unconditional_rows = [with_composer(ids, run.composer_map.none_id) for ids in rows]
        uncond_nll, _ = model_nll(
            run.model, unconditional_rows, args.batch_size, config.pad_token_id, desc="likelihood (unconditional)"
        )
        counts = np.zeros(config.vocab_size, dtype=np.int64)  # smoothed over the model's vocabulary, as before
        counts[: min(len(counts), len(run.training.token_counts))] = run.training.token_counts[: len(counts)]
        unigram_total, _ = unigram_nll(unigram_from_counts(counts), rows)
        likelihood = {
            "split": args.split,
            "rows": len(rows),
            "scored_tokens": tokens,
            "notes": notes,
            "trained": likelihood_summary(trained_nll, tokens, notes),
            "random_weights": likelihood_summary(random_nll, tokens, notes),
            "unigram": likelihood_summary(unigram_total, tokens, notes),
            "trained_unconditional": likelihood_summary(uncond_nll, tokens, notes),
            "composer_information_nats_per_token": (uncond_nll - trained_nll) / tokens if tokens else None,
            "windowed_rows": sum(len(r) > context_length(config) for r in rows),
        }
        likelihood["perplexity_ratio_trained_to_unigram"] = (
            likelihood["trained"]["perplexity"] / likelihood["unigram"]["perplexity"]
        )
    return likelihood


def adherence_section(run: Evaluation) -> dict | None:
    """The guidance sweep: every composer at each scale with the musical guard on and off (the same
    seeds, so an unguarded sample is its guarded twin until the guard first steps in) and unconditional
    samples for the classifier's base rate; the real pieces and the guarded sets measured; composer
    adherence at each scale and the guidance default it chooses (None without --adherence_scales)."""
    args = run.args
    with run.timed("sweep_sampling_s"):
        sweep_names = [c for c in run.composers for _ in range(args.adherence_samples_per_composer)]
        jobs = [(UNCONDITIONAL, ["none"] * len(sweep_names), 1.0, True)] if args.scales else []
        jobs += [(sweep_key(s, guard), sweep_names, s, guard) for s in args.scales for guard in (True, False)]
        for name, names, scale, guard in tqdm(jobs, desc="sampling the guidance sweep", unit="set"):
            run.drawn[name] = run.sampler.sample(run.model, names, scale, args.seed, guard)
    with run.timed("metrics_s"):
        run.measured["real"] = measure(run.real, run.tokenizer, run.training.index, "measuring real pieces")
        for s in args.scales:
            run.sweep_sets[s] = measure(
                run.drawn[sweep_key(s)], run.tokenizer, run.training.index, f"measuring s={s:g}"
            )
    if not args.scales:
        return None
    guided = [p for s in args.scales for p in run.sweep_sets[s]]
    run.window_bars, run.window_notes = median_bars(guided), median_notes(guided)
    with run.timed("adherence_s"):
        # A composer with no original training piece borrows the largest onset of all.
        onset_max = run.training.max_notes_per_onset
        thresholds = {c: int(onset_max[run.composer_map.names.index(c)]) or int(onset_max.max()) for c in run.composers}
        adherence = composer_adherence(
            args,
            run.tokenizer,
            run.composers,
            run.real,
            run.measured["real"],
            run.drawn,
            run.sweep_sets,
            thresholds,
            bounds_from_config(run.config),
            run.window_bars,
            run.real_passage_runs(),
            dataset=run.dataset if args.base_dataset_dir else None,
        )
        adherence["choice"]["written_to"] = None
        if args.write_default_guidance and adherence["choice"]["scale"] is not None:
            adherence["choice"]["written_to"] = str(
                Path(args.model_dir) / "config.json"
            )  # once the report is written (evaluate_samples.py)
    return adherence


def sample_sets_section(run: Evaluation, adherence: dict | None) -> dict:
    """The main sample sets, compared with the real pieces: the trained model at the main scale
    (generate.py's files, the sweep's set at that scale, or sampled now) and the same architecture with random
    weights."""
    args, tokenizer, index = run.args, run.tokenizer, run.training.index
    chosen = adherence["choice"]["scale"] if adherence else None
    # --guidance_scale, else the default this evaluation is about to write, else the model's
    given = (
        args.guidance_scale if args.guidance_scale is not None else (chosen if args.write_default_guidance else None)
    )
    run.main_scale = SamplingSettings(guidance_scale=given).resolve(run.defaults).guidance_scale
    with run.timed("sampling_s"):
        per_composer = [c for c in run.composers for _ in range(args.num_samples_per_composer)]
        if run.samples_from_dir is not None:
            run.drawn["trained"] = [s for c in run.composers for s in run.samples_from_dir[0][c]]
            recorded = sorted(set(run.samples_from_dir[1]))
            run.trained_scale = recorded[0] if len(recorded) == 1 else None
            run.measured["trained"] = measure(run.drawn["trained"], tokenizer, index, "measuring trained samples")
        elif run.main_scale in run.sweep_sets:
            run.drawn["trained"], run.trained_scale = run.drawn.pop(sweep_key(run.main_scale)), run.main_scale
            run.measured["trained"] = run.sweep_sets[run.main_scale]
        else:
            run.drawn["trained"], run.trained_scale = (
                run.sampler.sample(run.model, per_composer, run.main_scale, args.seed),
                run.main_scale,
            )
            run.measured["trained"] = measure(run.drawn["trained"], tokenizer, index, "measuring trained samples")
        run.drawn["random"] = run.sampler.sample(run.random_model, per_composer, run.main_scale, args.seed)
        run.measured["random"] = measure(run.drawn["random"], tokenizer, index, "measuring random-weight samples")
    if max(p["syntax_error_rate"] for p in run.measured["real"]) > 0:
        print(
            f"warning: real {args.split} pieces read back with syntax errors; was the dataset built with this "
            "model's tokenizer?"
        )
    # both sets against the same real passages: as long as the sweep's samples (one reference in the whole report), else
    # the trained samples
    run.window_bars = run.window_bars or median_bars(run.measured["trained"])
    run.window_notes = run.window_notes or median_notes(run.measured["trained"])
    comparison = {
        k: set_comparison(run.measured[k], run.real_passages(run.window_bars), run.composers)
        for k in ("trained", "random")
    }
    return {**comparison, "real_window_bars": run.window_bars}


def accompaniment_section(run: Evaluation) -> dict:
    """The trained and the random-weight model write the music around real held-out melodies, when the
    model was trained on accompaniment; else why not (`accompaniment_skipped`)."""
    args, config = run.args, run.config
    skipped = None
    if args.accompaniment_pieces == 0:
        skipped = "--accompaniment_pieces 0"
    elif "accompaniment" not in run.dataset["train"].unique("task"):
        skipped = (
            "the dataset holds no accompaniment rows (prepare_dataset.py --tasks continuation,accompaniment adds them)"
        )
    elif "accompaniment" not in model_tasks(config):
        skipped = (
            f"the model was trained on {', '.join(model_tasks(config))} rows only (config.json's {TASKS_KEY}), "
            "never on accompaniment"
        )
    if skipped:
        return {"accompaniment": None, "accompaniment_skipped": skipped}
    with run.timed("accompaniment_s"):
        section, accompanied = evaluate_accompaniment(
            {"trained": run.model, "random": run.random_model},
            run.tokenizer,
            run.composer_map,
            accompaniment_pieces(run.real, run.composers, args.accompaniment_pieces),
            source_root(args.dataset_dir),
            run.defaults,
            args.seed,
        )
    run.drawn.update(accompanied)
    return {"accompaniment": section, "accompaniment_skipped": None}


def long_pieces_section(run: Evaluation) -> dict | None:
    """With --long_tokens: long pieces of every composer at the main guidance scale, in one batched
    windowed run, and their drift against the real-pieces reference (`midilm.evaluation.long_pieces`)."""
    args = run.args
    if not args.long_tokens:
        return None
    names = [c for c in run.composers for _ in range(args.long_samples_per_composer)]
    with run.timed("long_pieces_s"):
        tick = time.perf_counter()
        run.drawn["long"] = run.sampler.sample(
            run.model, names, run.main_scale, args.seed, long_tokens=args.long_tokens
        )
        seconds = time.perf_counter() - tick
        section = drift(
            run.drawn["long"],
            run.real,
            run.composers,
            run.tokenizer,
            np.asarray(bar_start_table(run.tokenizer)),
            body_room(context_length(run.config)),
            run.config.eos_token_id,
            args.seed,
        )
    syntax = [count_syntax_errors(run.tokenizer, s["ids"]) for s in run.drawn["long"]]
    return {
        "long_tokens": args.long_tokens,
        "samples_per_composer": args.long_samples_per_composer,
        "guidance_scale": run.main_scale,
        "window_tokens": body_room(context_length(run.config)),
        "windows": max(s["windows"] for s in run.drawn["long"]),
        "syntax_error_rate_max": max(syntax),
        "sampling_s": seconds,
        **section,
    }


def infilling_section(run: Evaluation) -> dict:
    """For a model trained with the infill task: held-out spans scored and rewritten (`midilm.evaluation.infilling`);
    else why not (`infilling_skipped`)."""
    args = run.args
    skipped = None
    if 0 in (args.infill_pieces, args.infill_spans_per_piece, args.infill_max_bars):
        skipped = "--infill_pieces, --infill_spans_per_piece or --infill_max_bars is 0"
    elif "infill" not in model_tasks(run.config):
        skipped = (
            f"the model was trained on {', '.join(model_tasks(run.config))} rows only (config.json's {TASKS_KEY}), "
            "never on infill"
        )
    if skipped:
        return {"infilling": None, "infilling_skipped": skipped}
    with run.timed("infilling_s"):
        section, rewritten = evaluate_infill(
            run.model,
            run.tokenizer,
            run.composer_map,
            run.real,
            run.composers,
            run.defaults,
            pieces_per_composer=args.infill_pieces,
            spans_per_piece=args.infill_spans_per_piece,
            max_span_bars=args.infill_max_bars,
            seed=args.seed,
        )
    run.drawn.update(rewritten)
    return {"infilling": section, "infilling_skipped": None}


def sweep_section(run: Evaluation) -> dict:
    """Histogram distances of each guarded sweep set, per composer (the report's secondary table)."""
    real = run.real_passages(run.window_bars)
    return {
        f"{s:g}": {c: sweep_row(run.sweep_sets[s], real, c, run.composers) for c in run.composers}
        for s in run.args.scales
    }


def settings_section(run: Evaluation) -> dict:
    """The arguments, and what they resolved to."""
    settings = asdict(run.args)
    settings.update(
        {
            "main_guidance_scale": run.main_scale,
            "trained_samples_guidance_scale": run.trained_scale,
            "trained_samples_from": run.args.samples_dir or "sampled here",
            "max_new_tokens_used": run.max_new_tokens,
            "sampling": {k: run.defaults[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")},
            "grammar": True,
            "guard": bool(bounds_from_config(run.config)),
            "device": run.device,
            "composers_evaluated": run.composers,
            "new_composers": [c for c in new_composers_of(run.config) if c in run.composers],
        }
    )
    return settings


def data_section(run: Evaluation) -> dict:
    names, training = run.composer_map.names, run.training
    return {
        "held_out_pieces": {c: sum(p["composer"] == c for p in run.real) for c in run.composers},
        "training_pieces": {c: int(training.pieces[names.index(c)]) for c in run.composers},
        "training_rows": training.rows,
        "memorization_index": {
            "pieces": training.index.pieces,
            "intervals": training.index.intervals,
            "bytes": training.index.nbytes,
        },
    }


def checks_section(run: Evaluation) -> dict:
    real_errors = [p["syntax_error_rate"] for p in run.measured["real"]]
    return {
        "real_pieces_syntax_error_rate_max": max(real_errors),
        "real_pieces_have_no_syntax_errors": max(real_errors) == 0,
        "samples_syntax_error_rate_max": max(
            [p["syntax_error_rate"] for k in ("trained", "random") for p in run.measured[k]] or [0.0]
        ),
    }
