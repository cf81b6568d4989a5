"""What every midilm script shares: defaults, then config.json, then flags under HfArgumentParser; one-line errors.

The defaults live in the package (the dataclasses' fields, `midilm.training.arguments.TRAINING_DEFAULTS`,
`midilm.core.tokenizer.TOKENIZER_DEFAULTS`). A config file only overrides them: it may be whole, partial,
empty or absent. The repository's config.json holds deliberate overrides only, each with its reason under
`_reasons` (keys starting with `_` are for readers; tests/test_cli.py fails on one that repeats a default)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from transformers import HfArgumentParser

from midilm.core.errors import InputError


def load_config(argv: list[str], default: Path | None = None) -> tuple[dict, list[str]]:
    """`script.py [config.json] [--flags]`: the config file named first, else `default` (the one beside
    the scripts) if it exists, else none."""
    path = default
    if argv and argv[0].endswith(".json"):
        path, argv = Path(argv[0]), argv[1:]
        if not path.is_file():
            raise InputError(f"{path}: no such config file")
    try:
        config = json.loads(path.read_text() or "{}") if path is not None and path.is_file() else {}
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err
    return config, argv


def parse_args(
    dataclass_types: tuple,
    sections: tuple[str, ...],
    argv: list[str] | None = None,
    defaults: dict | None = None,
    description: str | None = None,
    config_file: Path | None = None,
):
    """Dataclasses filled from their own defaults, then `defaults` (for dataclasses midilm does not own,
    and the machine's), then the named sections of the config file (`config_file`, the script's
    config.json, unless the command line names another first), then flags.

    Returns the dataclasses followed by the whole config dict (for sections that are not flags).
    """
    config, argv = load_config(list(sys.argv[1:] if argv is None else argv), config_file)
    parser = HfArgumentParser(
        dataclass_types, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for action in parser._actions:
        # argparse %-formats help text: a bare % in a help string ("under 1% padding") breaks --help
        if action.help:
            action.help = re.sub(r"%%|%\(\w+\)\w|%", lambda m: m.group(0) if len(m.group(0)) > 1 else "%%", action.help)
    flags = {action.dest for action in parser._actions}
    given = {k: v for section in sections for k, v in (config.get(section) or {}).items()}
    defaults = {**(defaults or {}), **given}
    unknown = sorted(set(given) - flags)
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
