"""Build the tokenizer and the Arrow dataset: `python prepare_dataset.py [config.json] [--flags]`.

A thin wrapper around `midilm prepare` (midilm/commands/prepare.py: the flags, the examples and the
--help text), reading the config.json beside this script.
"""

from pathlib import Path

# Light: the heavy imports wait inside main() (the step's spawned workers import this script first)
from midilm.commands import prepare

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    prepare.main(config_file=CONFIG_FILE)


if __name__ == "__main__":
    from midilm.core.cli import run

    run(main)
