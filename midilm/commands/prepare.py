"""Build the tokenizer and the Arrow dataset from MIDI files, or from the scores bundled in music21.

    midilm prepare --composers bach,mozart,beethoven --max_files_per_composer 30
    midilm prepare --midi_dir my_midis/ --vocab_size 5000 --augment
    midilm prepare my_config.json --midi_dir my_midis/ --overwrite
    midilm prepare --midi_dir lakh/ --metadata labels.csv --bpe_max_files 2000 --num_proc 16

In a clone, `python prepare_dataset.py` takes the same flags and reads the config.json beside it.
Unusable files are skipped, stray notes after a long silence cut, duplicates (the same notes under
another name) kept once, each with its reason in <output_dir>/prepare_report.json.

Defaults come from the package (PrepareArguments, midilm.core.tokenizer.TOKENIZER_DEFAULTS); the `prepare` and
`tokenizer` sections of a config file override them, and any flag overrides both.
"""

from __future__ import annotations

from pathlib import Path


def main(argv: list[str] | None = None, config_file: Path | None = None) -> None:
    # Imported here, not at the top: the step's worker processes are spawned, and each imports the main
    # module first (prepare_dataset.py, or the `midilm` command); these (transformers, datasets, torch)
    # would otherwise load in every worker.
    from midilm.core.cli import parse_args
    from midilm.data.arguments import PrepareArguments
    from midilm.data.prepare import prepare
    from midilm.data.report import summary

    args, config = parse_args((PrepareArguments,), ("prepare",), argv, description=__doc__, config_file=config_file)
    report = prepare(args, config.get("tokenizer", {}))
    print(summary(report))
    print(f"wrote {args.tokenizer_dir}/ and {args.output_dir}/ (report: {args.output_dir}/prepare_report.json)")


if __name__ == "__main__":
    from midilm.core.cli import run

    run(main)
