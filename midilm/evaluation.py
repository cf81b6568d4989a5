"""Evaluate a trained model against real held-out pieces: likelihood, music metrics, CFG sweep, copying.

    python evaluate_samples.py --model_dir model_output --dataset_dir data --output_dir eval_report

What it measures (every number is written to report.json, the headline ones to report.md):

- Likelihood on the held-out split: NLL per token, perplexity and NLL per note (the dataset's
  `n_notes` column: per-token loss is not comparable across BPE vocabularies), beside a unigram model
  fitted on the training split (add-one smoothing) and the same architecture with random weights.
- Music metrics (`midilm.metrics.piece_metrics` + miditok's syntax error rate) of the trained
  model's samples, of random-weight samples, and of the real held-out pieces of each composer;
  `compare` of each sample set with the real pieces, per composer and pooled.
- Accompaniment (models trained with `--tasks accompaniment`): melody adherence and harmonic fit of
  the trained and the random-weight model's accompaniments of real held-out melodies, beside the real
  pieces' own.
- A guidance-scale sweep: how far each composer's samples are from that composer's real pieces
  (pitch-class and duration histograms) at each scale.
- Memorization: for every piece, the longest run of successive pitch intervals it shares with one
  training piece at any transposition (`midilm.memorization`), per sample set and guidance scale.

Scale: the training split is never loaded into Python lists nor decoded. One pass over its Arrow
batches (`scan_training`) checks its rows, counts its tokens for the unigram model and its pieces,
and builds the memorization index, the one thing here whose size follows the training split.

Samples are drawn with the same API as generate.py (`build_plan` + `model.generate`: CFG and the
REMI grammar). The random-weight baseline is sampled with the grammar on as well, so its syntax is
valid too: it shows what the grammar alone gives, and the trained model must beat it on the music.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from symusic import Score
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GenerationConfig

from midilm.dataset import load_prepared
from midilm.generation import HEADER_TOKENS, build_plan, composer_names, decode_ids, load_model, sample_stem
from midilm.grammar import count_syntax_errors
from midilm.metrics import (
    HISTOGRAM_METRICS,
    SCALAR_METRICS,
    accompaniment_metrics,
    compare,
    js_divergence,
    piece_metrics,
)
from midilm.memorization import ROW_COLUMNS, MemorizationIndex, PitchReader, table_pitch_rows
from midilm.modeling import context_length, load_midilm_dir
from midilm.modeling import generation_config as default_generation_config
from midilm.outputs import replace_dir, staging_dir
from midilm.sources import InputError
from midilm.tokenizer import load_tokenizer

HELD_OUT_SPLITS = ("validation", "test")
# Both sample sets use the grammar, so the syntax error rate is 0 on both sides and only dilutes the
# distance; it is reported on its own line instead.
DISTANCE_METRICS = tuple(m for m in SCALAR_METRICS if m != "syntax_error_rate")
SETS = {"real": "real held-out", "trained": "trained model", "random": "random weights"}


@dataclass
class EvaluateArguments:
    model_dir: str = field(default="model_output", metadata={"help": "Model folder written by train.py."})
    dataset_dir: str = field(default="data", metadata={"help": "DatasetDict written by prepare_dataset.py (the model's own)."})
    output_dir: str = field(default="eval_report", metadata={"help": "Where report.json, report.md and the evaluated samples go."})
    samples_dir: str | None = field(default=None, metadata={"help": "Evaluate the <composer>_<i>.mid files generate.py wrote here instead of sampling anew (the sweep and the random baseline are always sampled)."})
    num_samples_per_composer: int = field(default=8, metadata={"help": "Samples per composer for each sample set and guidance scale."})
    max_new_tokens: int = field(default=512, metadata={"help": "Tokens per sample (capped to the model's context)."})
    guidance_scale: float | None = field(default=None, metadata={"help": "Guidance scale of the main sample sets (default: the model's generation_config.json)."})
    guidance_scales: str = field(default="1,2,4", metadata={"help": "Comma-separated guidance scales of the CFG sweep (empty = no sweep)."})
    seed: int = field(default=0, metadata={"help": "Seeds the samples and the random-weight model."})
    split: str = field(default="validation", metadata={"help": "Held-out split of the reference pieces and the likelihood: validation or test."})
    composers: str | None = field(default=None, metadata={"help": "Comma-separated composers to evaluate (default: all of the model's)."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass of the likelihood evaluation."})
    accompaniment_pieces: int = field(default=2, metadata={"help": "Held-out pieces per composer (the shortest) whose melody the trained and the random-weight model accompany, for melody adherence and harmonic fit beside the real piece's; 0 = none. Only when the dataset holds accompaniment rows (prepare_dataset.py --tasks accompaniment)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output_dir."})

    def __post_init__(self):
        if self.split not in HELD_OUT_SPLITS:
            raise InputError(f"--split {self.split!r}: choose a held-out split ({' or '.join(HELD_OUT_SPLITS)})")
        if self.num_samples_per_composer < 1:
            raise InputError(f"--num_samples_per_composer {self.num_samples_per_composer}: must be at least 1")
        if self.max_new_tokens < 1:
            raise InputError(f"--max_new_tokens {self.max_new_tokens}: must be at least 1")
        if self.accompaniment_pieces < 0:
            raise InputError(f"--accompaniment_pieces {self.accompaniment_pieces}: must be 0 or more")
        if self.batch_size < 1:
            raise InputError(f"--batch_size {self.batch_size}: must be at least 1")
        try:
            self.scales = [float(s) for s in str(self.guidance_scales).split(",") if s.strip()]
        except ValueError as err:
            raise InputError(f"--guidance_scales {self.guidance_scales!r}: expected numbers such as 1,2,4") from err
        if any(s < 0 for s in self.scales) or (self.guidance_scale is not None and self.guidance_scale < 0):
            raise InputError("guidance scales must be >= 0 (1 = no guidance)")


# Data ------------------------------------------------------------------------------------------


def load_eval_dataset(dataset_dir: str | Path, split: str, tokenizer, composer_map) -> DatasetDict:
    """The prepared dataset, checked against the model's tokenizer before any work is done."""
    needed = {"input_ids", "composer", "source", "chunk", "augmentation", "n_notes", "task"}
    return load_prepared(dataset_dir, ("train", split), needed, composer_map.names, "the model in --model_dir")


def token_rows(ds, tokenizer, composer_map, where: str) -> list[dict]:
    """The continuation rows of a split (the music alone; accompaniment rows are measured by
    `evaluate_accompaniment`) as plain dicts, each checked: ids inside the vocabulary, [BOS, its composer] in front."""
    bos, vocab = tokenizer["BOS_None"], len(tokenizer)
    rows = ds.select_columns(["input_ids", "composer", "source", "chunk", "augmentation", "n_notes", "task"]).to_list()
    if rows and not any(row["task"] == "continuation" for row in rows):
        raise InputError(f"{where}: no continuation rows (built with --tasks accompaniment only); prepare with --tasks continuation,accompaniment")
    rows = [row for row in rows if row["task"] == "continuation"]
    for row in rows:
        ids = row["input_ids"]
        if len(ids) < HEADER_TOKENS or ids[0] != bos or ids[1] != composer_map.token_ids[row["composer"]] or max(ids) >= vocab:
            raise InputError(
                f"{where}: the row of {row['source']} (chunk {row['chunk']}) does not fit the model's tokenizer "
                f"({vocab} tokens); evaluate a model on the dataset it was trained on"
            )
    return rows


def join_pieces(rows: list[dict], eos_id: int, originals_only: bool = True) -> list[dict]:
    """One entry per piece: its chunks' music tokens joined in order, as [BOS, COMPOSER, music..., EOS].

    Chunks are cut at bar lines, so the joined tokens are the piece's own token sequence.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if not originals_only or not row["augmentation"]:
            groups[(row["source"], row["augmentation"])].append(row)
    pieces = []
    for (source, augmentation), chunks in sorted(groups.items()):
        chunks.sort(key=lambda r: r["chunk"])
        music = [t for r in chunks for t in r["input_ids"][HEADER_TOKENS:] if t != eos_id]
        pieces.append({
            "composer": chunks[0]["composer"],
            "source": source,
            "augmentation": augmentation,
            "ids": chunks[0]["input_ids"][:HEADER_TOKENS] + music + [eos_id],
            "n_notes": sum(r["n_notes"] for r in chunks),
        })
    return pieces


SCAN_BATCH_ROWS = 1024  # rows per Arrow batch of the training scan: its memory, whatever the split's size


@dataclass
class TrainingScan:
    """What evaluation needs from the training split, from one streamed pass over it."""

    token_counts: np.ndarray  # per vocabulary id, over the scored tokens of every continuation row (augmented copies included)
    pieces: np.ndarray  # original pieces per composer id
    rows: int  # continuation rows
    index: MemorizationIndex


def scan_training(ds, tokenizer, composer_map, where: str, batch_size: int = SCAN_BATCH_ROWS) -> TrainingScan:
    """Check the training split's continuation rows as `token_rows` checks a held-out split, count their
    tokens and pieces, and build the memorization index, `batch_size` rows of Arrow at a time: no
    Python list of the split, no Score."""
    bos, vocab = tokenizer["BOS_None"], len(tokenizer)
    composer_tokens = np.asarray(composer_map.token_ids, dtype=np.int64)
    reader = PitchReader.for_tokenizer(tokenizer)
    counts = np.zeros(vocab, dtype=np.int64)
    pieces = np.zeros(len(composer_map.names), dtype=np.int64)
    rows, any_rows, pitch_rows = 0, False, []
    columns = sorted({*ROW_COLUMNS, "composer"})
    for table in ds.select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
        any_rows = any_rows or table.num_rows > 0
        table = table.filter(table.column("task").to_numpy(zero_copy_only=False) == "continuation")
        if table.num_rows == 0:
            continue
        ids = table.column("input_ids").combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        values = ids.values.to_numpy()[offsets[0] : offsets[-1]].astype(np.int64)
        starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
        composer = table.column("composer").to_numpy()
        bad = lengths < HEADER_TOKENS
        ok = ~bad
        bad[ok] = (values[starts[ok]] != bos) | (values[starts[ok] + 1] != composer_tokens[composer[ok]])
        if len(values) and values.max() >= vocab:
            bad |= np.maximum.reduceat(values, np.minimum(starts, len(values) - 1)) >= vocab
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{where}: the row of {table.column('source')[k].as_py()} (chunk {table.column('chunk')[k].as_py()}) does not "
                f"fit the model's tokenizer ({vocab} tokens); evaluate a model on the dataset it was trained on"
            )
        # Scored tokens: every row's ids after BOS and the composer.
        scored = np.ones(len(values), dtype=bool)
        scored[starts] = False
        scored[starts + 1] = False
        counts += np.bincount(values[scored], minlength=vocab)
        original = table.column("augmentation").to_numpy(zero_copy_only=False) == ""
        pieces += np.bincount(composer[original & (table.column("chunk").to_numpy() == 0)], minlength=len(pieces))
        pitch_rows += table_pitch_rows(table, reader)
        rows += table.num_rows
    if any_rows and rows == 0:
        raise InputError(f"{where}: no continuation rows (built with --tasks accompaniment only); prepare with --tasks continuation,accompaniment")
    return TrainingScan(counts, pieces, rows, MemorizationIndex.from_rows(pitch_rows))


# Likelihood ------------------------------------------------------------------------------------


def scored_tokens(ids: list[int]) -> list[int]:
    """The tokens a row's likelihood is measured on: all but BOS and the composer (nothing predicts them)."""
    return list(ids[HEADER_TOKENS:])


def fit_unigram(rows: list[list[int]], vocab_size: int) -> np.ndarray:
    """Log-probabilities (nats) of a unigram model over the scored tokens of `rows`, add-one smoothed."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in rows:
        np.add.at(counts, np.asarray(scored_tokens(ids), dtype=np.int64), 1)
    return unigram_from_counts(counts)


def unigram_from_counts(counts: np.ndarray) -> np.ndarray:
    """Log-probabilities (nats) from token counts, add-one smoothed over the whole vocabulary."""
    smoothed = counts.astype(np.float64) + 1.0
    return np.log(smoothed / smoothed.sum())


def unigram_nll(log_probs: np.ndarray, rows: list[list[int]]) -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of `rows` under a unigram model."""
    tokens = np.concatenate([np.asarray(scored_tokens(ids), dtype=np.int64) for ids in rows] or [np.zeros(0, dtype=np.int64)])
    return float(-log_probs[tokens].sum()), len(tokens)


def windows(ids: list[int], context: int) -> list[list[int]]:
    """A row cut to the model's context: each window restarts from [BOS, COMPOSER] and scores the next tokens."""
    if len(ids) <= context:
        return [list(ids)]
    header, body, width = list(ids[:HEADER_TOKENS]), ids[HEADER_TOKENS:], context - HEADER_TOKENS
    return [header + list(body[i : i + width]) for i in range(0, len(body), width)]


@torch.no_grad()
def model_nll(model, rows: list[list[int]], batch_size: int = 8, pad_id: int = 0, desc: str = "likelihood") -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of `rows` under a causal LM, in padded batches.

    Rows longer than the model's context are scored in windows (see `windows`).
    """
    context = context_length(model.config)
    pieces = sorted((w for ids in rows for w in windows(ids, context)), key=len)
    total, count = 0.0, 0
    for start in tqdm(range(0, len(pieces), batch_size), desc=desc, unit="batch", leave=False):
        batch = pieces[start : start + batch_size]
        width = max(len(w) for w in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, w in enumerate(batch):
            input_ids[i, : len(w)] = torch.tensor(w)
            mask[i, : len(w)] = 1
        input_ids, mask = input_ids.to(model.device), mask.to(model.device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        # Position t predicts token t + 1; the first scored token (index HEADER_TOKENS) is predicted at t = 1.
        log_probs = logits[:, HEADER_TOKENS - 1 : -1].log_softmax(dim=-1)
        targets = input_ids[:, HEADER_TOKENS:]
        nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        keep = mask[:, HEADER_TOKENS:].bool()
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return total, count


def likelihood_summary(total_nll: float, tokens: int, notes: int) -> dict:
    """Per-token NLL (nats), perplexity, per-note NLL (nats and bits) from totals."""
    per_token = total_nll / tokens if tokens else None
    per_note = total_nll / notes if notes else None
    return {
        "total_nll": total_nll,
        "nll_per_token": per_token,
        "perplexity": math.exp(min(per_token, 700.0)) if per_token is not None else None,
        "nll_per_note": per_note,
        "bits_per_note": per_note / math.log(2) if per_note is not None else None,
    }


# Sample sets -----------------------------------------------------------------------------------


@dataclass
class Sampler:
    """Draws sample sets the way generate.py does: one batched generate() call per composer and scale."""

    tokenizer: object
    composer_map: object
    config: object
    defaults: GenerationConfig
    max_new_tokens: int
    device: str

    @torch.no_grad()
    def sample(self, model, composer: str, count: int, guidance_scale: float, seed: int) -> list[dict]:
        plan = build_plan(
            self.tokenizer, self.composer_map, self.config, self.defaults, [composer] * count, seed=seed, grammar=True,
            device=self.device, max_new_tokens=self.max_new_tokens, guidance_scale=guidance_scale,
        )
        output = model.generate(
            plan.input_ids, attention_mask=plan.attention_mask, generation_config=plan.generation_config, logits_processor=plan.logits_processor
        )
        ids = plan.sample_ids(output)
        return [
            {"composer": composer, "name": sample_stem(composer, i), "ids": row, "score": decode_ids(self.tokenizer, row)}
            for i, row in enumerate(ids)
        ]


def read_samples(samples_dir: Path, composers: list[str], tokenizer) -> tuple[dict[str, list[dict]], list[float]]:
    """generate.py's `<composer>_<i>.mid` files (tokens from the .json beside each, if there), per composer;
    and the guidance scales recorded in those .json files."""
    if not samples_dir.is_dir():
        raise InputError(f"--samples_dir {samples_dir}: no such folder")
    found, scales = {}, []
    for composer in composers:
        stem = re.escape(sample_stem(composer, 0)[: -len("_0")])
        paths = sorted(
            (p for p in samples_dir.iterdir() if re.fullmatch(rf"{stem}_(\d+)\.mid", p.name)),
            key=lambda p: int(p.stem.rsplit("_", 1)[1]),
        )
        if not paths:
            raise InputError(
                f"--samples_dir {samples_dir}: no {sample_stem(composer, 0)}.mid (samples of {composer}); run "
                "generate.py --composer all first, or leave --samples_dir out to sample here"
            )
        samples = []
        for path in paths:
            try:
                score = Score(path)
            except Exception as err:  # symusic raises plain RuntimeError on a broken file
                raise InputError(f"--samples_dir: {path} is not a readable MIDI file ({err})") from err
            record = path.with_suffix(".json")
            info = json.loads(record.read_text()) if record.is_file() else {}
            ids = info.get("tokens") or tokenizer.encode(score).ids
            if "settings" in info:
                scales.append(float(info["settings"].get("effective_guidance_scale", info["settings"].get("guidance_scale"))))
            samples.append({"composer": composer, "name": path.stem, "ids": list(ids), "score": score, "file": str(path)})
        found[composer] = samples
    return found, scales


def measure(pieces: list[dict], tokenizer, index: MemorizationIndex, desc: str) -> list[dict]:
    """Per piece: every `piece_metrics` value, the syntax error rate of its ids and the longest run of
    its pitch intervals that one training piece holds at any transposition (`midilm.memorization`).
    Returns JSON-ready dicts (no ids, no Score)."""
    reader = PitchReader.for_tokenizer(tokenizer)
    rows = []
    for piece in tqdm(pieces, desc=desc, unit="piece", leave=False):
        metrics = piece_metrics(piece["score"], syntax_error_rate=count_syntax_errors(tokenizer, piece["ids"]))
        pitches = reader.pitches(piece["ids"])
        run = index.longest_run(pitches)
        rows.append({
            "composer": piece["composer"],
            "name": piece["name"],
            "tokens": len(piece["ids"]),
            **metrics,
            "longest_training_run": run.length,
            "longest_training_run_share": run.length / (len(pitches) - 1) if len(pitches) > 1 else None,
            "longest_training_run_source": run.source,
        })
    return rows


# Distances -------------------------------------------------------------------------------------


def summary_distance(comparison: dict) -> dict[str, float | None]:
    """One distance per sample set: the mean over metrics of the standardised mean gap, the mean
    overlap of the value distributions, and the Jensen–Shannon divergences of the histograms."""
    gaps = [comparison[m]["mean_gap"] for m in DISTANCE_METRICS if m in comparison]
    overlaps = [comparison[m]["overlap"] for m in DISTANCE_METRICS if m in comparison]
    return {
        "mean_gap": float(np.mean(gaps)) if gaps else None,
        "mean_overlap": float(np.mean(overlaps)) if overlaps else None,
        "pitch_class_js": comparison.get("pitch_class_histogram", {}).get("js_divergence"),
        "duration_js": comparison.get("duration_histogram", {}).get("js_divergence"),
    }


def mean_histogram(pieces: list[dict], key: str) -> list[float] | None:
    hists = [p[key] for p in pieces if p.get(key) and sum(p[key]) > 0]
    return np.mean(hists, axis=0).tolist() if hists else None


def set_comparison(generated: list[dict], real: list[dict], composers: list[str]) -> dict:
    """`compare` per composer and pooled, with `summary_distance` of each, and its mean over composers."""
    per_composer = {c: compare([p for p in generated if p["composer"] == c], [p for p in real if p["composer"] == c]) for c in composers}
    distances = {c: summary_distance(v) for c, v in per_composer.items()}
    mean = {k: _mean([d[k] for d in distances.values()]) for k in ("mean_gap", "mean_overlap", "pitch_class_js", "duration_js")}
    pooled = compare(generated, real)
    return {"per_composer": per_composer, "pooled": pooled, "distance": {"per_composer": distances, "mean_over_composers": mean, "pooled": summary_distance(pooled)}}


def sweep_row(samples: list[dict], real: list[dict], composer: str, composers: list[str]) -> dict:
    """How far one composer's samples at one scale are from that composer's real pieces (and from the others')."""
    mine = [p for p in samples if p["composer"] == composer]
    own = [p for p in real if p["composer"] == composer]
    row = summary_distance(compare(mine, own))
    gen_pc = mean_histogram(mine, "pitch_class_histogram")
    others = [mean_histogram([p for p in real if p["composer"] == c], "pitch_class_histogram") for c in composers if c != composer]
    others = [h for h in others if h is not None]
    row["pitch_class_js_other_composers"] = _mean([js_divergence(gen_pc, h) for h in others]) if gen_pc and others else None
    row["syntax_error_rate"] = _mean([p["syntax_error_rate"] for p in mine])
    row["notes"] = _mean([p["n_notes"] for p in mine])
    runs = [p["longest_training_run"] for p in mine]
    row["longest_training_run_max"] = max(runs) if runs else None
    row["longest_training_run_median"] = float(np.median(runs)) if runs else None
    return row


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def memorization(pieces: list[dict], composers: list[str]) -> dict:
    """Longest shared interval runs (see `measure`) per composer and over all: count, max, median."""
    out = {}
    for c in [*composers, "all"]:
        runs = [p["longest_training_run"] for p in pieces if c == "all" or p["composer"] == c]
        notes = [p["n_notes"] for p in pieces if c == "all" or p["composer"] == c]
        out[c] = {"n": len(runs), "max": max(runs) if runs else None, "median": float(np.median(runs)) if runs else None, "median_notes": float(np.median(notes)) if notes else None}
    return out


# Accompaniment ---------------------------------------------------------------------------------


ACCOMPANIMENT_METRICS = ("melody_adherence", "harmonic_fit", "beat_fit", "key_fit")


def accompaniment_pieces(pieces: list[dict], composers: list[str], per_composer: int) -> list[dict]:
    """The `per_composer` held-out pieces of each composer with the fewest notes (then by name): the
    ones a CPU accompanies in reasonable time."""
    chosen = []
    for c in composers:
        chosen += sorted((p for p in pieces if p["composer"] == c), key=lambda p: (p["n_notes"], p["source"]))[:per_composer]
    return chosen


def evaluate_accompaniment(models: dict, tokenizer, composer_map, pieces: list[dict], root: Path, defaults: GenerationConfig, seed: int) -> tuple[dict, dict]:
    """Accompany the melody of each real piece (its marked melody track, else its top voice) with each
    model in `models`, under the piece's composer; measure melody adherence and harmonic fit of each
    result and of the real piece around the same melody. Returns the report section and the MIDI to write."""
    from midilm.accompaniment import accompany, check_melody_fits, melody_prompt

    context = context_length(next(iter(models.values())).config)
    entries, midi = [], defaultdict(list)
    for piece in tqdm(pieces, desc="accompanying held-out melodies", unit="piece"):
        path = root / piece["source"]
        try:
            real = Score(path)
            melody = melody_prompt(tokenizer, real, name=str(path))
            check_melody_fits(melody, context)
        except (InputError, RuntimeError, OSError) as err:  # symusic raises RuntimeError on a broken file
            print(f"warning: {path}: {err}; left out of the accompaniment figures")
            continue
        entry = {"composer": piece["composer"], "source": piece["source"], "bars": melody.num_bars, "melody": melody.source,
                 "real": accompaniment_metrics(melody.melody, real)}
        stem = sample_stem(piece["composer"], sum(e["composer"] == piece["composer"] for e in entries))
        for name, model in models.items():
            result = accompany(model, tokenizer, composer_map, melody, [piece["composer"]], seed=seed, defaults=defaults)[0]
            entry[name] = {**result.metrics(), "syntax_error_rate": result.syntax_error_rate, "cut_bars": result.cut_bars, "windows": result.windows}
            midi[f"accompaniment_{name}"].append({"name": stem, "score": result.score})
        entries.append(entry)
    sets = ["trained", "random", "real"]
    mean = {k: {m: _mean([e[k][m] for e in entries]) for m in ACCOMPANIMENT_METRICS} for k in sets}
    return {"pieces": entries, "mean": mean}, dict(midi)


# The whole evaluation --------------------------------------------------------------------------


def check_output_dir(args: EvaluateArguments) -> Path:
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not args.overwrite:
        raise InputError(f"--output_dir {output_dir} already exists; pass --overwrite to replace it, or choose another folder")
    return output_dir


def headline(report: dict) -> str:
    """A few lines for the terminal."""
    lik, comp = report["likelihood"], report["comparison"]
    t_dist, r_dist = comp["trained"]["distance"]["mean_over_composers"], comp["random"]["distance"]["mean_over_composers"]
    return "\n".join([
        (f"{lik['split']} perplexity {_f(lik['trained']['perplexity'])} (unigram {_f(lik['unigram']['perplexity'])}, "
        f"ratio {_f(lik['perplexity_ratio_trained_to_unigram'])}); NLL per note {_f(lik['trained']['nll_per_note'])} nats"),
        (f"metric gap to real: trained {_f(t_dist['mean_gap'])}, random weights {_f(r_dist['mean_gap'])}; "
        f"pitch-class JS: trained {_f(t_dist['pitch_class_js'])}, random weights {_f(r_dist['pitch_class_js'])}"),
        _verdict(t_dist, r_dist),
    ])


def evaluate(args: EvaluateArguments) -> dict:
    """Run the whole evaluation and return the report (see the module docstring); writes nothing."""
    started = time.perf_counter()
    timings = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # Load the model folder and the dataset, and check that they belong together
    config, tokenizer, _ = load_midilm_dir(args.model_dir)
    # composers.json keeps the dataset's ClassLabel order (config.json's composer map is sorted by name).
    _, composer_map = load_tokenizer(args.model_dir)
    dataset = load_eval_dataset(args.dataset_dir, args.split, tokenizer, composer_map)
    composers = composer_map.names
    if args.composers:
        try:
            composers = [composer_map.name_of(composer_map.id_of(c)) for c in composer_names(composer_map, args.composers)]
        except KeyError as err:
            raise InputError(f"--composers: {err.args[0]}") from err
    eos = config.eos_token_id
    held_rows = token_rows(dataset[args.split], tokenizer, composer_map, f"--dataset_dir {args.dataset_dir} ({args.split})")
    held_pieces = [p for p in join_pieces(held_rows, eos) if composer_map.names[p["composer"]] in composers]
    missing = [c for c in composers if not any(composer_map.names[p["composer"]] == c for p in held_pieces)]
    if missing and not args.composers and len(missing) < len(composers):
        # A small corpus can leave a composer without held-out pieces: evaluate the others, say so.
        print(f"warning: no {args.split} pieces of {', '.join(missing)}; the report leaves them out")
        composers = [c for c in composers if c not in missing]
    elif missing:
        raise InputError(
            f"--dataset_dir {args.dataset_dir}: no {args.split} pieces of {', '.join(missing)}, so nothing to compare their "
            f"samples with; try --split {'test' if args.split == 'validation' else 'validation'}, or leave them out with --composers"
        )
    try:
        defaults = GenerationConfig.from_pretrained(args.model_dir)
    except OSError:
        defaults = default_generation_config(config)
    main_scale = float(args.guidance_scale if args.guidance_scale is not None else (defaults.guidance_scale or 1.0))
    max_new_tokens = min(args.max_new_tokens, context_length(config) - HEADER_TOKENS)
    samples_from_dir = read_samples(Path(args.samples_dir), composers, tokenizer) if args.samples_dir else None
    model = load_model(args.model_dir, device)

    # One streamed pass over the training split: row checks, token counts, the memorization index
    tick = time.perf_counter()
    training = scan_training(dataset["train"], tokenizer, composer_map, f"--dataset_dir {args.dataset_dir} (train)")
    timings["training_scan_s"] = time.perf_counter() - tick

    # Decode the held-out pieces, the references of every music metric
    def decode(pieces, desc):
        out = []
        for p in tqdm(pieces, desc=desc, unit="piece"):
            name = composer_map.names[p["composer"]]
            out.append({**p, "composer": name, "name": p["source"], "score": decode_ids(tokenizer, p["ids"])})
        return out

    tick = time.perf_counter()
    real = decode(held_pieces, f"decoding {args.split} pieces")
    timings["decode_s"] = time.perf_counter() - tick

    # Likelihood of the held-out rows: the model, the same architecture with random weights, a unigram model
    tick = time.perf_counter()
    rows = [r["input_ids"] for r in held_rows]
    notes = sum(r["n_notes"] for r in held_rows)
    torch.manual_seed(args.seed)
    random_model = AutoModelForCausalLM.from_config(config).to(device).eval()
    # generate() fills unset flags from the model's generation_config; one derived from config.json
    # carries training's use_cache=False (no KV cache: quadratic, 60x slower at 512 tokens).
    random_model.generation_config = model.generation_config
    trained_nll, tokens = model_nll(model, rows, args.batch_size, config.pad_token_id, desc="likelihood (trained)")
    random_nll, _ = model_nll(random_model, rows, args.batch_size, config.pad_token_id, desc="likelihood (random weights)")
    counts = np.zeros(config.vocab_size, dtype=np.int64)  # smoothed over the model's vocabulary, as before
    counts[: min(len(counts), len(training.token_counts))] = training.token_counts[: len(counts)]
    unigram = unigram_from_counts(counts)
    unigram_total, _ = unigram_nll(unigram, rows)
    likelihood = {
        "split": args.split,
        "rows": len(rows),
        "scored_tokens": tokens,
        "notes": notes,
        "trained": likelihood_summary(trained_nll, tokens, notes),
        "random_weights": likelihood_summary(random_nll, tokens, notes),
        "unigram": likelihood_summary(unigram_total, tokens, notes),
        "windowed_rows": sum(len(r) > context_length(config) for r in rows),
    }
    likelihood["perplexity_ratio_trained_to_unigram"] = likelihood["trained"]["perplexity"] / likelihood["unigram"]["perplexity"]
    timings["likelihood_s"] = time.perf_counter() - tick

    # Sample: the trained model at the main scale (or generate.py's files), the sweep, the random baseline
    tick = time.perf_counter()
    sampler = Sampler(tokenizer, composer_map, config, defaults, max_new_tokens, device)
    n = args.num_samples_per_composer
    seed_of = {c: args.seed + i for i, c in enumerate(composers)}
    jobs = [("random", random_model, main_scale)]
    if samples_from_dir is None:
        jobs.append(("trained", model, main_scale))
    jobs += [(f"sweep {s:g}", model, s) for s in args.scales if samples_from_dir is not None or s != main_scale]
    drawn: dict[str, list[dict]] = defaultdict(list)
    with tqdm(total=len(jobs) * len(composers), desc="sampling", unit="call") as bar:
        for name, which, scale in jobs:
            for c in composers:
                bar.set_postfix_str(f"{name}, {c}")
                drawn[name] += sampler.sample(which, c, n, scale, seed_of[c])
                bar.update()
    if samples_from_dir is not None:
        drawn["trained"] = [s for c in composers for s in samples_from_dir[0][c]]
        recorded = sorted(set(samples_from_dir[1]))
        trained_scale = recorded[0] if len(recorded) == 1 else None
    else:
        trained_scale = main_scale
    timings["sampling_s"] = time.perf_counter() - tick

    # Measure every piece
    tick = time.perf_counter()
    measured = {
        "real": measure(real, tokenizer, training.index, "measuring real pieces"),
        "trained": measure(drawn["trained"], tokenizer, training.index, "measuring trained samples"),
        "random": measure(drawn["random"], tokenizer, training.index, "measuring random-weight samples"),
    }
    sweep_sets = {}
    for s in args.scales:
        key = f"sweep {s:g}"
        sweep_sets[s] = measured["trained"] if key not in drawn else measure(drawn[key], tokenizer, training.index, f"measuring s={s:g}")
    timings["metrics_s"] = time.perf_counter() - tick

    # Accompaniment (when the model was trained on it): the trained and the random-weight model write
    # the music around real held-out melodies
    accompaniment = None
    if "accompaniment" in dataset["train"].unique("task") and args.accompaniment_pieces > 0:
        from midilm.accompaniment import source_root

        tick = time.perf_counter()
        accompaniment, accompanied = evaluate_accompaniment(
            {"trained": model, "random": random_model}, tokenizer, composer_map, accompaniment_pieces(real, composers, args.accompaniment_pieces),
            source_root(args.dataset_dir), defaults, args.seed,
        )
        drawn.update(accompanied)
        timings["accompaniment_s"] = time.perf_counter() - tick

    if max(p["syntax_error_rate"] for p in measured["real"]) > 0:
        print(f"warning: real {args.split} pieces read back with syntax errors; was the dataset built with this model's tokenizer?")
    comparison = {k: set_comparison(measured[k], measured["real"], composers) for k in ("trained", "random")}
    sweep = {f"{s:g}": {c: sweep_row(sweep_sets[s], measured["real"], c, composers) for c in composers} for s in args.scales}
    timings["total_s"] = time.perf_counter() - started

    settings = asdict(args)
    settings.update({
        "main_guidance_scale": main_scale,
        "trained_samples_guidance_scale": trained_scale,
        "trained_samples_from": args.samples_dir or "sampled here",
        "max_new_tokens_used": max_new_tokens,
        "sampling": {k: getattr(defaults, k, None) for k in ("temperature", "top_k", "top_p", "repetition_penalty")},
        "grammar": True,
        "device": device,
        "composers_evaluated": composers,
        "composer_seeds": seed_of,
    })
    real_errors = [p["syntax_error_rate"] for p in measured["real"]]
    return {
        "settings": settings,
        "data": {
            "held_out_pieces": {c: sum(p["composer"] == c for p in real) for c in composers},
            "training_pieces": {c: int(training.pieces[composer_map.names.index(c)]) for c in composers},
            "training_rows": training.rows,
            "memorization_index": {"pieces": training.index.pieces, "intervals": training.index.intervals, "bytes": training.index.nbytes},
        },
        "likelihood": likelihood,
        "pieces": {**measured, "sweep": {f"{s:g}": sweep_sets[s] for s in args.scales if f"sweep {s:g}" in drawn}},
        "comparison": comparison,
        "cfg_sweep": sweep,
        "accompaniment": accompaniment,
        "memorization": {k: memorization(v, composers) for k, v in measured.items()},
        "memorization_by_scale": {f"{s:g}": memorization(sweep_sets[s], composers) for s in args.scales},
        "checks": {
            "real_pieces_syntax_error_rate_max": max(real_errors),
            "real_pieces_have_no_syntax_errors": max(real_errors) == 0,
            "samples_syntax_error_rate_max": max([p["syntax_error_rate"] for k in ("trained", "random") for p in measured[k]] or [0.0]),
        },
        "timings": timings,
        "_midi": {k: drawn[k] for k in drawn},  # dropped before JSON; written as MIDI beside the report
    }


# Writing ---------------------------------------------------------------------------------------


def write_report(report: dict, output_dir: Path, overwrite: bool) -> Path:
    """report.json, report.md and every evaluated sample as MIDI, built aside and swapped in whole."""
    midi = report.pop("_midi", {})
    if output_dir.exists() and not overwrite:
        raise InputError(f"--output_dir {output_dir} already exists; pass --overwrite to replace it")
    with staging_dir(output_dir) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown_report(report))
        for name, samples in midi.items():
            folder = tmp / "samples" / name.replace(" ", "_s")
            folder.mkdir(parents=True, exist_ok=True)
            for sample in samples:
                sample["score"].dump_midi(folder / f"{sample['name']}.mid")
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, output_dir)
    return output_dir


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"] + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _verdict(trained: dict, random: dict) -> str:
    better = [k for k in ("mean_gap", "pitch_class_js", "duration_js") if trained.get(k) is not None and random.get(k) is not None and trained[k] < random[k]]
    higher_overlap = trained.get("mean_overlap") is not None and random.get("mean_overlap") is not None and trained["mean_overlap"] > random["mean_overlap"]
    score = len(better) + higher_overlap
    return f"the trained model's samples are closer to the real pieces than the random-weight samples on {score} of 4 distances"


def markdown_report(report: dict) -> str:
    s, lik, comp = report["settings"], report["likelihood"], report["comparison"]
    composers = s["composers_evaluated"]
    t_dist, r_dist = comp["trained"]["distance"]["mean_over_composers"], comp["random"]["distance"]["mean_over_composers"]
    mem = report["memorization"]
    samples = {k: report["pieces"][k] for k in ("trained", "random")}
    lines = [
        "# Evaluation report",
        "",
        f"Model `{s['model_dir']}`, dataset `{s['dataset_dir']}` ({s['split']} split: "
        + ", ".join(f"{c} {n}" for c, n in report["data"]["held_out_pieces"].items())
        + " held-out pieces). "
        + f"Trained-model samples: {'read from `' + s['samples_dir'] + '`' if s['samples_dir'] else 'sampled here'}"
        + (f" (guidance scale {s['trained_samples_guidance_scale']:g})" if s["trained_samples_guidance_scale"] is not None else "")
        + f", {len(samples['trained'])} in all; random-weight samples: the same architecture, initialised with seed {s['seed']}, "
        + f"{len(samples['random'])} in all, sampled with guidance scale {s['main_guidance_scale']:g}; "
        + f"{s['num_samples_per_composer']} samples per composer and call, up to {s['max_new_tokens_used']} tokens each. "
        + "Both are sampled with the REMI grammar on, so both have valid syntax: the grammar alone gives that.",
        "",
        "## Headline",
        "",
    ]
    rows = [
        [f"perplexity per token ({s['split']})", _f(lik["trained"]["perplexity"]), _f(lik["random_weights"]["perplexity"]), _f(lik["unigram"]["perplexity"])],
        ["perplexity / unigram perplexity", _f(lik["perplexity_ratio_trained_to_unigram"]), _f(lik["random_weights"]["perplexity"] / lik["unigram"]["perplexity"]), "1.000"],
        ["NLL per token (nats)", _f(lik["trained"]["nll_per_token"]), _f(lik["random_weights"]["nll_per_token"]), _f(lik["unigram"]["nll_per_token"])],
        ["NLL per note (nats)", _f(lik["trained"]["nll_per_note"]), _f(lik["random_weights"]["nll_per_note"]), _f(lik["unigram"]["nll_per_note"])],
        ["syntax error rate of samples (max)", _f(max(p["syntax_error_rate"] for p in samples["trained"])), _f(max(p["syntax_error_rate"] for p in samples["random"])), "–"],
        ["music metrics: mean standardised gap to real (lower is closer)", _f(t_dist["mean_gap"]), _f(r_dist["mean_gap"]), "–"],
        ["music metrics: mean distribution overlap with real (higher is closer)", _f(t_dist["mean_overlap"]), _f(r_dist["mean_overlap"]), "–"],
        ["pitch-class histogram JS divergence to real (bits)", _f(t_dist["pitch_class_js"]), _f(r_dist["pitch_class_js"]), "–"],
        ["duration histogram JS divergence to real (bits)", _f(t_dist["duration_js"]), _f(r_dist["duration_js"]), "–"],
        ["longest interval run shared with a training piece, any transposition (max / median)", f"{mem['trained']['all']['max']} / {_f(mem['trained']['all']['median'], 1)}",
         f"{mem['random']['all']['max']} / {_f(mem['random']['all']['median'], 1)}", "–"],
    ]
    lines += _table(["", "trained model", "random weights", "unigram"], rows)
    lines += [
        (f"Verdict, averaged over composers: {_verdict(t_dist, r_dist)}. "
        f"Real {s['split']} pieces read back with syntax error rate {_f(report['checks']['real_pieces_syntax_error_rate_max'])} (expected 0)."),
        "",
        "## Music metrics per composer",
        "",
        "Mean ± std over pieces; for the sample sets, the standardised gap |mean − real mean| / real std in brackets.",
        "",
    ]
    for c in composers:
        lines += [f"### {c}", ""]
        by_set = {k: [p for p in report["pieces"][k] if p["composer"] == c] for k in SETS}
        rows = []
        for metric in SCALAR_METRICS:
            cells = [metric]
            for k in SETS:
                values = [p[metric] for p in by_set[k] if p[metric] is not None]
                cell = f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"
                gap = comp[k]["per_composer"][c].get(metric, {}).get("mean_gap") if k != "real" else None
                cells.append(cell + (f" ({gap:.2f})" if gap is not None else ""))
            rows.append(cells)
        for hist in HISTOGRAM_METRICS:
            cells = [f"{hist} JS to real"]
            for k in SETS:
                js = comp[k]["per_composer"][c].get(hist, {}).get("js_divergence") if k != "real" else None
                cells.append("–" if k == "real" else _f(js))
            rows.append(cells)
        rows.append(["pieces"] + [str(len(by_set[k])) for k in SETS])
        lines += _table(["metric", *SETS.values()], rows)
    lines += [
        "## Classifier-free guidance sweep",
        "",
        ("Each composer's trained-model samples at each guidance scale s, against that composer's real "
        "pieces: Jensen–Shannon divergence (bits) of the mean pitch-class and duration histograms, the "
        "mean standardised metric gap, and the pitch-class JS to the other composers' real pieces "
        "(samples that move toward their composer get lower own-JS, and not lower other-JS)."),
        "",
    ]
    rows = []
    for scale, per_composer in report["cfg_sweep"].items():
        for c, r in per_composer.items():
            rows.append([scale, c, _f(r["pitch_class_js"]), _f(r["duration_js"]), _f(r["mean_gap"]), _f(r["pitch_class_js_other_composers"]), _f(r["notes"], 1),
                         f"{_f(r.get('longest_training_run_max'))} / {_f(r.get('longest_training_run_median'), 1)}"])
    lines += _table(["s", "composer", "pitch-class JS (own)", "duration JS (own)", "mean gap (own)", "pitch-class JS (others)", "notes per sample",
                     "shared run with training (max / median)"], rows)
    lines += [sweep_trend(report["cfg_sweep"], composers), ""]
    if report.get("accompaniment"):
        lines += accompaniment_markdown(report["accompaniment"])
    lines += [
        "## Memorization",
        "",
        ("Longest run of successive pitch intervals (notes in onset order, lowest first within an onset) that a piece "
        "shares with one training piece at any transposition, so the augmented (transposed) copies count as their "
        "original does; a run of k intervals is a passage of k + 1 notes. Real held-out pieces give the level that "
        f"shared idioms (scales, cadences) reach by themselves. Index: {report['data']['memorization_index']['pieces']} "
        f"original training pieces, {report['data']['memorization_index']['intervals']} intervals."),
        "",
    ]
    rows = [[SETS[k], c, str(v["n"]), str(v["max"]), _f(v["median"], 1), _f(v["median_notes"], 1)] for k in SETS for c, v in mem[k].items()]
    rows += [[f"trained, s = {scale}", c, str(v["n"]), str(v["max"]), _f(v["median"], 1), _f(v["median_notes"], 1)]
             for scale, by_composer in report.get("memorization_by_scale", {}).items() for c, v in by_composer.items() if c == "all"]
    lines += _table(["set", "composer", "pieces", "max run", "median run", "median notes"], rows)
    rows = [[p["name"], str(p["n_notes"]), str(p["longest_training_run"]), _f(p["longest_training_run_share"], 2), p.get("longest_training_run_source") or "–",
             _f(p["syntax_error_rate"])] for p in samples["trained"]]
    lines += ["Trained-model samples:", ""] + _table(["sample", "notes", "longest shared run (intervals)", "share of its intervals", "found in", "syntax error rate"], rows)
    lines += [
        "## How these numbers are made",
        "",
        (f"- Likelihood: {lik['rows']} {s['split']} rows, {lik['scored_tokens']} tokens after BOS and the composer "
        f"token (EOS included), {lik['notes']} notes; NLL per note = total NLL / notes. Rows longer than the "
        f"model's context ({lik['windowed_rows']} here) are scored in windows that restart from [BOS, composer]. "
        "The unigram model is fitted on the training split's tokens (augmented copies included, as the model saw them) "
        "with add-one smoothing over the whole vocabulary."),
        ("- Music metrics: `midilm.metrics.piece_metrics`; distances: `midilm.metrics.compare` per composer, averaged over "
        f"composers (metrics: {', '.join(DISTANCE_METRICS)})."),
        "- Timings (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in report["timings"].items()) + f", on {s['device']}.",
        "",
    ]
    return "\n".join(lines)


def accompaniment_markdown(section: dict) -> list[str]:
    """The accompaniment figures: means over pieces per set, then one row per piece."""
    names = {"trained": "trained model", "random": "random weights", "real": "real piece"}
    lines = [
        "## Accompaniment",
        "",
        ("Each listed held-out piece's melody (its marked melody track, else its top voice) accompanied under its "
        "composer by the trained model and by the random-weight model, one sample each, beside the real piece around "
        "the same melody. Melody adherence: share of melody notes the full-piece section sounds at the same onset and "
        "pitch (1 for the real piece by construction). Harmonic fit: share of accompaniment note-time in a pitch class "
        "the melody sounds in that beat or in the melody's key; beat fit and key fit are its two halves."),
        "",
    ]
    rows = [[m.replace("_", " ")] + [_f(section["mean"][k][m]) for k in names] for m in ACCOMPANIMENT_METRICS]
    lines += _table(["mean over pieces", *names.values()], rows)
    rows = []
    for e in section["pieces"]:
        for k in names:
            r = e[k]
            rows.append([e["source"], str(e["bars"]), names[k], _f(r["melody_adherence"]), _f(r["harmonic_fit"]), _f(r["beat_fit"]),
                         _f(r["key_fit"]), str(r["accompaniment_notes"]), _f(r.get("syntax_error_rate"))])
    lines += _table(["piece", "bars", "set", "melody adherence", "harmonic fit", "beat fit", "key fit", "accompaniment notes", "syntax error rate"], rows)
    return lines


def sweep_trend(sweep: dict, composers: list[str]) -> str:
    """One honest sentence: for how many composers the own pitch-class JS falls from the lowest to the highest scale."""
    scales = sorted(sweep, key=float)
    if len(scales) < 2:
        return "One guidance scale only: no trend to read."
    lo, hi = scales[0], scales[-1]
    falls = [c for c in composers if None not in (sweep[lo][c]["pitch_class_js"], sweep[hi][c]["pitch_class_js"]) and sweep[hi][c]["pitch_class_js"] < sweep[lo][c]["pitch_class_js"]]
    return (
        f"From s={lo} to s={hi}, the pitch-class JS divergence to the composer's own pieces falls for {len(falls)} of "
        f"{len(composers)} composers" + (f" ({', '.join(falls)})" if falls else "") + "."
    )
