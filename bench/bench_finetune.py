"""Building on a trained model against training from scratch, on a small collection of new composers.

    python bench/bench_finetune.py --base_model model_output --base_dataset data --work /tmp/ft   # after make demo

The base is make demo's model (Bach, Monteverdi, Palestrina; 1,500 steps). The new composers are
music21's Mozart and Trecento pieces (--composers), prepared twice from the same files, so the same
pieces land in the same splits: with their own tokenizer (for the run from scratch) and with the base's
(prepare_dataset.py --base_model). Each variant trains --steps steps at make demo's batch and rate,
keeping a checkpoint every --steps / 6:
  scratch   the tiny preset from random weights on the new data alone (its own tokenizer)
  full      train.py --init_from the base, every weight
  lora      the same with --lora_r 16 (adapters and the new composers' rows)
  replay    full fine-tuning with --replay_dataset (the base's data, 20% of the rows)
  (and two levers tried after them: replay-0.5, lora-lr-5e-3; run them side by side with --variants)
Measured: validation NLL per note of the new composers' held-out pieces at every checkpoint (per note,
since the vocabularies differ), the steps each needs to reach scratch's final value, trainable
parameters, peak memory (the training process tree's resident set) and wall time; then
evaluate_samples.py's guidance sweep on each model, with the base's data joined (--base_dataset_dir),
so one classifier judges every composer, old and new; the base itself is judged the same way as a
"before" model (the base with the new composers' rows added, untrained). The step-0 NLL of the two
ways to start a new composer's embedding (COMPOSER_NONE's row, the known composers' mean) is measured
on the base too. Results: work/summary.json; --table prints the Markdown of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "scratch": [],
    "full": ["--init_from", "{base}"],
    "lora": ["--init_from", "{base}", "--lora_r", "16"],
    "replay": ["--init_from", "{base}", "--replay_dataset", "{base_data}", "--replay_share", "0.2"],
    # the levers tried after the first four: more replay against forgetting, a higher rate for LoRA's few parameters
    "replay-0.5": ["--init_from", "{base}", "--replay_dataset", "{base_data}", "--replay_share", "0.5"],
    "lora-lr-5e-3": ["--init_from", "{base}", "--lora_r", "16", "--learning_rate", "5e-3"],
}
DATA = ["--max_seq_len", "512", "--min_pieces_per_composer", "10", "--augment", "--tasks", "continuation"]
SWEEP = [
    "--adherence_scales",
    "1,2,3",
    "--adherence_samples_per_composer",
    "16",
    "--max_new_tokens",
    "256",
    "--num_samples_per_composer",
    "4",
    "--accompaniment_pieces",
    "0",
]


def run(command: list[str], log: Path) -> tuple[float, int]:
    """Run a command to a log; its wall time and the peak resident memory of its process tree (bytes)."""
    import psutil

    started, peak = time.perf_counter(), 0
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def poll():
            nonlocal peak
            parent = psutil.Process(process.pid)
            while not done.is_set():
                try:
                    tree = [parent, *parent.children(recursive=True)]
                    peak = max(peak, sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    pass
                time.sleep(0.2)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        code = process.wait()
        done.set()
        watcher.join()
    if code:
        sys.exit(f"failed ({code}): {' '.join(command)}; see {log}")
    return time.perf_counter() - started, peak


def prepare(work: Path, composers: str, base: str | None) -> Path:
    name = "data_base_tok" if base else "data_own_tok"
    out = work / name
    if not (out / "data" / "dataset_dict.json").is_file():
        extra = ["--base_model", base] if base else []
        run(
            [
                sys.executable,
                "prepare_dataset.py",
                "--composers",
                composers,
                *DATA,
                *extra,
                "--output_dir",
                str(out / "data"),
                "--tokenizer_dir",
                str(out / "tokenizer"),
                "--overwrite",
            ],
            work / f"{name}.log",
        )
    return out


def nll_per_note(model_dir: Path, data: Path, checkpoint: Path | None = None) -> float:
    """Validation NLL per note (nats) of the held-out continuation rows, by the model folder or one of its
    checkpoints."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    from midilm.evaluation.likelihood import model_nll

    rows = [r for r in load_from_disk(str(data))["validation"] if r["task"] == "continuation"]
    source = checkpoint or model_dir
    if (source / "adapter_config.json").is_file():  # a LoRA checkpoint: the grown base plus its adapter
        model = lora_checkpoint(model_dir, source)
    else:
        model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        total, _ = model_nll(
            model.eval(), [r["input_ids"] for r in rows], 8, model.config.pad_token_id, desc=f"NLL {source.name}"
        )
    return total / sum(r["n_notes"] for r in rows)


def grown(base: str, tokenizer_dir: Path, init: str):
    """The base model with rows for the composers of `tokenizer_dir` (a tokenizer prepared with --base_model),
    started as `init`."""
    from transformers import AutoModelForCausalLM

    from midilm.core.tokenizer import load_tokenizer
    from midilm.training.finetune import grow_embeddings

    model = AutoModelForCausalLM.from_pretrained(base)
    grow_embeddings(model, load_tokenizer(base)[1], load_tokenizer(tokenizer_dir)[1], init)
    return model


def lora_checkpoint(model_dir: Path, checkpoint: Path):
    from peft import PeftModel

    lineage = json.loads((model_dir / "config.json").read_text())["midilm_base_model"]
    return PeftModel.from_pretrained(grown(lineage["model"], model_dir, lineage["new_composer_init"]), checkpoint)


def grown_base(work: Path, base: str, ft_tokenizer: Path) -> Path:
    """The base with the new composers' rows added (COMPOSER_NONE's), saved as a model folder: the "before" model."""
    from midilm.core.modeling import copy_tokenizer
    from midilm.core.tokenizer import load_tokenizer

    out = work / "base_grown"
    if not (out / "model.safetensors").is_file():
        model = grown(base, ft_tokenizer, "none")
        model.config.update(load_tokenizer(ft_tokenizer)[1].to_config())
        model.save_pretrained(out)
        copy_tokenizer(ft_tokenizer, out)
        (out / "training_config.json").write_text((Path(base) / "training_config.json").read_text())
    return out


def init_nll(base: str, ft: Path) -> dict:
    """Step-0 NLL per note of the new composers' held-out pieces for each way to start their rows."""
    import tempfile

    from midilm.training.finetune import NEW_COMPOSER_INITS

    result = {}
    for init in NEW_COMPOSER_INITS:
        with tempfile.TemporaryDirectory() as tmp:
            grown(base, ft / "tokenizer", init).save_pretrained(tmp)
            result[init] = nll_per_note(Path(tmp), ft / "data")
    return result


def train(work: Path, name: str, args, data: Path) -> dict:
    out = work / name
    summary_path = work / f"{name}.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    extra = [a.format(base=args.base_model, base_data=args.base_dataset) for a in VARIANTS[name]]
    every = max(1, args.steps // 6)
    command = [
        sys.executable,
        "train.py",
        "--dataset_dir",
        str(data / "data"),
        "--tokenizer_dir",
        str(data / "tokenizer"),
        "--output_dir",
        str(out),
        "--max_steps",
        str(args.steps),
        "--eval_steps",
        str(every),
        "--save_steps",
        str(every),
        "--save_total_limit",
        "100",
        "--samples_per_composer",
        "0",
        *extra,
    ]
    seconds, peak = run(command, work / f"{name}.log")
    trained = re.search(r"\(([\d.]+)M trained", (work / f"{name}.log").read_text())
    curve = {int(c.name.split("-")[1]): nll_per_note(out, data / "data", c) for c in out.glob("checkpoint-*")}
    summary = {
        "variant": name,
        "command": " ".join(command),
        "train_seconds": round(seconds, 1),
        "peak_rss_mb": round(peak / 2**20),
        "trainable_parameters_m": float(trained.group(1)) if trained else None,
        "nll_per_note": dict(sorted(curve.items())),
        "final_nll_per_note": nll_per_note(out, data / "data"),
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def judge(work: Path, name: str, model: Path, data: Path, base_data: str | None) -> dict:
    out = work / f"eval_{name}"
    if not (out / "report.json").is_file():
        extra = ["--base_dataset_dir", base_data] if base_data else []
        run(
            [
                sys.executable,
                "evaluate_samples.py",
                "--model_dir",
                str(model),
                "--dataset_dir",
                str(data / "data"),
                *extra,
                "--output_dir",
                str(out),
                "--overwrite",
                *SWEEP,
            ],
            work / f"eval_{name}.log",
        )
    from midilm.evaluation.adherence import UNCONDITIONAL

    report = json.loads((out / "report.json").read_text())
    adherence = report["adherence"]
    chosen = adherence["choice"]["scale"]
    row = next((r for r in adherence["rows"] if r["scale"] == chosen), None)
    at_chosen = adherence["groups"].get(f"s = {chosen:g}", {}).get("per_composer", {}) if chosen is not None else {}
    ceiling = (adherence["ceiling"] or {}).get("per_composer", {})
    return {
        "chosen_scale": chosen,
        "overall_at_chosen": row["adherence"] if row else None,
        "per_composer_at_chosen": {
            c: {"share": v.get("share"), "interval": v.get("interval"), "n": v.get("n")} for c, v in at_chosen.items()
        },
        "ceiling": {c: v.get("share") for c, v in ceiling.items()},
        "unconditional_share_heard_as": adherence["groups"][UNCONDITIONAL].get("unconditional"),
        "new_composers": report["settings"].get("new_composers", []),
        "vertical_seconds_at_chosen": row.get("vertical_seconds") if row else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", default="model_output")
    parser.add_argument("--base_dataset", default="data")
    parser.add_argument("--composers", default="mozart,trecento")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    own, based = prepare(args.work, args.composers, None), prepare(args.work, args.composers, args.base_model)
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "steps": args.steps,
        "composers": args.composers,
        "base_model": args.base_model,
        "new_composer_init_nll_per_note": init_nll(args.base_model, based),
    }
    summary["before"] = judge(
        args.work, "before", grown_base(args.work, args.base_model, based / "tokenizer"), based, args.base_dataset
    )
    for name in args.variants.split(","):
        data = own if name == "scratch" else based
        summary[name] = train(args.work, name, args, data)
        summary[name]["adherence"] = judge(
            args.work, name, args.work / name, data, None if name == "scratch" else args.base_dataset
        )
        (args.work / f"summary-{args.variants}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
