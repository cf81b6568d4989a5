"""Preference-tune a trained model with DPO: `python tune.py [config.json] [--flags]`.

A thin wrapper around `midilm tune` (midilm/commands/tune.py: the flags, the examples and the --help
text), reading the config.json beside this script.
"""

from pathlib import Path

from midilm.commands import tune
from midilm.core.cli import run

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    tune.main(config_file=CONFIG_FILE)


if __name__ == "__main__":
    run(main)
