"""Sample MIDI from a trained midilm model: composer-conditioned, with classifier-free guidance and the
REMI grammar processor, optionally continuing a MIDI file or accompanying a melody.

    python generate.py --model_dir model_output --composer bach --num_samples 4 --seed 0 --output_dir samples
    python generate.py --model_dir model_output --composer mozart --prompt_midi theme.mid --prompt_bars 4 --wav --png
    python generate.py --model_dir model_output --melody_midi tune.mid --composer bach --wav --png
    python generate.py --model_dir model_output --list_composers
    python generate.py --model_dir model_output --composer all --num_samples 16 --compile   # compiled decoding (static cache)

Sampling defaults come from the model folder (the guidance scale from config.json's
midilm_guidance_scale, which evaluate_samples.py --write_default_guidance chooses from data; the rest
from generation_config.json); any flag overrides them. The musical guard (at most as many notes at one
onset and in one bar as the training data hold) is on for a model that carries its bounds; --no_guard
turns it off. Writes
<composer>_<i>.mid and <composer>_<i>.json (tokens, settings, seed), plus .wav and .png on request;
with --melody_midi, accompaniment_<composer>_<i>.* (the melody unchanged on its own track, the
generated parts beside it, melody adherence and harmonic fit in the JSON).
"""

import sys
import time
import warnings
from pathlib import Path

import torch

from midilm.cli import parse_args, run
from midilm.generation import (
    GenerateArguments,
    accompaniment_files,
    check_soundfont,
    list_composers,
    load_model,
    prepare_generation,
    sample_files,
    write_accompaniments,
    write_samples,
)
from midilm.errors import InputError


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=file or sys.stderr)


def accompany(args, device: str) -> None:
    from midilm.accompaniment import prepare_accompaniment

    # Check every input before the weights are read
    if args.prompt_midi is not None:
        raise InputError("--melody_midi and --prompt_midi: choose one (accompany a melody, or continue a piece)")
    if args.static_cache or args.compile:
        raise InputError("--static_cache and --compile: --melody_midi does not take them yet; leave them out")
    job = prepare_accompaniment(
        args.model_dir, args.melody_midi, args.composer, args.num_samples, seed=args.seed, grammar=not args.no_grammar, guard=not args.no_guard,
        guidance_scale=args.guidance_scale, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )
    files = accompaniment_files(job.composers, Path(args.output_dir), args.wav, args.png, args.overwrite)
    soundfont = check_soundfont(args.soundfont) if args.wav else None

    # Sample: the melody's bars, in windows when they do not fit the context at once
    model = load_model(args.model_dir, device)
    start = time.perf_counter()
    results = job.run(model)
    seconds = time.perf_counter() - start

    # Write (under temporary names, moved into place once all are complete)
    record = {"model_dir": args.model_dir, "melody_midi": args.melody_midi, "melody_source": job.melody.source, "device": device}
    write_accompaniments(results, files, record, soundfont)
    for paths in files:
        print(" ".join(str(p) for p in paths.values()))
    print(f"{len(results)} accompaniment(s) of {job.melody.num_bars} bars in {results[0].windows} window(s), {seconds:.1f} s on {device}")


def main() -> None:
    args, _ = parse_args((GenerateArguments,), ("generate",), description=__doc__)
    if args.list_composers:
        print(list_composers(args.model_dir))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.melody_midi is not None:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            accompany(args, device)
        return

    # Check every input before the weights are read
    plan = prepare_generation(
        args.model_dir, args.composer, args.num_samples, max_new_tokens=args.max_new_tokens, guidance_scale=args.guidance_scale,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        seed=args.seed, prompt_midi=args.prompt_midi, prompt_bars=args.prompt_bars, grammar=not args.no_grammar, guard=not args.no_guard, device=device,
        static_cache=args.static_cache, compile=args.compile, compile_backend=args.compile_backend,
    )
    files = sample_files(plan, Path(args.output_dir), args.wav, args.png, args.overwrite)
    soundfont = check_soundfont(args.soundfont) if args.wav else None

    # Sample: every sample from one batched generate() call
    model = load_model(args.model_dir, device)
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(
            plan.input_ids, attention_mask=plan.attention_mask, generation_config=plan.generation_config, logits_processor=plan.logits_processor
        )
    seconds = time.perf_counter() - start
    new_tokens = (output.shape[1] - plan.input_ids.shape[1]) * plan.num_samples

    # Write (under temporary names, moved into place once all are complete)
    record = {"model_dir": args.model_dir, "prompt_midi": args.prompt_midi, "prompt_bars": args.prompt_bars, "device": device}
    write_samples(plan, output, files, record, soundfont)
    for paths in files:
        print(" ".join(str(p) for p in paths.values()))
    speed = " (static cache)" if plan.settings["static_cache"] else ""
    speed = f" (static cache, compiled with {args.compile_backend}: the time includes compiling)" if plan.settings["compile"] else speed
    print(f"{plan.num_samples} sample(s), up to {new_tokens} new tokens in {seconds:.1f} s on {device}{speed}")


if __name__ == "__main__":
    run(main)
