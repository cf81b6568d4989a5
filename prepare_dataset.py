"""Build the tokenizer and the Arrow dataset from MIDI files, or from the scores bundled in music21.

    python prepare_dataset.py --composers bach,mozart,beethoven --max_files_per_composer 30
    python prepare_dataset.py --midi_dir my_midis/ --vocab_size 5000 --augment
    python prepare_dataset.py my_config.json --midi_dir my_midis/ --overwrite
    python prepare_dataset.py --midi_dir lakh/ --metadata labels.csv --bpe_max_files 2000 --num_proc 16

Unusable files are skipped, stray notes after a long silence cut, duplicates (the same notes under
another name) kept once, each with its reason in <output_dir>/prepare_report.json.

Defaults come from the package (PrepareArguments, midilm.tokenizer.TOKENIZER_DEFAULTS); the `prepare` and
`tokenizer` sections of config.json override them, and any flag overrides both.
"""

from pathlib import Path

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    # Imported here, not at the top: the step's worker processes are spawned, and each imports this
    # script first; at the top, these imports (transformers, datasets, torch) would load in every worker.
    from midilm.cli import parse_args
    from midilm.prepare import PrepareArguments, prepare, summary

    args, config = parse_args((PrepareArguments,), ("prepare",), description=__doc__, config_file=CONFIG_FILE)
    report = prepare(args, config.get("tokenizer", {}))
    print(summary(report))
    print(f"wrote {args.tokenizer_dir}/ and {args.output_dir}/ (report: {args.output_dir}/prepare_report.json)")


if __name__ == "__main__":
    from midilm.cli import run

    run(main)
