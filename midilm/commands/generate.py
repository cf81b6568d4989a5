"""Sample MIDI from a trained midilm model: composer-conditioned, with classifier-free guidance and the
REMI grammar processor, optionally continuing a MIDI file or accompanying a melody.

    midilm generate --model_dir model_output --composer bach --num_samples 4 --seed 0 --output_dir samples
    midilm generate --model_dir model_output --composer mozart --prompt_midi theme.mid --prompt_bars 4 --wav --png
    midilm generate --model_dir model_output --melody_midi tune.mid --composer bach --wav --png
    midilm generate --model_dir model_output --infill_midi piece.mid --bars 9-12 --composer bach --num_samples 4
    midilm generate --model_dir model_output --composer palestrina --max_new_tokens 4000   # beyond the context: in windows
    midilm generate --model_dir model_output --list_composers
    midilm generate --model_dir model_output --composer all --num_samples 16 --compile   # compiled decoding (static cache)

In a clone, `python generate.py` takes the same flags and reads the config.json beside it.
Sampling defaults come from the model folder (the guidance scale from config.json's
midilm_guidance_scale, which evaluate_samples.py --write_default_guidance chooses from data; the rest
from generation_config.json); any flag overrides them. The musical guard (at most as many notes at one
onset and in one bar as the training data hold) is on for a model that carries its bounds; --no_guard
turns it off. Writes
<composer>_<i>.mid and <composer>_<i>.json (tokens, settings, seed), plus .wav and .png on request;
a --max_new_tokens beyond the model's context is written in windows (the JSON's `windows`); with --melody_midi, accompaniment_<composer>_<i>.* (the melody unchanged on its own track, the
generated parts beside it, melody adherence and harmonic fit in the JSON); with --infill_midi and --bars,
infill_<composer>_<i>.* (the whole piece, those bars rewritten, every other note as in the file).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from midilm.accompaniment import prepare_accompaniment
from midilm.cli import parse_args, run
from midilm.errors import InputError
from midilm.generation import list_composers, load_model, prepare_generation
from midilm.infilling import prepare_infill
from midilm.sample_files import (
    accompaniment_files,
    check_soundfont,
    infill_files,
    sample_files,
    write_accompaniments,
    write_infills,
    write_samples,
)
from midilm.sampling import SamplingSettings


@dataclass
class GenerateArguments:
    model_dir: str = field(default="model_output", metadata={"help": "Model folder written by train.py."})
    composer: str | None = field(
        default=None,
        metadata={
            "help": "Composer to imitate (case-insensitive): a name, a comma-separated list, `all`, or `none` (unconditional)."
        },
    )
    num_samples: int = field(
        default=1, metadata={"help": "Samples per composer; all come from one batched generate() call."}
    )
    output_dir: str = field(default="samples", metadata={"help": "Where <composer>_<i>.mid/.json (and .wav, .png) go."})
    prompt_midi: str | None = field(default=None, metadata={"help": "MIDI file to continue."})
    prompt_bars: int | None = field(
        default=None, metadata={"help": "Continue only the first N bars of --prompt_midi (default: all)."}
    )
    melody_midi: str | None = field(
        default=None,
        metadata={
            "help": "Accompany this melody (a marked melody track, else the top voice): writes accompaniment_<composer>_<i>.mid with the melody unchanged on its own track plus the generated parts, bar for bar; --composer is optional (default: none), --max_new_tokens does not apply (the melody sets the length)."
        },
    )
    infill_midi: str | None = field(
        default=None,
        metadata={
            "help": "Rewrite --bars of this piece: writes infill_<composer>_<i>.mid, the whole piece with those bars "
            "new and every other note as in the file; needs a model trained with --tasks continuation,infill."
        },
    )
    bars: str | None = field(
        default=None, metadata={"help": "The bars --infill_midi rewrites: first-last, counted from 1 (9-12), or one."}
    )
    wav: bool = field(default=False, metadata={"help": "Also render a WAV with a General MIDI soundfont."})
    png: bool = field(default=False, metadata={"help": "Also draw a piano-roll PNG."})
    soundfont: str | None = field(default=None, metadata={"help": "Soundfont for --wav (default: one found locally)."})
    list_composers: bool = field(default=False, metadata={"help": "Print the model's composers and exit."})
    overwrite: bool = field(default=False, metadata={"help": "Replace sample files already in --output_dir."})


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=file or sys.stderr)


def accompany(args, settings: SamplingSettings, device: str) -> None:
    # Check every input before the weights are read
    if args.prompt_midi is not None:
        raise InputError("--melody_midi and --prompt_midi: choose one (accompany a melody, or continue a piece)")
    if settings.static_cache or settings.compile:
        raise InputError("--static_cache and --compile: --melody_midi does not take them yet; leave them out")
    job = prepare_accompaniment(args.model_dir, args.melody_midi, args.composer, args.num_samples, settings)
    files = accompaniment_files(job.composers, Path(args.output_dir), args.wav, args.png, args.overwrite)
    soundfont = check_soundfont(args.soundfont) if args.wav else None

    # Sample: the melody's bars, in windows when they do not fit the context at once
    model = load_model(args.model_dir, device)
    start = time.perf_counter()
    results = job.run(model)
    seconds = time.perf_counter() - start

    # Write (under temporary names, moved into place once all are complete)
    record = {
        "model_dir": args.model_dir,
        "melody_midi": args.melody_midi,
        "melody_source": job.melody.source,
        "device": device,
    }
    write_accompaniments(results, files, record, soundfont)
    for paths in files:
        print(" ".join(str(p) for p in paths.values()))
    print(
        f"{len(results)} accompaniment(s) of {job.melody.num_bars} bars in {results[0].windows} window(s), {seconds:.1f} s on {device}"
    )


def rewrite(args, settings: SamplingSettings, device: str) -> None:
    # Check every input before the weights are read
    if args.prompt_midi is not None or args.melody_midi is not None:
        given = "--prompt_midi" if args.prompt_midi is not None else "--melody_midi"
        raise InputError(f"--infill_midi and {given}: choose one (rewrite bars of a piece, or {given}'s task)")
    if args.bars is None:
        raise InputError("--infill_midi needs --bars: the bars to rewrite, first-last counted from 1 (9-12)")
    job = prepare_infill(args.model_dir, args.infill_midi, args.bars, args.composer, args.num_samples, settings)
    files = infill_files(job.composers, Path(args.output_dir), args.wav, args.png, args.overwrite)
    soundfont = check_soundfont(args.soundfont) if args.wav else None

    # Sample: every span in one batched generate() call
    model = load_model(args.model_dir, device)
    start = time.perf_counter()
    results = job.run(model)
    seconds = time.perf_counter() - start

    # Write (under temporary names, moved into place once all are complete)
    record = {"model_dir": args.model_dir, "infill_midi": args.infill_midi, "device": device}
    write_infills(results, files, record, soundfont)
    for paths in files:
        print(" ".join(str(p) for p in paths.values()))
    first, last = job.bars
    print(f"{len(results)} rewrite(s) of bars {first}-{last} of {job.piece.num_bars} in {seconds:.1f} s on {device}")


def main(argv: list[str] | None = None, config_file: Path | None = None) -> None:
    args, settings, _ = parse_args(
        (GenerateArguments, SamplingSettings), ("generate",), argv, description=__doc__, config_file=config_file
    )
    if args.list_composers:
        print(list_composers(args.model_dir))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.bars is not None and args.infill_midi is None:
        raise InputError("--bars: the bars of --infill_midi to rewrite; give --infill_midi too")
    if args.infill_midi is not None:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            rewrite(args, settings, device)
        return
    if args.melody_midi is not None:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            accompany(args, settings, device)
        return

    # Check every input before the weights are read
    plan = prepare_generation(
        args.model_dir,
        args.composer,
        args.num_samples,
        settings,
        prompt_midi=args.prompt_midi,
        prompt_bars=args.prompt_bars,
        device=device,
    )
    files = sample_files(plan, Path(args.output_dir), args.wav, args.png, args.overwrite)
    soundfont = check_soundfont(args.soundfont) if args.wav else None

    # Sample: every sample from one batched generate() call, or one per window beyond the context
    model = load_model(args.model_dir, device)
    start = time.perf_counter()
    output = plan.run(model, progress=True)
    seconds = time.perf_counter() - start
    new_tokens = (output.shape[1] - plan.input_ids.shape[1]) * plan.num_samples

    # Write (under temporary names, moved into place once all are complete)
    record = {
        "model_dir": args.model_dir,
        "prompt_midi": args.prompt_midi,
        "prompt_bars": args.prompt_bars,
        "device": device,
    }
    write_samples(plan, output, files, record, soundfont)
    for paths in files:
        print(" ".join(str(p) for p in paths.values()))
    speed = " (static cache)" if plan.settings["static_cache"] else ""
    speed = (
        f" (static cache, compiled with {settings.compile_backend}: the time includes compiling)"
        if plan.settings["compile"]
        else speed
    )
    windows = f" in {plan.windows} windows" if plan.windows > 1 else ""
    print(f"{plan.num_samples} sample(s), up to {new_tokens} new tokens{windows} in {seconds:.1f} s on {device}{speed}")


if __name__ == "__main__":
    run(main)
