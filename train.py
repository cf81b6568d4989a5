"""Train a composer-conditioned REMI language model with the HF Trainer.

    python train.py                                   # config.json beside this script, then flags
    accelerate launch --multi_gpu --num_processes 2 train.py --model_preset small

A thin wrapper around `midilm train` (midilm/commands/train.py: the flags, the examples and the
--help text), reading the config.json beside this script.
"""

from pathlib import Path

from midilm.commands import train
from midilm.core.cli import run

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    train.main(config_file=CONFIG_FILE)


if __name__ == "__main__":
    run(main)
