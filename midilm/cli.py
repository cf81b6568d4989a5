"""What every midilm script shares: config.json defaults under HfArgumentParser, and one-line errors."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from transformers import HfArgumentParser

from midilm.errors import InputError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.json"


def load_config(argv: list[str]) -> tuple[dict, list[str]]:
    """`script.py [config.json] [--flags]`: the config file named first, else the repository's own."""
    path = DEFAULT_CONFIG
    if argv and argv[0].endswith(".json"):
        path, argv = Path(argv[0]), argv[1:]
        if not path.is_file():
            raise InputError(f"{path}: no such config file")
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err
    return config, argv


def parse_args(
    dataclass_types: tuple, sections: tuple[str, ...], argv: list[str] | None = None, machine_defaults: dict | None = None, description: str | None = None
):
    """Dataclasses filled from `machine_defaults`, then the named config.json sections, then flags.

    Returns the dataclasses followed by the whole config dict (for sections that are not flags).
    """
    config, argv = load_config(list(sys.argv[1:] if argv is None else argv))
    parser = HfArgumentParser(dataclass_types, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for action in parser._actions:
        # argparse %-formats help text: a bare % in a help string ("under 1% padding") breaks --help
        if action.help:
            action.help = re.sub(r"%%|%\(\w+\)\w|%", lambda m: m.group(0) if len(m.group(0)) > 1 else "%%", action.help)
    flags = {action.dest for action in parser._actions}
    defaults = {k: v for section in sections for k, v in config.get(section, {}).items()}
    defaults = {**(machine_defaults or {}), **defaults}
    unknown = sorted(set(defaults) - flags)
    if unknown:
        raise InputError(f"config.json sections {', '.join(sections)}: unknown keys {', '.join(unknown)}")
    parser.set_defaults(**defaults)
    try:
        parsed = parser.parse_args_into_dataclasses(argv)
    except ValueError as err:  # TrainingArguments' own checks (e.g. strategies that do not match)
        raise InputError(str(err).strip().splitlines()[0]) from err
    return (*parsed, config)


def run(main: Callable[[], object]) -> None:
    """Run a script's main(): an InputError becomes one line on stderr and exit code 2."""
    try:
        main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
