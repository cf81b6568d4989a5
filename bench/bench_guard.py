"""The musical guard's cost beside the grammar's, on generate.py's sampling path (CFG s = 3 + grammar).

    python bench/bench_guard.py                              # CPU, tiny random-weight model, batch 1, 4, 8, 256 tokens
    python bench/bench_guard.py --new_tokens 32 --repeats 1  # smoke run

Per batch size: the time of one call of each processor (the grammar's, the guard's; both see the 2B
rows of guidance), and generate()'s wall time with the grammar alone and with grammar + guard, every
sample exactly --new_tokens long. The guard's bounds are learnt (99.9% quantile) from the synthetic
pieces the tokenizer is trained on. Prints a Markdown table with machine, date and command; every
ratio compares two numbers of this one run.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import torch

# the sibling script: python puts the script's own folder (bench/) first on sys.path
from bench_sampling import SETTINGS, machine, random_model, synthetic_piece
from transformers import LogitsProcessor

from midilm.core.tokenizer import encode_ids
from midilm.sampling.generation import build_plan, model_settings
from midilm.sampling.guard import NoteGuardLogitsProcessor, count_histograms, histogram_quantile, onset_counts
from midilm.sampling.settings import SamplingSettings


class Timed(LogitsProcessor):
    """A processor whose calls are timed."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, input_ids, scores):
        began = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - began
        self.calls += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab_size", type=int, default=1000)
    parser.add_argument("--batch_sizes", default="1,4,8")
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per cell; the median is reported.")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # Build model and bounds
    model, tokenizer, composer_map = random_model(args.preset, args.vocab_size, "cpu")
    onset_hist, bar_hist = count_histograms(
        tokenizer, (encode_ids(tokenizer, synthetic_piece(seed)) for seed in range(48))
    )
    bounds = {
        "max_notes_per_onset": histogram_quantile(onset_hist, 0.999),
        "max_notes_per_bar": histogram_quantile(bar_hist, 0.999),
    }
    composer = composer_map.names[0]

    def run(batch: int, guard: bool) -> tuple[float, float, float, list[list[int]]]:
        settings = SamplingSettings(
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            guidance_scale=args.guidance_scale,
            **SETTINGS,
        )
        plan = build_plan(
            tokenizer,
            composer_map,
            model.config,
            model_settings(model.config, model.generation_config, settings),
            [composer] * batch,
            device=model.device,
        )
        processors = plan.logits_processor
        processors[0] = grammar = Timed(processors[0])
        guard_timer = Timed(NoteGuardLogitsProcessor(tokenizer, bounds))
        if guard:
            processors.insert(1, guard_timer)
        began = time.perf_counter()
        out = plan.run(model, logits_processor=processors)
        wall = time.perf_counter() - began
        per_call = lambda t: t.seconds / t.calls * 1e3 if t.calls else float("nan")  # noqa: E731
        return wall, per_call(grammar), per_call(guard_timer), plan.sample_ids(out)

    # Measure
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        run(batch, True)  # warm-up: builds and caches the grammar's and guard's tables
        cells = {False: [], True: []}
        for _ in range(args.repeats):
            for guard in (False, True):
                cells[guard].append(run(batch, guard))
        plain, guarded = (statistics.median(c[0] for c in cells[g]) for g in (False, True))
        grammar_ms = statistics.median(c[1] for c in cells[True])
        guard_ms = statistics.median(c[2] for c in cells[True])
        worst = max(onset_counts(tokenizer, ids)[0] for c in cells[True] for ids in c[3])
        worst_off = max(onset_counts(tokenizer, ids)[0] for c in cells[False] for ids in c[3])
        rows.append((batch, grammar_ms, guard_ms, plain, guarded, worst, worst_off))

    # Report
    print(f"- machine: {machine('cpu')}")
    print(f"- date: {datetime.date.today().isoformat()}; command: `python {' '.join(sys.argv)}`")
    print(
        f"- model: random-weight Llama `{args.preset}` ({model.num_parameters() / 1e6:.2f}M parameters, vocabulary "
        f"{len(tokenizer)}); "
        f"CFG s = {args.guidance_scale} (2B rows) + grammar; {args.new_tokens} new tokens per sample; median of "
        f"{args.repeats}"
    )
    print(f"- guard bounds (99.9% quantile of the synthetic training pieces): {bounds}")
    print()
    print(
        "| batch | grammar ms/call | guard ms/call | guard / grammar | generate s, grammar | generate s, grammar + "
        "guard | guard's cost | most notes at one onset, guard on / off |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch, grammar_ms, guard_ms, plain, guarded, worst, worst_off in rows:
        print(
            f"| {batch} | {grammar_ms:.3f} | {guard_ms:.3f} | {guard_ms / grammar_ms:.2f}x | {plain:.3f} | "
            f"{guarded:.3f} | "
            f"{guarded / plain:.2f}x | {worst} / {worst_off} |"
        )


if __name__ == "__main__":
    main()
