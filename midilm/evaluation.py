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
- A guidance-scale sweep (`--adherence_scales`, 16 samples per composer at each by default, guard on
  and off, plus unconditional samples): composer adherence judged by an independent classifier
  (the `composer_adherence` evaluate module: its ceiling on real held-out crops, the unconditional base
  rate, 95% Wilson intervals, confusion matrices), degenerate samples (more notes at one onset than any
  training piece of the composer holds) with the musical guard on and off, syntax errors, the music-metric
  gap (the `music_metrics` evaluate module), notes per sample and memorization at each scale; the guidance
  default it chooses (highest adherence with no more degenerate samples than the real pieces), written to
  the model's config.json with `--write_default_guidance`. Histogram distances per scale stay as a
  secondary table: pitch-class histograms mostly measure key and mode.
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
import os
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
from transformers import AutoModelForCausalLM

from midilm.dataset import load_prepared
from midilm.generation import build_plan, composer_names, decode_ids, load_model
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
from midilm.guard import bounds_from_config
from midilm.hub import rewrite_model_card
from midilm.modeling import TASKS_KEY, context_length, load_midilm_dir, model_tasks, sampling_defaults
from midilm.outputs import replace_dir, staging_dir
from midilm.errors import InputError
from midilm.rows import body, body_mask, body_room, body_predictions, has_header, header, header_problems, with_composer
from midilm.rows import windows as row_windows
from midilm.sample_files import sample_stem
from midilm.sampling import SamplingSettings
from midilm.tokenizer import load_tokenizer
from midilm.training import TRAINING_CONFIG_FILE

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
    guidance_scale: float | None = field(default=None, metadata={"help": "Guidance scale of the main sample sets (default: the scale this evaluation chooses with --write_default_guidance, else the model's midilm_guidance_scale in config.json)."})
    adherence_scales: str = field(default="1,1.5,2,3,5", metadata={"help": "Comma-separated guidance scales of the sweep: at each, every composer is sampled with the musical guard on and off, and judged by the composer classifier, the music metrics, degenerate onsets and memorization; unconditional samples give the base rate. Empty = no sweep, no adherence section."})
    adherence_samples_per_composer: int = field(default=16, metadata={"help": "Samples per composer at each sweep scale (and guard setting); as many unconditional samples as one scale holds."})
    guidance_scales: str | None = field(default=None, metadata={"help": "The former name of --adherence_scales; when given, it replaces them."})
    write_default_guidance: bool = field(default=False, metadata={"help": "Write the guidance scale the sweep chooses (the highest composer adherence whose degenerate samples, guard on, stay at or below the real pieces' rate) into --model_dir's config.json (midilm_guidance_scale), so generate.py uses it by default."})
    sample_batch_size: int = field(default=64, metadata={"help": "Samples per generate() call (twice as many rows under guidance): bounds the memory of the KV cache."})
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
        if self.adherence_samples_per_composer < 1:
            raise InputError(f"--adherence_samples_per_composer {self.adherence_samples_per_composer}: must be at least 1")
        if self.sample_batch_size < 1:
            raise InputError(f"--sample_batch_size {self.sample_batch_size}: must be at least 1")
        flag, text = ("--guidance_scales", self.guidance_scales) if self.guidance_scales is not None else ("--adherence_scales", self.adherence_scales)
        try:
            # sorted and unique: the table reads top to bottom, and one scale is sampled once
            self.scales = sorted({float(s) for s in str(text).split(",") if s.strip()})
        except ValueError as err:
            raise InputError(f"{flag} {text!r}: expected numbers such as 1,1.5,2,3,5") from err
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
        if not has_header(ids, bos, {composer_map.token_ids[row["composer"]]}) or max(ids) >= vocab:
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
        music = [t for r in chunks for t in body(r["input_ids"]) if t != eos_id]
        pieces.append({
            "composer": chunks[0]["composer"],
            "source": source,
            "augmentation": augmentation,
            "ids": list(header(chunks[0]["input_ids"])) + music + [eos_id],
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
    max_notes_per_onset: np.ndarray  # per composer id, the most notes starting at one onset in its original pieces (0: none)


def scan_training(ds, tokenizer, composer_map, where: str, batch_size: int = SCAN_BATCH_ROWS) -> TrainingScan:
    """Check the training split's continuation rows as `token_rows` checks a held-out split, count their
    tokens and pieces, find the most notes at one onset per composer, and build the memorization index,
    `batch_size` rows of Arrow at a time: no Python list of the split, no Score."""
    from midilm.guard import count_histograms

    bos, vocab = tokenizer["BOS_None"], len(tokenizer)
    composer_tokens = np.asarray(composer_map.token_ids, dtype=np.int64)
    reader = PitchReader.for_tokenizer(tokenizer)
    counts = np.zeros(vocab, dtype=np.int64)
    pieces = np.zeros(len(composer_map.names), dtype=np.int64)
    onset_max = np.zeros(len(composer_map.names), dtype=np.int64)
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
        bad = header_problems(values, starts, lengths, bos, composer_tokens[composer])
        if len(values) and values.max() >= vocab:
            bad |= np.maximum.reduceat(values, np.minimum(starts, len(values) - 1)) >= vocab
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{where}: the row of {table.column('source')[k].as_py()} (chunk {table.column('chunk')[k].as_py()}) does not "
                f"fit the model's tokenizer ({vocab} tokens); evaluate a model on the dataset it was trained on"
            )
        # Scored tokens: every row's body.
        counts += np.bincount(values[body_mask(len(values), starts)], minlength=vocab)
        original = table.column("augmentation").to_numpy(zero_copy_only=False) == ""
        pieces += np.bincount(composer[original & (table.column("chunk").to_numpy() == 0)], minlength=len(pieces))
        # Chunks are cut at bar lines, so no onset straddles two rows; transposed copies hold the same counts.
        for k in np.unique(composer[original]):
            mine = np.flatnonzero(original & (composer == k))
            onset_hist, _ = count_histograms(tokenizer, (values[starts[j] : starts[j] + lengths[j]] for j in mine))
            onset_max[k] = max(onset_max[k], len(onset_hist) - 1)
        pitch_rows += table_pitch_rows(table, reader)
        rows += table.num_rows
    if any_rows and rows == 0:
        raise InputError(f"{where}: no continuation rows (built with --tasks accompaniment only); prepare with --tasks continuation,accompaniment")
    return TrainingScan(counts, pieces, rows, MemorizationIndex.from_rows(pitch_rows), onset_max)


# Likelihood ------------------------------------------------------------------------------------


def scored_tokens(ids: list[int]) -> list[int]:
    """The tokens a row's likelihood is measured on: its body (nothing predicts BOS or the composer)."""
    return list(body(ids))


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


@torch.no_grad()
def model_nll(model, rows: list[list[int]], batch_size: int = 8, pad_id: int = 0, desc: str = "likelihood") -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of `rows` under a causal LM, in padded batches.

    Rows longer than the model's context are scored in windows (see `windows`).
    """
    context = context_length(model.config)
    pieces = sorted((w for ids in rows for w in row_windows(ids, context)), key=len)
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
        log_probs = body_predictions(logits).log_softmax(dim=-1)
        nll = -log_probs.gather(-1, body(input_ids).unsqueeze(-1)).squeeze(-1)
        keep = body(mask).bool()
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
    """Draws sample sets the way generate.py does (`build_plan` + `plan.run`: CFG, the grammar and
    the musical guard), every composer of a set in one batched call of at most `batch_samples` samples."""

    tokenizer: object
    composer_map: object
    config: object
    defaults: dict  # midilm.modeling.sampling_defaults
    max_new_tokens: int
    device: str
    batch_samples: int = 64

    def sample(self, model, composers: list[str], guidance_scale: float, seed: int, guard: bool = True) -> list[dict]:
        """One sample per entry of `composers` (names, or `none`). A batch's seed is `seed` plus its first
        sample's index, so the same call with the guard off draws the same tokens until the guard steps in."""
        out, counts = [], {}
        for start in range(0, len(composers), self.batch_samples):
            names = composers[start : start + self.batch_samples]
            settings = SamplingSettings(guidance_scale=guidance_scale, max_new_tokens=self.max_new_tokens, seed=seed + start, guard=guard)
            settings = settings.resolve(self.defaults, context_length(self.config))
            plan = build_plan(self.tokenizer, self.composer_map, self.config, settings, names, device=self.device)
            for composer, row in zip(names, plan.sample_ids(plan.run(model))):
                index = counts[composer] = counts.get(composer, -1) + 1
                out.append({"composer": composer, "name": sample_stem(composer, index), "ids": row, "score": decode_ids(self.tokenizer, row),
                            "guard": plan.settings["guard"]})
        return out


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


# Composer adherence and the guidance default ---------------------------------------------------


UNCONDITIONAL = "unconditional"


def sweep_key(scale: float, guard: bool = True) -> str:
    """The name of one sweep sample set (also its folder of MIDI files beside the report)."""
    return f"sweep {scale:g}" if guard else f"sweep_unguarded {scale:g}"


def degenerate(pieces: list[dict], tokenizer, thresholds: dict[str, int]) -> dict:
    """How many pieces start more notes at one onset than `thresholds` allows their composer (the most
    any training piece of that composer holds; `none`: the most of any composer), with the largest
    onset of each piece (`midilm.guard.onset_counts`)."""
    from midilm.guard import onset_counts

    overall = max(thresholds.values(), default=0)
    largest = [onset_counts(tokenizer, p["ids"])[0] for p in pieces]
    over = [n > thresholds.get(p["composer"], overall) for p, n in zip(pieces, largest)]
    return {
        "count": int(sum(over)), "n": len(pieces), "share": sum(over) / len(pieces) if pieces else None,
        "max_notes_per_onset": max(largest, default=None), "pieces": [p["name"] for p, o in zip(pieces, over) if o],
    }


def choose_guidance(rows: list[dict], real_rate: float | None) -> dict:
    """The default guidance scale from the sweep: the highest overall adherence among the scales whose
    share of degenerate samples with the guard on is at most the real held-out pieces' (ties go to the
    smaller scale, so s = 1 unless guidance measurably helps). Without such a scale, the one with the
    fewest degenerate samples. Returns the scale (None when adherence is not measurable) and the reason."""
    measured = [r for r in rows if r["adherence"] is not None]
    if not measured:
        return {"scale": None, "reason": "composer adherence is not measurable here (see the classifier's reasons), so the data cannot choose a scale"}
    limit = real_rate or 0.0
    allowed = [r for r in measured if r["degenerate_guard_on"]["share"] <= limit + 1e-12]
    if allowed:
        best = max(allowed, key=lambda r: (r["adherence"], -r["scale"]))
        reason = (
            f"s = {best['scale']:g} has the highest composer adherence ({best['adherence']:.2f}) of the scales whose share of "
            f"degenerate samples with the guard on is at most the real held-out pieces' ({limit:.2f})"
        )
        excluded = [r for r in measured if r not in allowed]
        if excluded:
            reason += "; " + ", ".join(f"s = {r['scale']:g}" for r in excluded) + " exceeded it"
        if best["scale"] == 1.0:
            reason += "; guidance did not beat the composer token alone, so the default is no guidance (s = 1)"
    else:
        best = min(measured, key=lambda r: (r["degenerate_guard_on"]["share"], -r["adherence"], r["scale"]))
        reason = (
            f"no scale kept degenerate samples at or below the real pieces' rate ({limit:.2f}); s = {best['scale']:g} had the fewest "
            f"({best['degenerate_guard_on']['share']:.2f}), then the highest adherence ({best['adherence']:.2f})"
        )
    return {"scale": best["scale"], "reason": reason}


def composer_adherence(
    args: EvaluateArguments, tokenizer, composers: list[str], real: list[dict], real_measured: list[dict], drawn: dict[str, list[dict]],
    sweep_sets: dict[float, list[dict]], thresholds: dict[str, int], guard: dict | None,
) -> dict:
    """The adherence table: the composer classifier's ceiling on real held-out crops, the unconditional
    base rate, and at every sweep scale adherence beside degenerate samples (guard on and off), syntax
    errors, the music-metric gap to the composer's real pieces, notes per sample and memorization.

    Adherence and the metric gap come from midilm's `evaluate` modules (composer_adherence, music_metrics),
    called as a user would: the first adherence call trains the classifier on --dataset_dir's real pieces
    (crops as long as the median sample), which the module keeps for the later calls of this process.
    """
    import evaluate

    from midilm.adherence import typical_length
    from midilm.evaluate_modules import path

    guided = [p for s in args.scales for p in drawn[sweep_key(s)]]
    crop = {"crop_length": typical_length([p["score"] for p in guided], "notes"), "crop_unit": "notes", "seed": args.seed}
    adherence_metric = evaluate.load(path("composer_adherence"), keep_in_memory=True)
    music_metric = evaluate.load(path("music_metrics"), keep_in_memory=True)

    def judge(samples: list[dict]) -> dict:
        return adherence_metric.compute(
            predictions=[p["ids"] for p in samples], references=[p["composer"] for p in samples],
            dataset=args.dataset_dir, tokenizer=tokenizer, **crop,
        )

    real_ids = {c: [p["ids"] for p in real if p["composer"] == c] for c in composers}

    def metric_gap(samples: list[dict]) -> float | None:
        gaps = []
        for c in composers:
            mine = [p["ids"] for p in samples if p["composer"] == c]
            if mine and real_ids[c]:
                gaps.append(music_metric.compute(predictions=mine, real=real_ids[c], tokenizer=tokenizer)["distance"]["mean_gap"])
        return _mean(gaps)

    groups = {UNCONDITIONAL: judge(drawn[UNCONDITIONAL])}
    rows = []
    for s in args.scales:
        result = groups[f"s = {s:g}"] = judge(drawn[sweep_key(s)])
        runs = [p["longest_training_run"] for p in sweep_sets[s]]
        rows.append({
            "scale": s,
            "adherence": result["adherence"],
            "interval": result["adherence_interval"],
            "n": result["overall"]["n"],
            "mean_probability": result["mean_probability"],
            "per_composer": {c: v.get("share") if v.get("measurable") else None for c, v in result["per_composer"].items()},
            "degenerate_guard_on": degenerate(drawn[sweep_key(s)], tokenizer, thresholds),
            "degenerate_guard_off": degenerate(drawn[sweep_key(s, guard=False)], tokenizer, thresholds),
            "syntax_error_rate_max": max((p["syntax_error_rate"] for p in sweep_sets[s]), default=None),
            "metric_gap": metric_gap(drawn[sweep_key(s)]),
            "notes_per_sample": _mean([p["n_notes"] for p in sweep_sets[s]]),
            "memorization": {"max": max(runs, default=None), "median": float(np.median(runs)) if runs else None},
        })
    first = groups[UNCONDITIONAL]
    real_rate = degenerate(real, tokenizer, thresholds)
    choice = choose_guidance(rows, real_rate["share"])
    runs = [p["longest_training_run"] for p in real_measured]
    return {
        "settings": {"scales": args.scales, "samples_per_composer": args.adherence_samples_per_composer, **crop},
        "classifier": {**first["classifier"], "chance": 1 / len(first["classifier"]["composers"]) if first["classifier"]["composers"] else None},
        "ceiling": first["ceiling"],
        "groups": {k: {key: v[key] for key in ("per_composer", "overall", "unconditional", "confusion", "predicted")} for k, v in groups.items()},
        "rows": rows,
        "real": {
            "degenerate": real_rate,
            "syntax_error_rate_max": max((p["syntax_error_rate"] for p in real_measured), default=None),
            "memorization": {"max": max(runs, default=None), "median": float(np.median(runs)) if runs else None},
        },
        "unconditional": {"degenerate_guard_on": degenerate(drawn[UNCONDITIONAL], tokenizer, thresholds)},
        "degenerate_threshold": thresholds,
        "guard": guard,
        "choice": choice,
    }


def write_default_guidance(model_dir: str | Path, scale: float) -> Path:
    """Set config.json's `midilm_guidance_scale` in a model folder: written whole under a temporary name,
    then renamed over the old file, so a reader never sees half a config."""
    from midilm.modeling import GUIDANCE_KEY

    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config[GUIDANCE_KEY] = float(scale)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
    if (Path(model_dir) / TRAINING_CONFIG_FILE).is_file():  # a folder train.py wrote: its card states the default too
        rewrite_model_card(model_dir)
    return path


# Accompaniment ---------------------------------------------------------------------------------


ACCOMPANIMENT_METRICS = ("melody_adherence", "harmonic_fit", "beat_fit", "key_fit")


def accompaniment_pieces(pieces: list[dict], composers: list[str], per_composer: int) -> list[dict]:
    """The `per_composer` held-out pieces of each composer with the fewest notes (then by name): the
    ones a CPU accompanies in reasonable time."""
    chosen = []
    for c in composers:
        chosen += sorted((p for p in pieces if p["composer"] == c), key=lambda p: (p["n_notes"], p["source"]))[:per_composer]
    return chosen


def evaluate_accompaniment(models: dict, tokenizer, composer_map, pieces: list[dict], root: Path, defaults: dict, seed: int) -> tuple[dict, dict]:
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
            result = accompany(model, tokenizer, composer_map, melody, [piece["composer"]], SamplingSettings(seed=seed), defaults=defaults)[0]
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
    lines = [
        (f"{lik['split']} perplexity {_f(lik['trained']['perplexity'])} (unigram {_f(lik['unigram']['perplexity'])}, "
        f"ratio {_f(lik['perplexity_ratio_trained_to_unigram'])}); NLL per note {_f(lik['trained']['nll_per_note'])} nats"),
        (f"metric gap to real: trained {_f(t_dist['mean_gap'])}, random weights {_f(r_dist['mean_gap'])}; "
        f"pitch-class JS: trained {_f(t_dist['pitch_class_js'])}, random weights {_f(r_dist['pitch_class_js'])}"),
        _verdict(t_dist, r_dist),
    ]
    adherence = report.get("adherence")
    if adherence and adherence["rows"]:
        ceiling = (adherence["ceiling"] or {}).get("overall", {}).get("share")
        scales = ", ".join(f"s={r['scale']:g} {_share_cell(r['adherence'])}" for r in adherence["rows"])
        lines.append(f"composer adherence (classifier ceiling {_share_cell(ceiling)}, chance {_f(adherence['classifier']['chance'], 2)}): {scales}")
        choice = adherence["choice"]
        if choice["scale"] is not None:
            lines.append(f"guidance default: s = {choice['scale']:g}" + (f", written to {choice['written_to']}" if choice.get("written_to") else " (not written)"))
    return "\n".join(lines)


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
    defaults = sampling_defaults(args.model_dir)
    main_scale = float(args.guidance_scale if args.guidance_scale is not None else defaults["guidance_scale"])
    max_new_tokens = min(args.max_new_tokens, body_room(context_length(config)))
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
    # The same rows with COMPOSER_NONE in the composer's place: what the composer token is worth to the model
    unconditional_rows = [with_composer(ids, composer_map.none_id) for ids in rows]
    uncond_nll, _ = model_nll(model, unconditional_rows, args.batch_size, config.pad_token_id, desc="likelihood (unconditional)")
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
        "trained_unconditional": likelihood_summary(uncond_nll, tokens, notes),
        "composer_information_nats_per_token": (uncond_nll - trained_nll) / tokens if tokens else None,
        "windowed_rows": sum(len(r) > context_length(config) for r in rows),
    }
    likelihood["perplexity_ratio_trained_to_unigram"] = likelihood["trained"]["perplexity"] / likelihood["unigram"]["perplexity"]
    timings["likelihood_s"] = time.perf_counter() - tick

    # Sample the guidance sweep: every composer at each scale with the musical guard on and off (the same
    # seeds, so an unguarded sample is its guarded twin until the guard first steps in), and unconditional
    # samples for the classifier's base rate
    tick = time.perf_counter()
    sampler = Sampler(tokenizer, composer_map, config, defaults, max_new_tokens, device, args.sample_batch_size)
    sweep_names = [c for c in composers for _ in range(args.adherence_samples_per_composer)]
    jobs = [(UNCONDITIONAL, ["none"] * len(sweep_names), 1.0, True)] if args.scales else []
    jobs += [(sweep_key(s, guard), sweep_names, s, guard) for s in args.scales for guard in (True, False)]
    drawn: dict[str, list[dict]] = {}
    for name, names, scale, guard in tqdm(jobs, desc="sampling the guidance sweep", unit="set"):
        drawn[name] = sampler.sample(model, names, scale, args.seed, guard)
    timings["sweep_sampling_s"] = time.perf_counter() - tick

    # Measure the real pieces and the guarded sweep sets (music metrics, syntax, memorization)
    tick = time.perf_counter()
    measured = {"real": measure(real, tokenizer, training.index, "measuring real pieces")}
    sweep_sets = {s: measure(drawn[sweep_key(s)], tokenizer, training.index, f"measuring s={s:g}") for s in args.scales}
    timings["metrics_s"] = time.perf_counter() - tick

    # Composer adherence at each scale, and the guidance default it chooses
    adherence = None
    if args.scales:
        tick = time.perf_counter()
        # A composer with no original training piece borrows the largest onset of all.
        largest = int(training.max_notes_per_onset.max())
        thresholds = {c: int(training.max_notes_per_onset[composer_map.names.index(c)]) or largest for c in composers}
        adherence = composer_adherence(args, tokenizer, composers, real, measured["real"], drawn, sweep_sets, thresholds, bounds_from_config(config))
        adherence["choice"]["written_to"] = None
        if args.write_default_guidance and adherence["choice"]["scale"] is not None:
            adherence["choice"]["written_to"] = str(Path(args.model_dir) / "config.json")  # once the report is written (evaluate_samples.py)
        timings["adherence_s"] = time.perf_counter() - tick
    chosen = adherence["choice"]["scale"] if adherence else None
    if args.guidance_scale is not None:
        main_scale = float(args.guidance_scale)
    elif args.write_default_guidance and chosen is not None:
        main_scale = float(chosen)  # the default the model folder is about to get
    else:
        main_scale = float(defaults["guidance_scale"])

    # The main sample sets: the trained model at the main scale (generate.py's files, the sweep's set
    # at that scale, or sampled now) and the same architecture with random weights
    tick = time.perf_counter()
    per_composer = [c for c in composers for _ in range(args.num_samples_per_composer)]
    if samples_from_dir is not None:
        drawn["trained"] = [s for c in composers for s in samples_from_dir[0][c]]
        recorded = sorted(set(samples_from_dir[1]))
        trained_scale = recorded[0] if len(recorded) == 1 else None
        measured["trained"] = measure(drawn["trained"], tokenizer, training.index, "measuring trained samples")
    elif main_scale in sweep_sets:
        drawn["trained"], measured["trained"], trained_scale = drawn.pop(sweep_key(main_scale)), sweep_sets[main_scale], main_scale
    else:
        drawn["trained"], trained_scale = sampler.sample(model, per_composer, main_scale, args.seed), main_scale
        measured["trained"] = measure(drawn["trained"], tokenizer, training.index, "measuring trained samples")
    drawn["random"] = sampler.sample(random_model, per_composer, main_scale, args.seed)
    measured["random"] = measure(drawn["random"], tokenizer, training.index, "measuring random-weight samples")
    timings["sampling_s"] = time.perf_counter() - tick

    # Accompaniment (when the model was trained on it): the trained and the random-weight model write
    # the music around real held-out melodies
    accompaniment, accompaniment_skipped = None, None
    if args.accompaniment_pieces == 0:
        accompaniment_skipped = "--accompaniment_pieces 0"
    elif "accompaniment" not in dataset["train"].unique("task"):
        accompaniment_skipped = "the dataset holds no accompaniment rows (prepare_dataset.py --tasks continuation,accompaniment adds them)"
    elif "accompaniment" not in model_tasks(config):
        accompaniment_skipped = (
            f"the model was trained on {', '.join(model_tasks(config))} rows only (config.json's {TASKS_KEY}), never on accompaniment"
        )
    else:
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
        "sampling": {k: defaults[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")},
        "grammar": True,
        "guard": bool(bounds_from_config(config)),
        "device": device,
        "composers_evaluated": composers,
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
        "pieces": {**measured, "sweep": {f"{s:g}": sweep_sets[s] for s in args.scales if sweep_key(s) in drawn}},
        "comparison": comparison,
        "adherence": adherence,
        "cfg_sweep": sweep,
        "accompaniment": accompaniment,
        "accompaniment_skipped": accompaniment_skipped,
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
        ["NLL per token with COMPOSER_NONE for the composer (nats)", _f(lik["trained_unconditional"]["nll_per_token"]), "–", "–"],
        ["composer information: NLL per token without the composer minus with it (nats)", _f(lik["composer_information_nats_per_token"], 4), "–", "–"],
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
    ]
    lines += adherence_markdown(report.get("adherence"), composers)
    lines += [
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
        "## Histogram distances per guidance scale (secondary)",
        "",
        ("The composer-adherence sweep's samples (guard on), per composer, against that composer's real pieces: "
        "Jensen–Shannon divergence (bits) of the mean pitch-class and duration histograms, the mean standardised "
        "metric gap, and the pitch-class JS to the other composers' real pieces. Pitch-class histograms mostly encode "
        "key and mode, which the transposition augmentation scrambles, so these distances are not a test of "
        "conditioning: whether samples sound like their composer is read from the composer-adherence table above."),
        "",
    ]
    rows = []
    for scale, per_composer in report["cfg_sweep"].items():
        for c, r in per_composer.items():
            rows.append([scale, c, _f(r["pitch_class_js"]), _f(r["duration_js"]), _f(r["mean_gap"]), _f(r["pitch_class_js_other_composers"]), _f(r["notes"], 1),
                         f"{_f(r.get('longest_training_run_max'))} / {_f(r.get('longest_training_run_median'), 1)}"])
    lines += _table(["s", "composer", "pitch-class JS (own)", "duration JS (own)", "mean gap (own)", "pitch-class JS (others)", "notes per sample",
                     "shared run with training (max / median)"], rows)
    if report.get("accompaniment"):
        lines += accompaniment_markdown(report["accompaniment"])
    elif report.get("accompaniment_skipped"):
        lines += [f"Accompaniment: not evaluated, because {report['accompaniment_skipped']}.", ""]
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


def _rate_cell(rate: dict | None) -> str:
    """`3/48 (0.06)`: a count of pieces out of n, and its share."""
    if not rate or not rate.get("n"):
        return "–"
    return f"{rate['count']}/{rate['n']} ({rate['share']:.2f})"


def _share_cell(share: float | None, interval=None) -> str:
    if share is None:
        return "–"
    return f"{share:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def adherence_markdown(section: dict | None, composers: list[str]) -> list[str]:
    """The composer-adherence table (one row per guidance scale, between the classifier's ceiling and
    the unconditional base rate), the guidance default and why, then per-composer intervals and the
    confusion matrices (`midilm.adherence.render_markdown`)."""
    from midilm.adherence import render_markdown

    lines = ["## Composer adherence and the guidance default", ""]
    if section is None:
        return lines + ["Not measured: no guidance scales were given (--adherence_scales).", ""]
    info, real, choice = section["classifier"], section["real"], section["choice"]
    settings = section["settings"]
    not_measurable = info["not_measurable"]
    if not info["composers"]:
        reasons = "; ".join(f"{c}: {r}" for c, r in sorted(not_measurable.items()))
        lines += [f"Composer adherence is not measurable: {reasons}.", ""]
    ceiling = section["ceiling"] or {}
    ceiling_overall = ceiling.get("overall") or {}
    lines += [
        (f"An independent composer classifier (`midilm.adherence`: logistic regression on key-independent symbolic features, "
        f"trained on the training split's real pieces, through the `composer_adherence` evaluate module) judges each sample on "
        f"its first {settings['crop_length']} {settings['crop_unit']} (the median sample's length). Adherence is the share of "
        f"samples classified as their intended composer, with its 95% Wilson interval; chance is {_f(info['chance'], 2)}. Its "
        "accuracy on crops of held-out real pieces is the ceiling; unconditional samples (`COMPOSER_NONE`) show how often "
        f"each composer is heard by default. {settings['samples_per_composer']} samples per composer at each scale, sampled "
        "with the REMI grammar, and the musical guard on (and again off with the same seeds)."),
        "",
        (f"Degenerate: a piece with more notes starting at one onset than any training piece of its composer holds ("
        + ", ".join(f"{c} {n}" for c, n in section["degenerate_threshold"].items()) + "). "
        + (f"The guard's bounds (config.json's `midilm_guard`, learnt from the training split): {section['guard']['max_notes_per_onset']} "
           f"notes per onset, {section['guard']['max_notes_per_bar']} per bar. " if section.get("guard") else
           "This model carries no guard bounds (`midilm_guard`), so the guard never ran: retrain it with this train.py to get them. ")
        + "Metric gap: the music metrics' mean standardised gap to the composer's real held-out pieces (`music_metrics` "
        "evaluate module), averaged over composers. Shared run: the longest run of pitch intervals shared with one training "
        "piece at any transposition (max / median)."),
        "",
    ]
    header = ["s", "adherence [95% interval]", "mean p(intended)", *composers, "degenerate, guard on", "degenerate, guard off",
              "syntax errors (max)", "metric gap to real", "notes / sample", "shared run (max / median)"]
    per_composer_ceiling = ceiling.get("per_composer", {})

    def composer_cells(shares: dict) -> list[str]:
        return ["not measurable" if c in not_measurable else _share_cell(shares.get(c)) for c in composers]

    rows = [[
        "real held-out crops (ceiling)", _share_cell(ceiling_overall.get("share"), ceiling_overall.get("interval")),
        _f(ceiling_overall.get("mean_probability"), 2),
        *composer_cells({c: v.get("share") for c, v in per_composer_ceiling.items()}),
        _rate_cell(real["degenerate"]) + " of real pieces", "–", _f(real["syntax_error_rate_max"]), "–", "–",
        f"{_f(real['memorization']['max'])} / {_f(real['memorization']['median'], 1)}",
    ]]
    base = section["groups"].get(UNCONDITIONAL, {}).get("unconditional") or {}
    rows.append([
        "unconditional (share heard as each composer)", f"{_f(info['chance'], 2)} by construction", "–",
        *composer_cells({c: v.get("share") for c, v in base.items()}),
        _rate_cell(section["unconditional"]["degenerate_guard_on"]), "–", "–", "–", "–", "–",
    ])
    for r in section["rows"]:
        mark = " (default)" if choice.get("scale") == r["scale"] else ""
        rows.append([
            f"{r['scale']:g}{mark}", _share_cell(r["adherence"], r["interval"]), _f(r["mean_probability"], 2), *composer_cells(r["per_composer"]),
            _rate_cell(r["degenerate_guard_on"]), _rate_cell(r["degenerate_guard_off"]), _f(r["syntax_error_rate_max"]), _f(r["metric_gap"]),
            _f(r["notes_per_sample"], 1), f"{_f(r['memorization']['max'])} / {_f(r['memorization']['median'], 1)}",
        ])
    lines += _table(header, rows)
    if choice.get("scale") is None:
        lines += [f"Guidance default: unchanged, because {choice['reason']}.", ""]
    else:
        where = (f"written to `{choice['written_to']}` (`midilm_guidance_scale`), which generate.py now uses by default"
                 if choice.get("written_to") else "not written to the model folder (evaluate_samples.py --write_default_guidance writes it)")
        lines += [f"Guidance default: **s = {choice['scale']:g}**, {where}. Why: {choice['reason']}.", ""]
    labels = {k: ("unconditional" if k == UNCONDITIONAL else k) for k in section["groups"]}
    detail = {"classifier": info, "ceiling": section["ceiling"], "groups": {labels[k]: v for k, v in section["groups"].items()}}
    lines += ["### Per composer, with intervals, and the confusion matrices", "", render_markdown(detail).rstrip(), ""]
    return lines
