"""evaluate_samples.py's arguments (`EvaluateArguments`), checked once, and the refusal to replace a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from midilm.core.errors import InputError
from midilm.sampling.settings import SamplingSettings

HELD_OUT_SPLITS = ("validation", "test")


@dataclass
class EvaluateArguments:
    model_dir: str = field(default="model_output", metadata={"help": "Model folder written by train.py."})
    dataset_dir: str = field(
        default="data", metadata={"help": "DatasetDict written by prepare_dataset.py (the model's own)."}
    )
    base_dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "For a model fine-tuned from another (train.py --init_from): the base model's dataset, whose "
                "pieces of the base's composers join --dataset_dir's, so that every composer, old and new, is "
                "judged against real pieces (the classifier is trained on both)."
            )
        },
    )
    output_dir: str = field(
        default="eval_report", metadata={"help": "Where report.json, report.md and the evaluated samples go."}
    )
    samples_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "Evaluate the <composer>_<i>.mid files generate.py wrote here instead of sampling anew (the "
                "sweep and the random baseline are always sampled)."
            )
        },
    )
    num_samples_per_composer: int = field(
        default=8, metadata={"help": "Samples per composer for each sample set and guidance scale."}
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Tokens per sample (capped to the model's context)."})
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": (
                "Guidance scale of the main sample sets (default: the scale this evaluation chooses with "
                "--write_default_guidance, else the model's midilm_guidance_scale in config.json)."
            )
        },
    )
    adherence_scales: str = field(
        default="1,1.5,2,3,5",
        metadata={
            "help": (
                "Comma-separated guidance scales of the sweep: at each, every composer is sampled with the "
                "musical guard on and off, and judged by the composer classifier, the music metrics, degenerate "
                "onsets and memorization; unconditional samples give the base rate. Empty = no sweep, no "
                "adherence section."
            )
        },
    )
    adherence_samples_per_composer: int = field(
        default=16,
        metadata={
            "help": (
                "Samples per composer at each sweep scale (and guard setting); as many unconditional samples as "
                "one scale holds."
            )
        },
    )
    guidance_scales: str | None = field(
        default=None, metadata={"help": "The former name of --adherence_scales; when given, it replaces them."}
    )
    write_default_guidance: bool = field(
        default=False,
        metadata={
            "help": (
                "Write the guidance scale the sweep chooses (the highest composer adherence whose degenerate "
                "samples, guard on, stay at or below the real pieces' rate) into --model_dir's config.json "
                "(midilm_guidance_scale), so generate.py uses it by default."
            )
        },
    )
    sample_batch_size: int = field(
        default=64,
        metadata={
            "help": (
                "Samples per generate() call (twice as many rows under guidance): bounds the memory of the KV cache."
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "Seeds the samples and the random-weight model."})
    split: str = field(
        default="validation",
        metadata={"help": "Held-out split of the reference pieces and the likelihood: validation or test."},
    )
    composers: str | None = field(
        default=None, metadata={"help": "Comma-separated composers to evaluate (default: all of the model's)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass of the likelihood evaluation."})
    accompaniment_pieces: int = field(
        default=2,
        metadata={
            "help": (
                "Held-out pieces per composer (the shortest) whose melody the trained and the random-weight "
                "model accompany, for melody adherence and harmonic fit beside the real piece's; 0 = none. Only "
                "when the dataset holds accompaniment rows (prepare_dataset.py --tasks accompaniment)."
            )
        },
    )
    long_tokens: int = field(
        default=0,
        metadata={
            "help": (
                "Also draw --long_samples_per_composer pieces of exactly this many new tokens per composer (EOS "
                "held off; written in windows beyond the context, at the main guidance scale) and report their "
                "drift: the music-metric gap of each piece's last window against its first, beside the gap between "
                "two sets of the composer's real pieces. At least twice the context less BOS and the composer, so "
                "that the two windows do not overlap (4x the context is issue 23's figure); 0 = off."
            )
        },
    )
    long_samples_per_composer: int = field(
        default=4, metadata={"help": "Long pieces per composer with --long_tokens (one batched windowed run)."}
    )
    infill_pieces: int = field(
        default=2,
        metadata={
            "help": (
                "For a model trained with the infill task: held-out pieces per composer (the shortest) whose spans "
                "are scored (NLL given the bars before and after, against the bars before only) and rewritten (metric "
                "gap to the real spans, seams, notes outside the span, syntax); 0 = off."
            )
        },
    )
    infill_spans_per_piece: int = field(
        default=2, metadata={"help": "Spans per piece for the infilling figures (seeded by --seed)."}
    )
    infill_max_bars: int = field(
        default=4, metadata={"help": "Longest span for the infilling figures, in bars (each span: 1 to this many)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output_dir."})

    def __post_init__(self):
        if self.split not in HELD_OUT_SPLITS:
            raise InputError(f"--split {self.split!r}: choose a held-out split ({' or '.join(HELD_OUT_SPLITS)})")
        for name in (
            "num_samples_per_composer",
            "max_new_tokens",
            "batch_size",
            "adherence_samples_per_composer",
            "sample_batch_size",
            "long_samples_per_composer",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} {getattr(self, name)}: must be at least 1")
        for name in ("infill_pieces", "infill_spans_per_piece", "infill_max_bars"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name} {getattr(self, name)}: must be 0 (off) or more")
        if self.long_tokens < 0:
            raise InputError(f"--long_tokens {self.long_tokens}: must be 0 (off) or a length in tokens")
        if self.accompaniment_pieces < 0:
            raise InputError(f"--accompaniment_pieces {self.accompaniment_pieces}: must be 0 or more")
        flag, text = (
            ("--guidance_scales", self.guidance_scales)
            if self.guidance_scales is not None
            else ("--adherence_scales", self.adherence_scales)
        )
        try:
            # sorted and unique: the table reads top to bottom, and one scale is sampled once
            self.scales = sorted({float(s) for s in str(text).split(",") if s.strip()})
        except ValueError as err:
            raise InputError(f"{flag} {text!r}: expected numbers such as 1,1.5,2,3,5") from err
        if any(s < 0 for s in self.scales):
            raise InputError("guidance scales must be >= 0 (1 = no guidance)")
        SamplingSettings(guidance_scale=self.guidance_scale)  # its checks


def check_output_dir(args: EvaluateArguments) -> Path:
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not args.overwrite:
        raise InputError(
            f"--output_dir {output_dir} already exists; pass --overwrite to replace it, or choose another folder"
        )
    return output_dir
