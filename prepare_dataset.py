"""Build the tokenizer and the Arrow dataset from MIDI files, or from the scores bundled in music21.

    python prepare_dataset.py --composers bach,mozart,beethoven --max_files_per_composer 30
    python prepare_dataset.py --midi_dir my_midis/ --vocab_size 5000 --augment
    python prepare_dataset.py my_config.json --midi_dir my_midis/ --overwrite

Defaults come from the `prepare` and `tokenizer` sections of config.json; any flag overrides them.
"""

from midilm.cli import parse_args, run
from midilm.prepare import PrepareArguments, prepare, summary


def main() -> None:
    args, config = parse_args((PrepareArguments,), ("prepare",), description=__doc__)
    report = prepare(args, config.get("tokenizer", {}))
    print(summary(report))
    print(f"wrote {args.tokenizer_dir}/ and {args.output_dir}/ (report: {args.output_dir}/prepare_report.json)")


if __name__ == "__main__":
    run(main)
