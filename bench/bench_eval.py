"""Evaluation at scale: time and peak memory of `evaluate_samples.py` against the size of the training split.

    python bench/bench_eval.py --files 1000,10000             # build, prepare, train 20 steps, evaluate, per size
    python bench/bench_eval.py --dataset_dir D --tokenizer_dir T --model_dir M  # an existing dataset and model

For each N, a corpus of N files from bench/bench_scale.py's `build_corpus` (transposed, re-timed,
cropped copies of music21 pieces in 237 composer folders, kept and reused under --corpus_dir) is
prepared with prepare_dataset.py (--augment, so the training split holds transposed copies as users'
do), a tiny model is trained for --max_steps, and evaluate_samples.py runs on it with few samples of
a few composers: sampling does not depend on N, so what grows with N shows. The evaluation runs as a
subprocess whose memory is polled every 0.05 s from /proc: resident memory in all (VmRSS), and its
two parts, anonymous (RssAnon: Python objects, arrays, the model) and file-backed (RssFile: mapped
Arrow files and libraries, which the kernel can drop at any time). Prints a Markdown block for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def run(command: list[str], what: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def status_kb(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def measured_run(command: list[str]) -> dict:
    """Wall seconds and peak memory (MB) of one process (evaluate_samples.py starts no workers)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    while process.poll() is None:
        try:
            for key, value in status_kb(process.pid).items():
                peak[key] = max(peak[key], value)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    stdout, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"evaluate_samples.py failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, **{k: v / 1024 for k, v in peak.items()}}


def build_corpus(root: Path, n_files: int) -> Path:
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "bench" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_corpus(root, n_files)


def prepare_and_train(n_files: int, corpus_dir: Path, work: Path, args) -> tuple[Path, Path, Path, dict]:
    midi_dir = build_corpus(corpus_dir / f"n{n_files}", n_files)
    data, tokenizer, model = work / "data", work / "tokenizer", work / "model"
    timings = {
        "prepare_s": run(
            [
                sys.executable,
                "prepare_dataset.py",
                "--midi_dir",
                str(midi_dir),
                "--output_dir",
                str(data),
                "--tokenizer_dir",
                str(tokenizer),
                "--num_proc",
                "2",
                "--augment",
                "true",
                "--overwrite",
                "true",
            ],
            "prepare",
        )
    }
    timings["train_s"] = run(
        [
            sys.executable,
            "train.py",
            "--dataset_dir",
            str(data),
            "--tokenizer_dir",
            str(tokenizer),
            "--output_dir",
            str(model),
            "--model_preset",
            "tiny",
            "--max_steps",
            str(args.max_steps),
            "--per_device_train_batch_size",
            "4",
            "--samples_per_composer",
            "0",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--dataloader_num_workers",
            "0",
            "--report_to",
            "none",
        ],
        "train",
    )
    return data, tokenizer, model, timings


def split_sizes(data: Path) -> dict:
    from datasets import load_from_disk

    dataset = load_from_disk(str(data))
    train = dataset["train"]
    bytes_on_disk = sum(Path(f["filename"]).stat().st_size for f in train.cache_files)
    return {
        "train_rows": train.num_rows,
        "train_mb": bytes_on_disk / 2**20,
        "validation_rows": dataset["validation"].num_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="1000,10000", help="corpus sizes to build, prepare, train and evaluate")
    parser.add_argument(
        "--corpus_dir",
        default=str(Path(tempfile.gettempdir()) / "midilm_scale"),
        help="built corpora are kept here and reused",
    )
    parser.add_argument("--work_dir", help="keep the prepared datasets and models here (default: a temporary folder)")
    parser.add_argument(
        "--dataset_dir", help="evaluate this prepared dataset instead of building one (with --model_dir)"
    )
    parser.add_argument("--model_dir")
    parser.add_argument("--max_steps", type=int, default=20)
    parser.add_argument(
        "--composers", type=int, default=2, help="evaluate this many composers (those with the most training pieces)"
    )
    parser.add_argument("--samples", type=int, default=2, help="--num_samples_per_composer")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    args = parser.parse_args()

    cases = []  # (label, data, model, timings)
    with tempfile.TemporaryDirectory() as tmp:
        work_root = Path(args.work_dir or tmp)
        if args.dataset_dir:
            if not args.model_dir:
                parser.error("--dataset_dir needs --model_dir")
            cases.append((Path(args.dataset_dir).name, Path(args.dataset_dir), Path(args.model_dir), {}))
        else:
            for n in [int(x) for x in args.files.split(",")]:
                data, _, model, timings = prepare_and_train(n, Path(args.corpus_dir), work_root / f"n{n}", args)
                print(
                    f"N={n}: prepared in {timings['prepare_s']:.0f} s, trained in {timings['train_s']:.0f} s",
                    file=sys.stderr,
                )
                cases.append((f"{n:,} files", data, model, timings))

        results = []
        for label, data, model, timings in cases:
            pieces = json.loads((model / "composers.json").read_text())
            entries = pieces["composers"] if isinstance(pieces, dict) else pieces
            ranked = sorted((e for e in entries if e.get("pieces")), key=lambda e: -e["pieces"])
            composers = ",".join(e["composer"] for e in ranked[: args.composers])
            out = work_root / f"eval_{len(results)}"
            load_before = os.getloadavg()
            measured = measured_run(
                [
                    sys.executable,
                    "evaluate_samples.py",
                    "--model_dir",
                    str(model),
                    "--dataset_dir",
                    str(data),
                    "--output_dir",
                    str(out),
                    "--composers",
                    composers,
                    "--num_samples_per_composer",
                    str(args.samples),
                    "--max_new_tokens",
                    str(args.max_new_tokens),
                    "--guidance_scales",
                    "",
                    "--accompaniment_pieces",
                    "0",
                    "--overwrite",
                    "true",
                ]
            )
            report = json.loads((out / "report.json").read_text())
            results.append((label, data, composers, measured, report, timings, load_before, os.getloadavg()))
            print(f"{label}: {measured['seconds']:.1f} s, peak RSS {measured['VmRSS']:.0f} MB", file=sys.stderr)

        lines = [
            (
                f"### Evaluation at scale — {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}"
            ),
            "",
            f"- command: `python {' '.join(sys.argv)}`",
            (
                f"- evaluate_samples.py with {args.samples} samples of {args.composers} composers (the most training "
                "pieces), "
                f"{args.max_new_tokens} new tokens, no guidance sweep, no accompaniment; a tiny model trained "
                f"{args.max_steps} steps"
            ),
            (
                "- peak memory of the evaluation process, polled every 0.05 s: resident in all (VmRSS), anonymous "
                "(RssAnon), file-backed (RssFile: mapped Arrow and libraries)"
            ),
            "",
            "| corpus | train rows | train Arrow (MB) | memorization index: pieces, intervals, MB | eval s | "
            "training scan s | decode held-out s | "
            "likelihood s | sampling s | metrics s | peak VmRSS (MB) | peak RssAnon (MB) | peak RssFile (MB) | load "
            "before → after |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for label, data, _, m, report, _, before, after in results:
            sizes, index, t = split_sizes(data), report["data"]["memorization_index"], report["timings"]
            lines.append(
                f"| {label} | {sizes['train_rows']:,} | {sizes['train_mb']:.0f} | {index['pieces']:,}, "
                f"{index['intervals']:,}, {index['bytes'] / 2**20:.1f} | "
                f"{m['seconds']:.1f} | {t.get('training_scan_s', 0):.1f} | {t.get('decode_s', 0):.1f} | "
                f"{t.get('likelihood_s', 0):.1f} | "
                f"{t.get('sampling_s', 0):.1f} | {t.get('metrics_s', 0):.1f} | {m['VmRSS']:.0f} | {m['RssAnon']:.0f} "
                f"| {m['RssFile']:.0f} | "
                f"{before[0]:.2f} → {after[0]:.2f} |"
            )
        lines.append("")
        for label, _, composers, _, report, timings, _, _ in results:
            if timings:
                lines.append(
                    f"- {label}: prepare {timings['prepare_s']:.0f} s, train {timings['train_s']:.0f} s; evaluated "
                    f"{composers}; "
                    f"held-out rows {report['likelihood']['rows']:,}"
                )
        print("\n".join(lines))


if __name__ == "__main__":
    main()
