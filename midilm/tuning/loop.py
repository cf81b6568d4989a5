"""Rounds of sample → score → pair → DPO, each a checkpoint; the tuned model is a normal midilm folder.

    tune(TuneArguments(model_dir="model_output", dataset_dir="data", output_dir="model_tuned"), ScoreWeights())

Work happens in `<output_dir>.tuning/` (one folder per finished round, TensorBoard logs); a killed run,
started again with the same flags, resumes after its last finished round. The finished folder is built
under a temporary name and renamed to `output_dir` at the end, so `output_dir` either holds a whole tuned
model or does not exist.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from midilm.core.errors import InputError
from midilm.core.modeling import TRAINING_CONFIG_FILE, context_length, load_midilm_dir, sampling_defaults
from midilm.core.outputs import replace_dir, staging_dir, write_file_atomic
from midilm.core.tokenizer import load_tokenizer
from midilm.evaluation.composer_classifier.features import typical_length
from midilm.evaluation.composer_classifier.judging import wilson_interval
from midilm.evaluation.memorization import PitchReader
from midilm.evaluation.ngram_classifier import fit_ngram_classifier
from midilm.evaluation.samples import Sampler
from midilm.metrics.piece import median_bars, piece_metrics, pooled_vertical_seconds
from midilm.sampling.generation import load_model
from midilm.sampling.guard import onset_counts
from midilm.training.hub import TUNING_CARD, rewrite_model_card
from midilm.tuning.arguments import TuneArguments
from midilm.tuning.report import TUNING_KEY, TUNING_REPORT, tuning_card, verdict
from midilm.tuning.score import (
    Reference,
    ScoreWeights,
    build_pairs,
    build_reference,
    load_dataset_for,
    score_samples,
)

ROUND_FILE = "round.json"  # written last in a round's folder: the round is finished

TUNING_CONFIG = "tuning_config.json"


def work_dir(args: TuneArguments) -> Path:
    out = Path(args.output_dir)
    return out.parent / f"{out.name}.tuning"


def check_inputs(args: TuneArguments):
    """Every refusal before anything is written: the output folder, the model folder, its dataset."""
    output = Path(args.output_dir)
    if output.exists() and not args.overwrite:
        raise InputError(
            f"--output_dir {output} already exists; pass --overwrite to replace it, or choose another folder"
        )
    config, tokenizer, _ = load_midilm_dir(args.model_dir)
    _, composer_map = load_tokenizer(args.model_dir)  # composers.json: the dataset's ClassLabel order
    dataset_dir = args.dataset_dir
    if dataset_dir is None:
        recorded = Path(args.model_dir) / TRAINING_CONFIG_FILE
        dataset_dir = json.loads(recorded.read_text())["data"]["dataset_dir"] if recorded.is_file() else None
        if dataset_dir is None or not Path(dataset_dir).exists():
            raise InputError(
                f"--model_dir {args.model_dir}: its dataset ({dataset_dir or 'not recorded'}) is not there; pass "
                "--dataset_dir, the folder prepare_dataset.py wrote for it"
            )
    if not Path(dataset_dir).exists():
        raise InputError(
            f"--dataset_dir {dataset_dir}: no such folder; tuning needs the model's own dataset "
            "(prepare_dataset.py's output)"
        )
    load_dataset_for(dataset_dir, tokenizer, composer_map)  # composers and splits
    return config, tokenizer, composer_map, dataset_dir


def finished_rounds(work: Path) -> list[dict]:
    """The records of the rounds finished in `work`, in order (a round without its round.json is unfinished)."""
    out = []
    while (work / f"round_{len(out) + 1}" / ROUND_FILE).is_file():
        out.append(json.loads((work / f"round_{len(out) + 1}" / ROUND_FILE).read_text()))
    return out


def adherence_of(scored: list[dict], samples: list[dict], reference: Reference) -> dict:
    """Share of each measurable composer's samples the reward classifier hears as it (argmax), with intervals."""
    classes = reference.measurable
    out = {}
    for c in classes:
        mine = [s for s, x in zip(scored, samples) if x["composer"] == c]
        hits = sum(s["parts"]["argmax"] == c for s in mine)
        out[c] = {
            "share": hits / len(mine) if mine else None,
            "n": len(mine),
            "interval": list(wilson_interval(hits, len(mine)) or []),
        }
    return out


def describe_samples(samples: list[dict], reference: Reference, tokenizer, independent, composers: list[str]) -> dict:
    """Before/after figures of a sample set, per composer: adherence by the reward classifier and by the
    independent n-gram classifier, vertical seconds (real beside), notes per sample, memorization, clusters."""
    reader = PitchReader.for_tokenizer(tokenizer)
    reward = reference.classifier
    p_reward = reward.probabilities([s["score"] for s in samples])
    p_indep = independent.probabilities([s["score"] for s in samples])
    out = {}
    for c in composers:
        idx = [i for i, s in enumerate(samples) if s["composer"] == c]
        if not idx:
            continue
        metrics = [piece_metrics(samples[i]["score"]) for i in idx]
        runs = [reference.index.longest_run(reader.pitches(samples[i]["ids"])).length for i in idx]
        row = {"n": len(idx)}
        for name, clf, p in (("reward_classifier", reward, p_reward), ("independent_classifier", independent, p_indep)):
            if c in clf.composers:
                hits = int(sum(clf.composers[int(np.argmax(p[i]))] == c for i in idx))
                row[name] = {
                    "share": hits / len(idx),
                    "interval": list(wilson_interval(hits, len(idx))),
                    "ceiling": (clf.ceiling.get("per_composer", {}).get(c) or {}).get("share"),
                }
            else:
                row[name] = None
        row["vertical_seconds"] = pooled_vertical_seconds(metrics)
        row["vertical_seconds_real"] = reference.real_seconds.get(c)
        row["notes_per_sample"] = float(np.mean([m["n_notes"] for m in metrics]))
        row["memorization"] = {
            "max": max(runs),
            "median": float(np.median(runs)),
            "real_passages_max": reference.copy_limit,
        }
        row["degenerate"] = int(
            sum(
                onset_counts(tokenizer, samples[i]["ids"])[0] > reference.max_notes_per_onset.get(c, 10**6) for i in idx
            )
        )
        out[c] = row
    return out


@dataclass
class Setup:
    """What every round reads: the frozen reference model, the sampler, and the score's reference data."""

    config: object
    tokenizer: object
    dataset_dir: str
    base: torch.nn.Module
    sampler: Sampler
    scale: float
    max_new: int
    reference: Reference
    independent: object
    tuned: list[str]
    targets: dict[str, float]

    def draw(self, policy, per_composer: int, seed: int) -> list[dict]:
        """`per_composer` samples of every tuned composer from `policy`."""
        return self.sampler.sample(policy, [c for c in self.tuned for _ in range(per_composer)], self.scale, seed)

    def describe(self, samples: list[dict]) -> dict:
        return describe_samples(samples, self.reference, self.tokenizer, self.independent, self.tuned)


def open_work(args: TuneArguments, weights: ScoreWeights, dataset_dir: str, log) -> tuple[Path, list[dict]]:
    """The work folder and its finished rounds; a folder left by a tuning with other settings is refused."""
    work = work_dir(args)
    settings = {"args": asdict(args), "weights": asdict(weights), "dataset_dir": dataset_dir}
    if (work / TUNING_CONFIG).is_file():
        before = json.loads((work / TUNING_CONFIG).read_text())
        free = {"rounds": None, "overwrite": None}  # what a resumed run may change
        if {**before["args"], **free} != {**settings["args"], **free} or before["weights"] != settings["weights"]:
            raise InputError(
                f"{work} holds an unfinished tuning with other settings; start it again with those, or delete {work}"
            )
    done = finished_rounds(work) if work.is_dir() else []
    if done:
        log(f"resuming: {len(done)} round(s) of {work} finished")
    work.mkdir(parents=True, exist_ok=True)
    write_file_atomic(work / TUNING_CONFIG, json.dumps(settings, indent=2).encode())
    return work, done


def prepare(args: TuneArguments, config, tokenizer, composer_map, dataset_dir: str, device: str, log) -> Setup:
    """Load the reference model and read the score's reference data once; say which composers stay untuned."""
    base = load_model(args.model_dir, device)
    defaults = sampling_defaults(args.model_dir)
    scale = defaults["guidance_scale"] if args.guidance_scale is None else args.guidance_scale
    max_new = min(args.max_new_tokens, context_length(config) - 2)
    sampler = Sampler(tokenizer, composer_map, config, defaults, max_new, device, args.sample_batch_size)
    # a few samples set the classifier's crop length: the notes a sample of this length holds
    probe = sampler.sample(base, [c for c in composer_map.names for _ in range(2)], scale, args.seed + 999)
    crop = typical_length([s["score"] for s in probe], "notes")
    # copies are judged against real held-out passages as long as the samples (in notes), as the report judges them
    bars = median_bars([piece_metrics(s["score"]) for s in probe])
    reference = build_reference(dataset_dir, tokenizer, composer_map, crop, crop, bars, seed=args.seed)
    independent = fit_ngram_classifier(
        reference.train_pieces, reference.heldout_scores, crop_length=crop, seed=args.seed
    )
    tuned = [c for c in composer_map.names if c in reference.measurable]
    for c, reason in sorted(reference.not_measurable.items()):
        log(f"warning: {c} is left untuned: the classifier cannot measure it ({reason})")
    if not tuned:
        raise InputError(
            f"--dataset_dir {dataset_dir}: no composer is measurable by the classifier, so nothing can be tuned"
        )
    ceiling = reference.classifier.ceiling["per_composer"]
    targets = {c: args.target_ratio * (ceiling[c]["share"] or 0) for c in tuned}
    return Setup(config, tokenizer, dataset_dir, base, sampler, scale, max_new, reference, independent, tuned, targets)


def stop_reason(r: int, adherence: dict, history: list[dict], setup: Setup, args: TuneArguments) -> str | None:
    """Why round `r` should not run: every composer at its target, or adherence no higher than a round ago."""
    if not args.stop_early:
        return None
    if all(adherence[c]["share"] >= setup.targets[c] for c in setup.tuned):
        return f"before round {r}: every tuned composer at or above {args.target_ratio:g} x the classifier's ceiling"
    now = np.mean([adherence[c]["share"] for c in setup.tuned])
    if history and now <= (last := np.mean([history[-1]["adherence"][c]["share"] for c in setup.tuned])):
        return f"before round {r}: adherence stopped rising ({now:.2f} after {last:.2f})"
    return None


def dpo_round(policy, setup: Setup, samples, pairs, args: TuneArguments, work: Path, r: int, device: str) -> dict:
    """One round's DPO on its pairs, against the model before tuning; TensorBoard gets TRL's per-step rewards."""
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard and TRL: loaded only when tuning
    from transformers.integrations import TensorBoardCallback
    from trl import DPOConfig

    from midilm.tuning.dpo import preference_rows, run_dpo

    dpo_args = DPOConfig(
        output_dir=str(work / f".round_{r}.trainer"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.dpo_epochs,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        beta=args.beta,
        max_length=context_length(setup.config),
        gradient_checkpointing=False,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed + r,
        disable_tqdm=True,
        use_cpu=device == "cpu",
    )
    # TRL logs rewards/chosen, rewards/rejected, rewards/margins and rewards/accuracies per step, one run per round
    board = TensorBoardCallback(SummaryWriter(str(work / "runs" / f"dpo_round_{r}")))
    result = run_dpo(policy, setup.base, setup.config, preference_rows(samples, pairs), dpo_args, callbacks=[board])
    shutil.rmtree(work / f".round_{r}.trainer", ignore_errors=True)
    return result


def run_round(r: int, policy, setup: Setup, args, weights, work: Path, writer, history: list[dict], device: str):
    """Sample → score → pair → DPO, then the round's checkpoint.

    Returns (the round's record, or None when it did not run; why it did not; the samples it drew)."""
    tick = time.perf_counter()
    samples = setup.draw(policy, args.samples_per_composer, args.seed + 1000 * r)
    scored = score_samples(samples, setup.reference, setup.tokenizer, weights, setup.max_new)
    adherence = adherence_of(scored, samples, setup.reference)
    for c in setup.tuned:
        writer.add_scalar(f"adherence/{c}", adherence[c]["share"], r - 1)
    writer.add_scalar("score/mean", float(np.mean([s["total"] for s in scored])), r - 1)
    if reason := stop_reason(r, adherence, history, setup, args):
        return None, reason, samples
    pairs = build_pairs(samples, scored, args.pair_rule, args.pair_fraction, args.min_margin)
    if not pairs:
        return None, f"before round {r}: no pair with a score margin of {args.min_margin} or more", samples
    dpo = dpo_round(policy, setup, samples, pairs, args, work, r, device)
    for k, v in dpo.items():
        writer.add_scalar(f"dpo/{k}", v, r)
    writer.flush()
    record = {
        "round": r,
        "samples": len(samples),
        "pairs": len(pairs),
        "pairs_per_composer": {c: sum(p["composer"] == c for p in pairs) for c in setup.tuned},
        "adherence": adherence,
        "mean_score": float(np.mean([s["total"] for s in scored])),
        "mean_margin": float(np.mean([p["margin"] for p in pairs])),
        "dpo": dpo,
        "seconds": time.perf_counter() - tick,
    }
    if r == 1:  # the round's samples are the model before tuning's: the "before" of the table
        record["before"] = setup.describe(samples)
    # Checkpoint: the round's model folder, then its record (written last: the round is finished)
    round_dir = work / f"round_{r}"
    shutil.rmtree(round_dir, ignore_errors=True)
    save_model_folder(policy, args.model_dir, round_dir)
    write_file_atomic(round_dir / ROUND_FILE, json.dumps(record, indent=2).encode())
    return record, None, samples


def tune(args: TuneArguments, weights: ScoreWeights, log=print) -> dict:
    """Run (or resume) the rounds and write the tuned model folder; returns the tuning record."""
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard: loaded only when tuning

    started = time.perf_counter()
    config, tokenizer, composer_map, dataset_dir = check_inputs(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work, history = open_work(args, weights, dataset_dir, log)
    setup = prepare(args, config, tokenizer, composer_map, dataset_dir, device, log)
    writer = SummaryWriter(str(work / "runs" / "tune"))
    policy = load_model(work / f"round_{len(history)}" if history else Path(args.model_dir), device)
    reason, samples = None, None
    for r in range(len(history) + 1, args.rounds + 1):
        record, reason, samples = run_round(r, policy, setup, args, weights, work, writer, history, device)
        if record is None:
            break
        history.append(record)
        log(
            f"round {r}: {record['pairs']} pairs, adherence before it "
            + ", ".join(f"{c} {record['adherence'][c]['share']:.2f}" for c in setup.tuned)
            + f", DPO margin {record['dpo']['rewards/margins']:.3f}, {record['seconds']:.0f} s"
        )
    # After: the tuned model's own samples (those the loop stopped on, else fresh ones, seeded after the last round's)
    if reason is None:
        samples = setup.draw(policy, args.samples_per_composer, args.seed + 1000 * (args.rounds + 1))
    after = setup.describe(samples)
    before = history[0]["before"] if history else after
    for c in setup.tuned:
        for name in ("reward_classifier", "independent_classifier"):
            if after[c].get(name):
                writer.add_scalar(f"after/{name}/{c}", after[c][name]["share"], len(history))
    writer.close()
    tuning = {
        "base_model": str(Path(args.model_dir).resolve()),
        "dataset_dir": str(dataset_dir),
        "rounds": len(history),
        "rounds_asked": args.rounds,
        "stopped": reason or f"after {len(history)} round(s) (--rounds {args.rounds})",
        "samples_per_composer": args.samples_per_composer,
        "pairs_per_round": [h["pairs"] for h in history],
        "guidance_scale": setup.scale,
        "tuned_composers": setup.tuned,
        "untuned_composers": setup.reference.not_measurable,
        "targets": setup.targets,
        "weights": asdict(weights),
        "settings": asdict(args),
        "reference": setup.reference.summary(),
        "before_after": {"before": before, "after": after, "verdict": verdict(before, after, setup.tuned)},
        "wall_seconds": time.perf_counter() - started,
        "round_history": history,
    }
    write_tuned_folder(policy, args, tuning, work)
    return tuning


def save_model_folder(model, base_dir: str | Path, target: Path, tuning: dict | None = None) -> None:
    """`model` as a midilm folder: the base folder's files (tokenizer, composers, training config, card,
    generation config) with the model's weights and config.json written by `save_pretrained`."""
    shutil.copytree(base_dir, target, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "*.safetensors", "*.bin"))
    if tuning is not None:
        setattr(
            model.config,
            TUNING_KEY,
            {k: v for k, v in tuning.items() if k not in ("round_history", "settings", "reference")},
        )
    model.save_pretrained(target)


def write_tuned_folder(policy, args: TuneArguments, tuning: dict, work: Path) -> None:
    """The finished folder, whole or not at all: staged, then renamed to --output_dir; the work folder goes."""
    final = Path(args.output_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(final) as tmp:
        shutil.rmtree(tmp)
        save_model_folder(policy, args.model_dir, tmp, tuning)
        if (work / "runs").is_dir():
            shutil.copytree(work / "runs", tmp / "runs" / "tuning")
        (tmp / TUNING_REPORT).write_text(json.dumps(tuning, indent=2) + "\n")
        # the card's tuning section also stands alone, so a card written anew (a new guidance default, a Hub push) keeps
        # it
        (tmp / TUNING_CARD).write_text(tuning_card(tuning))
        if (tmp / TRAINING_CONFIG_FILE).is_file():
            rewrite_model_card(tmp)
        else:
            (tmp / "README.md").write_text(tuning_card(tuning))
        replace_dir(tmp, final)
        tmp.mkdir()  # staging_dir removes it
    shutil.rmtree(work, ignore_errors=True)
