"""tune.py's arguments (TuneArguments): the model, the rounds, the samples per round, the pairs, DPO."""

from __future__ import annotations

from dataclasses import dataclass, field

from midilm.core.errors import InputError
from midilm.tuning.score import PAIR_RULES


@dataclass
class TuneArguments:
    model_dir: str = field(
        default="model_output",
        metadata={"help": "The trained model folder to tune (train.py's output); it is never written."},
    )
    dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "The model's own dataset (prepare_dataset.py's output); default: the one its "
                "training_config.json names."
            )
        },
    )
    output_dir: str = field(
        default="model_tuned",
        metadata={
            "help": "Where the tuned model folder goes (work in progress: <output_dir>.tuning/, kept for resuming)."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output_dir."})
    rounds: int = field(
        default=3,
        metadata={
            "help": (
                "Rounds of sample -> score -> DPO; fewer when every composer reaches its target or adherence "
                "stops rising. Each round tunes on the current model's own samples, so later rounds correct what "
                "earlier ones overdid (the default and its measurements: bench/RESULTS.md, 'Preference tuning')."
            )
        },
    )
    samples_per_composer: int = field(
        default=128,
        metadata={
            "help": (
                "Samples per composer per round (K): pairs come from within one composer's K, and the "
                "adherence the round stops on is measured on them, so a larger K gives more pairs and a "
                "narrower interval."
            )
        },
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "Tokens per sample: the evaluation's demo length (about 65 notes)."}
    )
    guidance_scale: float | None = field(
        default=None,
        metadata={"help": "Guidance scale of the round's samples (default: the model's midilm_guidance_scale)."},
    )
    pair_rule: str = field(
        default="extremes",
        metadata={
            "help": (
                f"How pairs are built per composer: {' or '.join(PAIR_RULES)} (midilm.tuning.score.build_pairs): "
                "extremes pairs the top share with the bottom share, best_worst only the best with the worst."
            )
        },
    )
    pair_fraction: float = field(
        default=0.25,
        metadata={
            "help": "extremes: the top and bottom share of each composer's samples that are paired (best with worst)."
        },
    )
    min_margin: float = field(
        default=0.05, metadata={"help": "A pair whose scores differ by less carries no preference and is dropped."}
    )
    beta: float = field(
        default=0.1, metadata={"help": "DPO's beta: how far the policy may move from the reference (TRL's default)."}
    )
    learning_rate: float = field(
        default=5e-5,
        metadata={
            "help": (
                "DPO learning rate (AdamW, constant): the tiny models of the demo barely move at TRL's 1e-6; "
                "lower rates move the model less per round."
            )
        },
    )
    dpo_epochs: float = field(default=2.0, metadata={"help": "Passes over a round's pairs."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per DPO step."})
    stop_early: bool = field(
        default=True,
        metadata={
            "help": (
                "Stop before --rounds once every composer reaches its target or adherence stops rising "
                "(--stop_early false runs every round)."
            )
        },
    )
    target_ratio: float = field(
        default=0.9,
        metadata={
            "help": "A composer's adherence target: this share of the classifier's ceiling on real held-out crops."
        },
    )
    sample_batch_size: int = field(default=64, metadata={"help": "Samples per generate() call."})
    seed: int = field(default=0, metadata={"help": "Seeds the samples (round r draws with seed + 1000 r) and DPO."})

    def __post_init__(self):
        if self.rounds < 1:
            raise InputError(f"--rounds {self.rounds}: must be at least 1")
        for name in ("samples_per_composer", "max_new_tokens", "batch_size", "sample_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} {getattr(self, name)}: must be at least 1")
        if self.samples_per_composer < 2:
            raise InputError(f"--samples_per_composer {self.samples_per_composer}: a pair needs at least 2")
        if self.pair_rule not in PAIR_RULES:
            raise InputError(f"--pair_rule {self.pair_rule!r}: choose one of {', '.join(PAIR_RULES)}")
        if not 0 < self.pair_fraction <= 0.5:
            raise InputError(f"--pair_fraction {self.pair_fraction}: must be within (0, 0.5]")
        if self.beta <= 0 or self.learning_rate <= 0 or self.dpo_epochs <= 0:
            raise InputError("--beta, --learning_rate and --dpo_epochs must be > 0")
