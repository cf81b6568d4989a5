"""Evaluate a trained model against held-out pieces: `python evaluate_samples.py [config.json] [--flags]`.

A thin wrapper around `midilm evaluate` (midilm/commands/evaluate.py: the flags, the examples and the
--help text), reading the config.json beside this script. Named evaluate_samples.py because a top-level
evaluate.py would shadow the HF `evaluate` package.
"""

from pathlib import Path

from midilm.commands import evaluate
from midilm.core.cli import run

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    evaluate.main(config_file=CONFIG_FILE)


if __name__ == "__main__":
    run(main)
