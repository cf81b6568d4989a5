"""The `midilm` command: `midilm prepare | train | generate | evaluate | app | tune`, one module per step.

    midilm prepare --composers bach,mozart --max_files_per_composer 30
    midilm train --max_steps 2000
    midilm generate --model_dir model_output --composer bach --num_samples 4
    midilm evaluate --model_dir model_output --dataset_dir data --output_dir eval_report
    midilm train my_config.json --output_dir runs/bach        # a config file first: its sections override the defaults
    accelerate launch --multi_gpu --num_processes 2 -m midilm.commands.train --model_preset small

One command with subcommands rather than one console script per step: a single name on PATH that no
other package's `train` or `generate` can clash with, and `midilm --help` lists the pipeline in order
(Aria ships one `aria` command the same way). Each step's main() parses the same argument dataclasses
as the top-level script of a clone (prepare_dataset.py, train.py, ... are thin wrappers around these
modules), and each module also runs alone (`python -m midilm.commands.train`), which is what
`accelerate launch -m` and torchrun need. The scripts read the config.json beside them; the `midilm`
command reads a config file only when one is named first, so an installed package runs on its defaults.

This module stays light (no torch, transformers or datasets): the data step's workers are spawned, and
each one imports the main module first, which for the `midilm` command is this one.
"""

from __future__ import annotations

import importlib
import sys

# The subcommands in pipeline order, each with its module under midilm/commands/ and a one-line summary.
COMMANDS = {
    "prepare": "build the tokenizer and the Arrow dataset from MIDI files (prepare_dataset.py)",
    "train": "train a composer-conditioned model with the HF Trainer (train.py)",
    "generate": "sample MIDI from a trained model, or accompany a melody (generate.py)",
    "evaluate": "evaluate a trained model against held-out pieces: report.md, report.json (evaluate_samples.py)",
    "app": "a web page for a trained model (app.py; needs midilm[app])",
    "tune": "preference-tune a trained model with DPO (tune.py)",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items()]
    head = "usage: midilm {" + ",".join(COMMANDS) + "} [config.json] [--flags]"
    return "\n".join([head, "", *lines, "", "`midilm <command> --help` lists a command's flags."])


def main(argv: list[str] | None = None) -> None:
    """The `midilm` console script: the first word picks the command, the rest are its arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: midilm: no command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    command = importlib.import_module(f"midilm.commands.{name}")
    from midilm.core.cli import run  # here: it imports transformers, which a spawned worker must not

    sys.argv = [f"midilm {name}", *rest]  # argparse's program name in --help and errors
    run(lambda: command.main(rest))
