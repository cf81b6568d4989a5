"""Sample MIDI from a trained model: `python generate.py --model_dir model_output --composer bach`.

A thin wrapper around `midilm generate` (midilm/commands/generate.py: the flags, the examples and the
--help text), reading the config.json beside this script.
"""

from pathlib import Path

from midilm.commands import generate
from midilm.core.cli import run

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    generate.main(config_file=CONFIG_FILE)


if __name__ == "__main__":
    run(main)
