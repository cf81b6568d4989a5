"""Preference-tune a trained midilm model with DPO (TRL): rounds of sample -> score -> pair -> DPO.

    midilm tune --model_dir model_output --dataset_dir data --output_dir model_tuned
    midilm tune --model_dir model_output --dataset_dir data --output_dir model_tuned \\
        --rounds 3 --samples_per_composer 64
    midilm tune --model_dir model_output --output_dir model_tuned --seconds_weight 0 --copy_weight 0.2

In a clone, `python tune.py` takes the same flags and reads the config.json beside it.
Each round samples --samples_per_composer pieces per composer from the current model with midilm's
processors (guidance, grammar, guard), scores them (midilm.tuning.score: the composer classifier, vertical
seconds over the composer's real rate, copying, clusters, syntax, length; each weight a flag), pairs the best
with the worst of each composer and runs TRL's DPOTrainer with the model before tuning as the reference.
Rounds stop at --rounds, or earlier once every composer reaches --target_ratio x the classifier's ceiling or
adherence stops rising. A killed run, started again with the same flags, resumes after its last finished round.
The output is a plain midilm model folder; its config.json (`midilm_tuning`) and card record the tuning and
a before/after table read by the reward classifier and by an independent one.
"""

from __future__ import annotations

from pathlib import Path

from midilm.core.cli import parse_args, run
from midilm.tuning.arguments import TuneArguments
from midilm.tuning.loop import tune
from midilm.tuning.score import ScoreWeights


def main(argv: list[str] | None = None, config_file: Path | None = None) -> None:
    args, weights, _ = parse_args(
        (TuneArguments, ScoreWeights), ("tune",), argv, description=__doc__, config_file=config_file
    )

    # Tune: every refusal comes before anything is written; rounds resume from <output_dir>.tuning/
    tuning = tune(args, weights)

    # Report
    print(f"tuned in {tuning['rounds']} round(s), stopped {tuning['stopped']}; {tuning['wall_seconds']:.0f} s")
    print(tuning["before_after"]["verdict"])
    print(f"model: {args.output_dir} (its README.md holds the before/after table)")


if __name__ == "__main__":
    run(main)
