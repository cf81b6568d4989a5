"""What makes the demo model condition on its composer: one lever at a time, measured.

    python bench/bench_conditioning.py --work /tmp/exp --only baseline,dropout-0.3   # run these
    python bench/bench_conditioning.py --work /tmp/exp --table                       # the record so far
    python bench/bench_conditioning.py --list                                        # the experiments

Each experiment prepares its data variant (once per variant, shared), trains the demo's model with one
setting changed (make demo's flags otherwise: 1,500 steps, evaluation every 500), and runs
evaluate_samples.py's guidance sweep on it (scales 1, 2, 3; 32 samples per composer per scale, 256
tokens, the guard on and off). Its summary (work/NAME/summary.json) holds the validation NLL per token
with and without the composer token, their difference (composer information), the classifier's
ceiling, adherence at s = 1 and at the scale the sweep chooses, per composer, and the training time.
The default schedule became warmup-stable-decay on 2026-12-01 (schedule-wsd); the runs recorded before then
trained with the cosine. baseline and long-3000 name the cosine, so they rerun as recorded; the other levers
now rerun on top of warmup-stable-decay.
Run two experiments side by side with OMP_NUM_THREADS=1 each on a 2-core machine; the training time
is then not the demo's (see --table's note).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# make demo's data: the three composers, 80 files each, transposed copies, both tasks.
DEMO_DATA = [
    "--composers",
    "bach,monteverdi,palestrina",
    "--min_pieces_per_composer",
    "10",
    "--max_seq_len",
    "512",
    "--tasks",
    "continuation,accompaniment",
]
DATA = {
    "d80": [*DEMO_DATA, "--max_files_per_composer", "80", "--augment"],
    "d240": [*DEMO_DATA, "--max_files_per_composer", "240", "--augment"],
    "d240-plain": [*DEMO_DATA, "--max_files_per_composer", "240"],
}
EXPERIMENTS = {
    "baseline": (
        "d80",
        ["--lr_scheduler_type", "cosine"],
    ),  # the demo's defaults until 2026-12-01 (cosine), as recorded
    "dropout-0.1": ("d80", ["--composer_dropout", "0.1"]),
    "dropout-0.3": ("d80", ["--composer_dropout", "0.3"]),
    "dropout-0.6": ("d80", ["--composer_dropout", "0.6"]),
    "balanced": ("d80", ["--composer_balanced"]),
    "lr-2e-3": ("d80", ["--learning_rate", "0.002"]),
    "lr-5e-4": ("d80", ["--learning_rate", "0.0005"]),
    # The schedule: hold the peak rate and decay over the last 20% of steps (warmup-stable-decay), instead of a
    # cosine that spends the last third of the run below a quarter of its peak.
    "schedule-wsd": (
        "d80",
        ["--lr_scheduler_type", "warmup_stable_decay", "--lr_scheduler_kwargs", '{"num_decay_steps": 300}'],
    ),
    "wide": ("d80", ["--model_overrides", '{"hidden_size": 192, "intermediate_size": 768}']),
    "deep": ("d80", ["--model_overrides", '{"num_hidden_layers": 8}']),
    "pieces-240": ("d240", []),
    "pieces-240-balanced": ("d240", ["--composer_balanced"]),
    "pieces-240-plain": ("d240-plain", []),
    # The steps curve: one longer cosine run whose checkpoints are judged (--curve); a checkpoint's learning
    # rate has not decayed yet, so each point is a lower bound for a run of that many steps.
    "long-3000": (
        "d80",
        [
            "--lr_scheduler_type",
            "cosine",
            "--max_steps",
            "3000",
            "--eval_steps",
            "750",
            "--save_steps",
            "750",
            "--save_total_limit",
            "10",
        ],
    ),
}
# Sampling levers: another experiment's trained model, sampled with other generation_config.json values.
SAMPLING = {
    "baseline-temperature-0.7": ("baseline", {"temperature": 0.7}),
    "baseline-temperature-0.5": ("baseline", {"temperature": 0.5}),
    "baseline-top-p-0.8": ("baseline", {"top_p": 0.8}),
    "baseline-no-repetition-penalty": ("baseline", {"repetition_penalty": 1.0}),
    "baseline-temperature-0.7-no-repetition-penalty": ("baseline", {"temperature": 0.7, "repetition_penalty": 1.0}),
}
STEPS = 1500
SCALES = "1,2,3"
SAMPLES = 32
TOKENS = 256


def run(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def prepare(work: Path, variant: str) -> Path:
    folder = work / f"data-{variant}"
    if not (folder / "data" / "dataset_dict.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        run([sys.executable, str(ROOT / "prepare_dataset.py"), *DATA[variant]], folder, folder / "log.txt")
    return folder


def resample(work: Path, name: str, steps: int) -> Path:
    """A copy of the base experiment's model whose generation_config.json holds the sampling lever."""
    base, values = SAMPLING[name]
    experiment(work, base, steps)
    model = work / name / "model"
    if not model.exists():
        shutil.copytree(work / base / "model", model, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
        path = model / "generation_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2))
    return model


def experiment(work: Path, name: str, steps: int) -> dict:
    variant, train_flags = EXPERIMENTS[SAMPLING[name][0]] if name in SAMPLING else EXPERIMENTS[name]
    data = prepare(work, variant)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    model = resample(work, name, steps) if name in SAMPLING else folder / "model"
    train_s = None
    if not (model / "model.safetensors").exists():
        train_s = run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "--dataset_dir",
                str(data / "data"),
                "--tokenizer_dir",
                str(data / "tokenizer"),
                "--output_dir",
                str(model),
                "--max_steps",
                str(steps),
                "--eval_steps",
                "500",
                "--save_steps",
                "500",
                "--samples_per_composer",
                "0",
                *train_flags,
            ],
            folder,
            log,
        )
    summary = summarize(name, model, sweep(model, data, folder / "eval", log), train_s)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def sweep(model: Path, data: Path, out: Path, log: Path) -> dict:
    """evaluate_samples.py's guidance sweep on `model` into `out` (a finished report is reused): its adherence
    section."""
    if not (out / "report.json").exists():
        run(
            [
                sys.executable,
                str(ROOT / "evaluate_samples.py"),
                "--model_dir",
                str(model),
                "--dataset_dir",
                str(data / "data"),
                "--output_dir",
                str(out),
                "--adherence_scales",
                SCALES,
                "--adherence_samples_per_composer",
                str(SAMPLES),
                "--max_new_tokens",
                str(TOKENS),
                "--num_samples_per_composer",
                "2",
                "--accompaniment_pieces",
                "0",
            ],
            out.parent,
            log,
        )
    return json.loads((out / "report.json").read_text())["adherence"]


def adherence_figures(adherence: dict) -> dict:
    """Adherence at s = 1 and at the scale the sweep chose, overall and per composer; degenerate samples per scale."""
    rows = {row["scale"]: row for row in adherence["rows"]}
    chosen = adherence["choice"]["scale"]
    return {
        "s1": rows[1.0]["adherence"],
        "s1_per_composer": rows[1.0]["per_composer"],
        "chosen_scale": chosen,
        "chosen": rows[chosen]["adherence"],
        "chosen_per_composer": rows[chosen]["per_composer"],
        "degenerate_guard_on": {s: r["degenerate_guard_on"]["count"] for s, r in rows.items()},
        "degenerate_guard_off": {s: r["degenerate_guard_off"]["count"] for s, r in rows.items()},
    }


def summarize(name: str, model: Path, adherence: dict, train_s: float | None) -> dict:
    results = json.loads((model / "all_results.json").read_text())
    if name in SAMPLING:
        base, values = SAMPLING[name]
        variant, flags = EXPERIMENTS[base][0], [f"{base}'s model, sampled with {json.dumps(values)}"]
    else:
        variant, flags = EXPERIMENTS[name]
    return {
        "name": name,
        "data": variant,
        "flags": " ".join(flags) or "(demo defaults)",
        "train_pieces": adherence["classifier"]["training"]["train_pieces"],
        "eval_loss": results["eval_loss"],
        "eval_uncond_loss": results.get("eval_uncond_loss"),
        "composer_information": results.get("eval_composer_information"),
        "train_runtime_s": results.get("train_runtime", train_s),
        "ceiling": adherence["ceiling"]["overall"]["share"],
        "ceiling_per_composer": {c: v["share"] for c, v in adherence["ceiling"]["per_composer"].items()},
        **adherence_figures(adherence),
        "n_per_composer": SAMPLES,
    }


def curve(work: Path, name: str) -> list[dict]:
    """Adherence of each checkpoint of a finished experiment (the sweep as `experiment` runs it)."""
    variant = EXPERIMENTS[name][0]
    data, folder = work / f"data-{variant}", work / name
    points = []
    for checkpoint in sorted((folder / "model").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        for file in ("tokenizer.json", "composers.json"):
            shutil.copy2(folder / "model" / file, checkpoint / file)
        adherence = sweep(checkpoint, data, folder / f"eval-{checkpoint.name}", folder / "log.txt")
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        evals = [e for e in state["log_history"] if "eval_loss" in e and e["step"] == state["global_step"]]
        points.append(
            {
                "step": state["global_step"],
                "eval_loss": evals[-1]["eval_loss"] if evals else None,
                "composer_information": evals[-1].get("eval_composer_information") if evals else None,
                **adherence_figures(adherence),
            }
        )
    (folder / "curve.json").write_text(json.dumps(points, indent=2))
    return points


def table(work: Path) -> str:
    lines = [
        (
            "| experiment | data | change | val NLL/token (cond / uncond) | composer information (nats/token) "
            "| ceiling | adherence s = 1 (per composer) | chosen s: adherence (per composer) | train time (s) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [*EXPERIMENTS, *SAMPLING]:
        path = work / name / "summary.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        per = lambda d: " / ".join(f"{v:.2f}" for v in d.values())  # noqa: E731
        lines.append(
            f"| {name} | {s['data']} | `{s['flags']}` | {s['eval_loss']:.3f} / {s['eval_uncond_loss']:.3f} | "
            f"{s['composer_information']:.4f} | "
            f"{s['ceiling']:.2f} | {s['s1']:.2f} ({per(s['s1_per_composer'])}) | s = {s['chosen_scale']:g}: "
            f"{s['chosen']:.2f} ({per(s['chosen_per_composer'])}) | "
            f"{s['train_runtime_s']:.0f} |"
        )
    composers = "bach / monteverdi / palestrina"
    lines.append(
        f"\nPer composer: {composers}. {SAMPLES} samples per composer per scale, {TOKENS} tokens; {STEPS} steps "
        "unless the change says otherwise. "
        f"{platform.machine()}, {os.cpu_count()} cores, {datetime.date.today()}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("conditioning_runs"),
        help="Folder of the data variants and the runs (reused: a finished stage is not redone).",
    )
    parser.add_argument("--only", default="", help=f"Comma-separated experiments to run: {', '.join(EXPERIMENTS)}.")
    parser.add_argument("--steps", type=int, default=STEPS, help="Training steps (make demo's DEMO_STEPS).")
    parser.add_argument(
        "--curve", default="", help="Judge every checkpoint of these finished experiments (the steps curve)."
    )
    parser.add_argument("--table", action="store_true", help="Print the Markdown table of the finished experiments.")
    parser.add_argument("--list", action="store_true", help="List the experiments and exit.")
    args = parser.parse_args()
    if args.list:
        for name, (variant, flags) in EXPERIMENTS.items():
            print(f"{name}: data {variant} ({' '.join(DATA[variant])}); train {' '.join(flags) or '(defaults)'}")
        for name, (base, values) in SAMPLING.items():
            print(f"{name}: {base}'s model, sampled with {values}")
        return
    unknown = [n for n in args.only.split(",") if n and n not in EXPERIMENTS and n not in SAMPLING]
    if unknown:
        sys.exit(f"--only: unknown experiment(s) {', '.join(unknown)}; see --list")
    for name in filter(None, args.only.split(",")):
        print(json.dumps(experiment(args.work, name, args.steps)), flush=True)
    for name in filter(None, args.curve.split(",")):
        for point in curve(args.work, name):
            print(json.dumps(point), flush=True)
    if args.table:
        print(table(args.work))


if __name__ == "__main__":
    main()
