"""What the infill task costs and what it buys, on the demo configuration (issue 23, parts 5 and 6).

    OMP_NUM_THREADS=1 python bench/bench_infill.py --workdir bench_infill_work --steps 1500

Prepares the demo's data twice (prepare_dataset.py --composers bach,monteverdi,palestrina
--max_files_per_composer 80 --min_pieces_per_composer 10 --max_seq_len 512 --augment), with --tasks
continuation,accompaniment and with --tasks continuation,accompaniment,infill (the same pieces in every split:
the split hash ignores the tasks), trains one model on each (train.py, the same --steps and --seed, no evaluation
or checkpoints during training), then measures:

- the cost: NLL per note (and per token) of each model on the validation split's continuation rows, scored as
  evaluate_samples.py scores them (`midilm.evaluation.likelihood.model_nll`); per note, since the two tokenizers
  differ by the GAP/FILL markers (issue target: the infill model at most 3% worse);
- the gain, on the infill model: `midilm.evaluation.infilling.evaluate_infill` on held-out spans (seeded): the
  span's NLL per note given the bars before and after it against the same bars before only (target: at least 10%
  lower); notes outside the span identical (target 100%) and syntax errors (target 0) of the rewritten spans.

A stage whose output is already in --workdir is not redone (delete the folder to start over). Writes
<workdir>/bench_infill.json and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from midilm.core.modeling import load_midilm_dir, sampling_defaults
from midilm.core.tokenizer import load_tokenizer
from midilm.evaluation.data import join_pieces, load_eval_dataset, token_rows
from midilm.evaluation.infilling import evaluate_infill
from midilm.evaluation.likelihood import likelihood_summary, model_nll
from midilm.sampling.generation import decode_ids, load_model

ROOT = Path(__file__).resolve().parent.parent

DEMO_PREPARE = [
    "--composers",
    "bach,monteverdi,palestrina",
    "--max_files_per_composer",
    "80",
    "--min_pieces_per_composer",
    "10",
    "--max_seq_len",
    "512",
    "--augment",
]
VARIANTS = {"base": "continuation,accompaniment", "infill": "continuation,accompaniment,infill"}


def run(command: list[str], log: Path) -> float:
    """Run a script of the repository, its output to `log`; seconds taken. Exits with its code on failure."""
    tick = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, *command], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(command)} failed ({code}); see {log}")
    return time.perf_counter() - tick


def build(workdir: Path, variant: str, steps: int, seed: int) -> dict:
    """Prepare and train one variant (each stage only when its output is missing); the seconds each took."""
    data, tokenizer, model = (workdir / f"{name}_{variant}" for name in ("data", "tokenizer", "model"))
    seconds = {}
    if not (data / "dataset_dict.json").is_file():
        seconds["prepare_s"] = run(
            [
                "prepare_dataset.py",
                *DEMO_PREPARE,
                "--tasks",
                VARIANTS[variant],
                "--output_dir",
                str(data),
                "--tokenizer_dir",
                str(tokenizer),
            ],
            workdir / f"prepare_{variant}.log",
        )
    if not (model / "model.safetensors").is_file():
        seconds["train_s"] = run(
            [
                "train.py",
                "--dataset_dir",
                str(data),
                "--tokenizer_dir",
                str(tokenizer),
                "--output_dir",
                str(model),
                "--max_steps",
                str(steps),
                "--seed",
                str(seed),
                "--eval_strategy",
                "no",
                "--save_strategy",
                "no",
                "--load_best_model_at_end",
                "false",
                "--samples_per_composer",
                "0",
            ],
            workdir / f"train_{variant}.log",
        )
    trained = (
        json.loads((model / "trainer_state.json").read_text())["global_step"]
        if (model / "trainer_state.json").is_file()
        else None
    )
    return {"data": str(data), "model": str(model), "trained_steps": trained, **seconds}


def continuation_nll(model_dir: str, dataset_dir: str, split: str, device: str) -> dict:
    config, tokenizer, _ = load_midilm_dir(model_dir)
    _, composer_map = load_tokenizer(model_dir)
    dataset = load_eval_dataset(dataset_dir, split, tokenizer, composer_map)
    rows = token_rows(dataset[split], tokenizer, composer_map, f"{dataset_dir} ({split})")
    model = load_model(model_dir, device)
    total, tokens = model_nll(model, [r["input_ids"] for r in rows], 8, config.pad_token_id, desc=model_dir)
    return {"rows": len(rows), "tokens": tokens, **likelihood_summary(total, tokens, sum(r["n_notes"] for r in rows))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="bench_infill_work", help="where data, models, logs and results go")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each model (the demo's 1500)")
    parser.add_argument("--seed", type=int, default=42, help="train.py's seed (both models) and the spans' seed")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--pieces_per_composer", type=int, default=6, help="held-out pieces whose spans are rewritten")
    parser.add_argument("--spans_per_piece", type=int, default=3)
    parser.add_argument("--max_span_bars", type=int, default=4)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # Prepare and train both variants
    built = {v: build(workdir, v, args.steps, args.seed) for v in VARIANTS}

    # The cost: continuation NLL on the held-out split
    cost = {v: continuation_nll(built[v]["model"], built[v]["data"], args.split, device) for v in VARIANTS}
    cost["relative_per_note"] = cost["infill"]["nll_per_note"] / cost["base"]["nll_per_note"] - 1

    # The gain: held-out spans with and without the bars after them, and their rewrites
    model_dir, dataset_dir = built["infill"]["model"], built["infill"]["data"]
    config, tokenizer, _ = load_midilm_dir(model_dir)
    _, composer_map = load_tokenizer(model_dir)
    dataset = load_eval_dataset(dataset_dir, args.split, tokenizer, composer_map)
    rows = token_rows(dataset[args.split], tokenizer, composer_map, f"{dataset_dir} ({args.split})")
    real = [
        {
            **p,
            "composer": composer_map.names[p["composer"]],
            "name": p["source"],
            "score": decode_ids(tokenizer, p["ids"]),
        }
        for p in join_pieces(rows, config.eos_token_id)
    ]
    composers = sorted({p["composer"] for p in real})
    section, _ = evaluate_infill(
        load_model(model_dir, device),
        tokenizer,
        composer_map,
        real,
        composers,
        sampling_defaults(model_dir),
        pieces_per_composer=args.pieces_per_composer,
        spans_per_piece=args.spans_per_piece,
        max_span_bars=args.max_span_bars,
        seed=args.seed,
    )
    result = {"args": vars(args), "built": built, "continuation_nll": cost, "infilling": section}
    out = workdir / "bench_infill.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)

    b, i = cost["base"], cost["infill"]
    print(f"steps {args.steps}, seed {args.seed}, {args.split} continuation rows {b['rows']}")
    print(
        f"continuation NLL per note: base {b['nll_per_note']:.4f}, with infill {i['nll_per_note']:.4f} "
        f"({100 * cost['relative_per_note']:+.2f}%; target <= +3%); per token {b['nll_per_token']:.4f} / "
        f"{i['nll_per_token']:.4f}"
    )
    print(
        f"infill spans: {section['spans']} in {section['pieces']} pieces; NLL per note given both sides "
        f"{section['infill_nll_per_note']:.4f} vs bars before only {section['prefix_nll_per_note']:.4f} "
        f"({100 * section['nll_reduction']:.1f}% lower; target >= 10%); control, infill layout without the bars "
        f"after: {section['no_after_nll_per_note']:.4f} (the bars after alone: "
        f"{100 * section['nll_reduction_from_the_bars_after']:.1f}% lower)"
    )
    print(
        f"rewrites: notes outside identical in {100 * section['outside_identical_share']:.0f}% of spans; syntax error "
        f"rate max {section['syntax_error_rate_max']}; metric gap to the real spans {section['metric_gap']:.3f} "
        f"(real spans elsewhere {section['real_spans_gap']:.3f}); {section['seconds']:.1f} s"
    )
    for key, v in section["seams"].items():
        print(f"  seam {key}: rewritten {v['infilled']}, real {v['real']}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
