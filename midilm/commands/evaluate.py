"""Evaluate a trained midilm model against real held-out pieces and write report.md / report.json.

    midilm evaluate --model_dir model_output --dataset_dir data --output_dir eval_report
    midilm evaluate --model_dir model_output --dataset_dir data --samples_dir samples --output_dir samples/eval
    midilm evaluate --model_dir model_output --dataset_dir data --write_default_guidance  # and sets its guidance
    midilm evaluate --adherence_scales 1,2,3 --adherence_samples_per_composer 32 --split test --overwrite
    midilm evaluate --model_dir model_output --dataset_dir data --long_tokens 2040   # and drift over 4x a 512 context
    midilm evaluate --model_dir model_output --dataset_dir data --infill_pieces 4 --infill_spans_per_piece 3

In a clone, `python evaluate_samples.py` takes the same flags and reads the config.json beside it.
Measures the held-out perplexity and NLL per note beside a unigram baseline, compares the music metrics
of the model's samples and of random-weight samples with the real pieces of each composer, sweeps the
guidance scale (composer adherence by an independent classifier, degenerate samples with the musical
guard on and off, metric gap, memorization) and chooses the guidance default from it: the highest
adherence whose degenerate samples stay at or below the real pieces' rate. For a model trained with the
infill task it also scores and rewrites held-out spans (--infill_pieces, 0 = off; midilm/evaluation/infilling.py).
--write_default_guidance writes that scale into the model's config.json once the report is written (see
midilm/evaluation/).
The training split is streamed from Arrow, never loaded whole: memory stays flat in its size apart
from the memorization index (bench/bench_eval.py measures it).
"""

from __future__ import annotations

from pathlib import Path

from midilm.core.cli import parse_args, run
from midilm.evaluation.adherence import write_default_guidance
from midilm.evaluation.arguments import EvaluateArguments, check_output_dir
from midilm.evaluation.report import headline, write_report
from midilm.evaluation.run import evaluate


def main(argv: list[str] | None = None, config_file: Path | None = None) -> None:
    args, _ = parse_args((EvaluateArguments,), ("evaluate",), argv, description=__doc__, config_file=config_file)

    # Refuse to replace a previous report before any work is done
    output_dir = check_output_dir(args)

    # Evaluate: likelihood, samples, metrics, the guidance sweep with composer adherence, memorization
    report = evaluate(args)

    # Write report.json, report.md and the evaluated samples (built aside, moved into place whole)
    write_report(report, output_dir, args.overwrite)

    # The guidance default the sweep chose, into the model folder (only once the report that says why exists)
    choice = (report.get("adherence") or {}).get("choice", {})
    if args.write_default_guidance and choice.get("written_to"):
        write_default_guidance(args.model_dir, choice["scale"])
    elif args.write_default_guidance:
        print(
            f"warning: --write_default_guidance: no scale chosen ({choice.get('reason', 'no --adherence_scales')}); "
            "config.json is unchanged"
        )
    print(headline(report))
    print(f"report: {output_dir / 'report.md'}")


if __name__ == "__main__":
    run(main)
