"""Sampling speed: plain sampling, our batched CFG, transformers' built-in CFG, and the grammar's cost.

    python bench/bench_sampling.py                                   # CPU, tiny preset, batch 1, 4, 8, 256 new tokens
    python bench/bench_sampling.py --new_tokens 16 --repeats 1       # smoke run
    python bench/bench_sampling.py --device cuda --preset small --static_cache --compile
    python bench/bench_sampling.py --model_dir model_output          # a trained model instead of random weights
    python bench/bench_sampling.py --modes dynamic,static,compile --batch_sizes 1,4  # generate.py's path per cache mode

Every method generates exactly --new_tokens tokens per sample (min_new_tokens = max_new_tokens), from
the same model, prompt ([BOS, COMPOSER]) and sampling settings. tokens/s counts the samples' tokens
only (not the unconditional rows). Prints a Markdown table with machine, date and command for
bench/RESULTS.md; each ratio compares two numbers measured in this one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from symusic import Note, Score, Tempo, TimeSignature, Track
from transformers import AutoModelForCausalLM, GenerationConfig

from midilm.core.modeling import PRESETS, build_config, context_length, generation_config, load_midilm_dir
from midilm.core.rows import RowLayout, body_room, new_tokens_start
from midilm.core.tokenizer import build_tokenizer, tokenizer_settings
from midilm.sampling.generation import build_plan, model_settings
from midilm.sampling.settings import SamplingSettings, fast_sampling

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.02}  # the models' defaults


def synthetic_piece(seed: int, bars: int = 16) -> Score:
    """Random-walk melody over chords: enough variety for BPE to learn a realistic vocabulary size."""
    rng = random.Random(seed)
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, rng.choice([72, 96, 120])))
    melody, chords = Track(program=0), Track(program=rng.choice([0, 40, 48]))
    pitch = rng.randint(60, 72)
    for step in range(bars * 8):
        if rng.random() < 0.8:
            pitch = max(48, min(84, pitch + rng.choice([-3, -2, -1, 1, 2, 3])))
            melody.notes.append(Note(step * 240, rng.choice([240, 480]), pitch, rng.randint(50, 110)))
    for bar in range(bars):
        root = rng.choice([48, 50, 53, 55, 57])
        for k in (0, 4, 7):
            chords.notes.append(Note(bar * 1920, 1920, root + k, 70))
    score.tracks.extend([melody, chords])
    return score


def random_model(preset: str, vocab_size: int, device: str):
    """A random-weight Llama of `preset` with a REMI+BPE tokenizer trained on synthetic pieces."""
    settings = tokenizer_settings(json.loads((REPO / "config.json").read_text()).get("tokenizer"))
    tokenizer, composer_map = build_tokenizer(settings, ["bach", "mozart"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for seed in range(48):
            paths.append(Path(tmp) / f"{seed}.mid")
            synthetic_piece(seed).dump_midi(paths[-1])
        tokenizer.train(vocab_size=vocab_size, files_paths=paths)
    config = build_config("llama", preset, tokenizer, composer_map, PRESETS[preset]["context"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = generation_config(config)
    return model.to(device).eval(), tokenizer, composer_map


def machine(device: str) -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" else ""
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads "
        f"of {os.cpu_count()} CPUs{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="tiny", help="Model size preset for the random-weight model.")
    parser.add_argument("--model_dir", help="Bench a trained model folder instead of a random-weight one.")
    parser.add_argument(
        "--vocab_size",
        type=int,
        default=1000,
        help="BPE vocabulary of the random-weight model (prepare_dataset.py's default).",
    )
    parser.add_argument("--batch_sizes", default="1,4,8")
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per cell; the median is reported.")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--static_cache", action="store_true", help="cache_implementation='static' for every method.")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward (implies --static_cache).")
    parser.add_argument(
        "--compile_backend", default="inductor", help="torch.compile backend for --compile and the compile mode."
    )
    parser.add_argument(
        "--modes",
        help="Instead of the method table: generate.py's sampling (s = 1, and CFG + grammar) in each of these "
        "cache modes (dynamic, static, compile), with tokens/s and whether the tokens equal the dynamic cache's.",
    )
    parser.add_argument("--no_grammar_rows", action="store_true", help="Skip the grammar overhead rows.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.static_cache |= args.compile
    return args


def bench_model(args: argparse.Namespace):
    """(model, tokenizer, composer map, its name for the report): a trained folder, or random weights."""
    if args.model_dir:
        config, tokenizer, composer_map = load_midilm_dir(args.model_dir)
        model = AutoModelForCausalLM.from_pretrained(args.model_dir).to(args.device).eval()
        model_name = (
            f"{args.model_dir} ({model.num_parameters() / 1e6:.2f}M parameters, vocabulary {config.vocab_size})"
        )
    else:
        model, tokenizer, composer_map = random_model(args.preset, args.vocab_size, args.device)
        model_name = (
            f"random-weight Llama `{args.preset}` ({model.num_parameters() / 1e6:.2f}M parameters, "
            f"vocabulary {model.config.vocab_size})"
        )
    if args.new_tokens > body_room(context_length(model.config)):
        raise SystemExit(f"--new_tokens is over the model's context of {context_length(model.config)}")
    return model, tokenizer, composer_map, model_name


def sampling_methods(args: argparse.Namespace, model, tokenizer, composer_map) -> dict:
    """name → (batch → a call that samples `args.new_tokens` tokens per row)."""
    composer, n = composer_map.names[0], args.new_tokens
    # generate.py's own settings for the static cache and compile (on CPU too), as generate() kwargs
    speed = GenerationConfig()
    fast_sampling(speed, args.static_cache, args.compile, args.compile_backend, args.device)
    cache = {
        k: getattr(speed, k)
        for k in ("cache_implementation", "compile_config", "disable_compile")
        if getattr(speed, k) is not None
    }

    def ours(batch: int, scale: float, grammar: bool):
        settings = SamplingSettings(
            max_new_tokens=n, min_new_tokens=n, guidance_scale=scale, grammar=grammar, **SETTINGS
        )
        plan = build_plan(
            tokenizer,
            composer_map,
            model.config,
            model_settings(model.config, model.generation_config, settings),
            [composer] * batch,
            device=model.device,
        )
        plan.generation_config.update(**cache)
        return lambda: plan.run(model)

    def transformers_sampling(batch: int, scale: float):
        layout = RowLayout.for_tokenizer(tokenizer)
        ids = torch.tensor([layout.continuation_prompt(composer_map.id_of(composer))] * batch, device=model.device)
        extra = {}
        if scale != 1.0:
            negative = torch.tensor([layout.continuation_prompt(composer_map.none_id)] * batch, device=model.device)
            extra = {"negative_prompt_ids": negative, "negative_prompt_attention_mask": torch.ones_like(negative)}
        return lambda: model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            max_new_tokens=n,
            min_new_tokens=n,
            guidance_scale=scale,
            **SETTINGS,
            **cache,
            **extra,
        )

    methods = {
        "plain sampling (transformers, do_sample)": lambda b: transformers_sampling(b, 1.0),
        "plain sampling (midilm processor, s = 1)": lambda b: ours(b, 1.0, False),
        f"CFG s={args.guidance_scale:g}: midilm batched": lambda b: ours(b, args.guidance_scale, False),
        f"CFG s={args.guidance_scale:g}: transformers built-in": lambda b: transformers_sampling(
            b, args.guidance_scale
        ),
    }
    if not args.no_grammar_rows:
        methods["plain (midilm, s = 1) + grammar"] = lambda b: ours(b, 1.0, True)
        methods[f"CFG s={args.guidance_scale:g}: midilm batched + grammar"] = lambda b: ours(
            b, args.guidance_scale, True
        )
    return methods


def measure(args: argparse.Namespace, methods: dict) -> dict:
    """(method, batch) → median seconds: every method warmed up, then the methods take turns, so load
    from other processes spreads over all of them rather than landing on one."""
    n = args.new_tokens

    def timed(run) -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    results = {}
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        runs = {name: make(batch) for name, make in methods.items()}
        times = {name: [] for name in runs}
        with torch.no_grad():
            for name, run in runs.items():
                out = run()  # warm-up (and compilation)
                assert out.shape[1] - new_tokens_start(0) == n, (
                    f"{name}: {out.shape[1] - new_tokens_start(0)} new tokens, expected {n}"
                )
            for _ in range(args.repeats):
                for name, run in runs.items():
                    times[name].append(timed(run))
        for name in runs:
            results[name, batch] = statistics.median(times[name])
            print(f"  {name}, batch {batch}: {batch * n / results[name, batch]:.1f} tokens/s", file=sys.stderr)
    return results


def report(args: argparse.Namespace, names: list[str], results: dict, model_name: str) -> str:
    n = args.new_tokens
    plain, ours_cfg, hf_cfg = names[0], names[2], names[3]
    lines = [
        f"### Sampling speed, {datetime.date.today().isoformat()}",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {machine(args.device)}",
        (
            f"- model: {model_name}; device {args.device}; {'static cache' if args.static_cache else 'dynamic cache'}"
            f"{', torch.compile' if args.compile else ''}; {n} new tokens per sample; median of {args.repeats} runs "
            "after one warm-up"
        ),
        f"- settings: {', '.join(f'{k} {v}' for k, v in SETTINGS.items())}",
        "",
        "| method | batch | s | tokens/s | time vs plain |",
        "|---|---:|---:|---:|---:|",
    ]
    batches = sorted({b for _, b in results})
    for batch in batches:
        for name in names:
            seconds = results[name, batch]
            lines.append(
                f"| {name} | {batch} | {seconds:.3f} | {batch * n / seconds:.1f} | "
                f"{seconds / results[plain, batch]:.2f}x |"
            )
    lines += [
        "",
        "| batch | CFG speed-up, midilm over transformers | midilm CFG cost vs plain | grammar cost (CFG) |",
        "|---:|---:|---:|---:|",
    ]
    for batch in batches:
        grammar = names[-1] if not args.no_grammar_rows else None
        grammar_cost = f"{results[grammar, batch] / results[ours_cfg, batch]:.2f}x" if grammar else "-"
        lines.append(
            f"| {batch} | {results[hf_cfg, batch] / results[ours_cfg, batch]:.2f}x | "
            f"{results[ours_cfg, batch] / results[plain, batch]:.2f}x | {grammar_cost} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_arguments()
    model, tokenizer, composer_map, model_name = bench_model(args)
    if args.modes:
        compare_modes(args, model, tokenizer, composer_map, composer_map.names[0], model_name)
        return
    methods = sampling_methods(args, model, tokenizer, composer_map)
    results = measure(args, methods)
    print(report(args, list(methods), results, model_name))


def compare_modes(args, model, tokenizer, composer_map, composer: str, model_name: str) -> None:
    """tokens/s of generate.py's sampling per cache mode, and whether each mode's tokens equal the dynamic cache's."""
    n, modes = args.new_tokens, [m.strip() for m in args.modes.split(",")]
    flags = {"dynamic": (False, False), "static": (True, False), "compile": (True, True)}
    methods = {"s = 1": (1.0, False), f"CFG s={args.guidance_scale:g} + grammar": (args.guidance_scale, True)}

    def make(mode: str, batch: int, scale: float, grammar: bool):
        settings = SamplingSettings(
            max_new_tokens=n,
            min_new_tokens=n,
            guidance_scale=scale,
            grammar=grammar,
            **SETTINGS,
            static_cache=flags[mode][0],
            compile=flags[mode][1],
            compile_backend=args.compile_backend,
        )
        plan = build_plan(
            tokenizer,
            composer_map,
            model.config,
            model_settings(model.config, model.generation_config, settings),
            [composer] * batch,
            device=model.device,
        )
        return lambda: plan.run(model)

    rows, outputs, seconds, first_call = [], {}, {}, {}
    batches = [int(b) for b in args.batch_sizes.split(",")]
    with torch.no_grad():
        for batch in batches:
            for method, (scale, grammar) in methods.items():
                runs = {mode: make(mode, batch, scale, grammar) for mode in modes}
                for mode, run in runs.items():
                    start = time.perf_counter()
                    outputs[mode] = run()  # warm-up, and compiling for the compile mode
                    first_call[mode, batch, method] = time.perf_counter() - start
                times = {mode: [] for mode in modes}
                for _ in range(args.repeats):
                    for mode, run in runs.items():
                        start = time.perf_counter()
                        out = run()
                        times[mode].append(time.perf_counter() - start)
                        assert torch.equal(out, outputs[mode]), f"{mode}: not reproducible from call to call"
                for mode in modes:
                    seconds[mode, batch, method] = statistics.median(times[mode])
                    same = torch.equal(outputs[mode], outputs[modes[0]])
                    rows.append(
                        (method, batch, mode, seconds[mode, batch, method], first_call[mode, batch, method], same)
                    )
                    print(
                        f"  {method}, batch {batch}, {mode}: {batch * n / seconds[mode, batch, method]:.1f} tokens/s",
                        file=sys.stderr,
                    )
    lines = [
        f"### Sampling per cache mode, {datetime.date.today().isoformat()}",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {machine(args.device)}; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- model: {model_name}; device {args.device}; {n} new tokens per sample; median of {args.repeats} runs "
        "after one warm-up; "
        f"compile backend {args.compile_backend}",
        f"- settings: {', '.join(f'{k} {v}' for k, v in SETTINGS.items())}",
        "",
        f"| method | batch | cache | tokens/s | vs {modes[0]} | first call (s) | tokens equal {modes[0]}'s |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for method, batch, mode, secs, first, same in rows:
        base = seconds[modes[0], batch, method]
        lines.append(
            f"| {method} | {batch} | {mode} | {batch * n / secs:.1f} | {base / secs:.2f}x | {first:.1f} | "
            f"{'yes' if same else 'NO'} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
