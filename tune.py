"""Preference-tune a trained midilm model with DPO (TRL): rounds of sample -> score -> pair -> DPO.

    python tune.py --model_dir model_output --dataset_dir data --output_dir model_tuned
    python tune.py --model_dir model_output --dataset_dir data --output_dir model_tuned --rounds 3 --samples_per_composer 64
    python tune.py --model_dir model_output --output_dir model_tuned --seconds_weight 0 --copy_weight 0.2

Each round samples --samples_per_composer pieces per composer from the current model with midilm's
processors (guidance, grammar, guard), scores them (midilm.tuning.score: the composer classifier, vertical
seconds over the composer's real rate, copying, clusters, syntax, length; each weight a flag), pairs the best
with the worst of each composer and runs TRL's DPOTrainer with the model before tuning as the reference.
Rounds stop at --rounds, or earlier once every composer reaches --target_ratio x the classifier's ceiling or
adherence stops rising. A killed run, started again with the same flags, resumes after its last finished round.
The output is a plain midilm model folder; its config.json (`midilm_tuning`) and card record the tuning and
a before/after table read by the reward classifier and by an independent one.
"""

from pathlib import Path

from midilm.cli import parse_args, run
from midilm.tuning.loop import TuneArguments, tune
from midilm.tuning.score import ScoreWeights

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    args, weights, _ = parse_args((TuneArguments, ScoreWeights), ("tune",), description=__doc__, config_file=CONFIG_FILE)

    # Tune: every refusal comes before anything is written; rounds resume from <output_dir>.tuning/
    tuning = tune(args, weights)

    # Report
    print(f"tuned in {tuning['rounds']} round(s), stopped {tuning['stopped']}; {tuning['wall_seconds']:.0f} s")
    print(tuning["before_after"]["verdict"])
    print(f"model: {args.output_dir} (its README.md holds the before/after table)")


if __name__ == "__main__":
    run(main)
