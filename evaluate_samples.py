"""Evaluate a trained midilm model against real held-out pieces and write report.md / report.json.

    python evaluate_samples.py --model_dir model_output --dataset_dir data --output_dir eval_report
    python evaluate_samples.py --model_dir model_output --dataset_dir data --samples_dir samples --output_dir samples/eval
    python evaluate_samples.py --num_samples_per_composer 16 --guidance_scales 1,1.5,2,3,5 --split test --overwrite

Measures the held-out perplexity and NLL per note beside a unigram baseline, compares the music metrics
of the model's samples and of random-weight samples with the real pieces of each composer, sweeps the
guidance scale and checks the samples for passages copied from training pieces at any transposition
(see midilm/evaluation.py). The training split is streamed from Arrow, never loaded whole: memory
stays flat in its size apart from the memorization index (bench/bench_eval.py measures it).
Named evaluate_samples.py because a top-level evaluate.py would shadow the HF `evaluate` package.
"""

from midilm.cli import parse_args, run
from midilm.evaluation import EvaluateArguments, check_output_dir, evaluate, headline, write_report


def main() -> None:
    args, _ = parse_args((EvaluateArguments,), ("evaluate",), description=__doc__)

    # Refuse to replace a previous report before any work is done
    output_dir = check_output_dir(args)

    # Evaluate: likelihood, samples, metrics, CFG sweep, memorization
    report = evaluate(args)

    # Write report.json, report.md and the evaluated samples (built aside, moved into place whole)
    write_report(report, output_dir, args.overwrite)
    print(headline(report))
    print(f"report: {output_dir / 'report.md'}")


if __name__ == "__main__":
    run(main)
