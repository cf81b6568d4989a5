"""Pieces longer than the context: windows, syntax errors, seconds, and drift (the music-metric gap of
the piece's last context's worth of new tokens against its first).

    python bench/bench_long_pieces.py --model_dir model_output --dataset_dir data --composer palestrina --num_samples 8

Draws --num_samples samples of --max_new_tokens (default: 4x the context; EOS held off unless
--allow_eos) with the model's default sampling settings (as generate.py does), in one batched windowed run. Each sample's first and last
`body_room(context)` new tokens, each cut to whole bars, are decoded and measured (`midilm.metrics`);
the drift is `summary_distance(compare(last, first))["mean_gap"]`. Reference points: each set's gap
to the composer's held-out pieces cut into passages of the samples' bar count, and the gap between two
halves of those real passages (alternate passages: what two sets of real music of the composer differ by).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from midilm.evaluation.data import join_pieces, load_eval_dataset, token_rows
from midilm.generation import decode_ids, load_model, prepare_generation
from midilm.grammar import count_syntax_errors
from midilm.metrics import bar_windows, compare, median_bars, piece_metrics, summary_distance
from midilm.modeling import context_length, load_midilm_dir
from midilm.rows import body_room
from midilm.tokenizer import bar_start_table


def whole_bars(ids: list[int], starts_bar: np.ndarray, from_start: bool) -> list[int]:
    """`ids` cut to whole bars: from its first bar line (`from_start` False), or up to its last one."""
    lines = np.flatnonzero(starts_bar[np.asarray(ids, dtype=np.int64)])
    return ids[lines[0] :] if not from_start else ids[: lines[-1]]


def mean_gap(a: list[dict], b: list[dict]) -> float | None:
    return summary_distance(compare(a, b))["mean_gap"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--composer", default="palestrina")
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default: 4x the context")
    parser.add_argument(
        "--allow_eos",
        action="store_true",
        help="let a sample end before --max_new_tokens (default: EOS is held off, so every sample is as long as asked)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()

    config, tokenizer, composer_map = load_midilm_dir(args.model_dir)
    context = context_length(config)
    total = args.max_new_tokens or 4 * context
    plan = prepare_generation(
        args.model_dir,
        args.composer,
        args.num_samples,
        max_new_tokens=total,
        min_new_tokens=None if args.allow_eos else total,
        seed=args.seed,
    )
    model = load_model(args.model_dir)
    start = time.perf_counter()
    output = plan.run(model)
    seconds = time.perf_counter() - start

    starts_bar = np.asarray(bar_start_table(tokenizer))
    room = body_room(context)
    first, last, errors, new = [], [], [], []
    for ids in plan.sample_ids(output):
        errors.append(count_syntax_errors(tokenizer, ids))
        music = ids[2:]
        music = music[:-1] if music and music[-1] == config.eos_token_id else music
        new.append(len(music))
        first.append(piece_metrics(decode_ids(tokenizer, whole_bars(music[:room], starts_bar, from_start=True))))
        last.append(piece_metrics(decode_ids(tokenizer, whole_bars(music[-room:], starts_bar, from_start=False))))

    dataset = load_eval_dataset(args.dataset_dir, args.split, tokenizer, composer_map)
    real = [
        decode_ids(tokenizer, p["ids"])
        for p in join_pieces(token_rows(dataset[args.split], tokenizer, composer_map, args.split), config.eos_token_id)
        if composer_map.names[p["composer"]] == plan.composers[0]
    ]
    bars = median_bars(first + last)
    passages = [piece_metrics(w) for s in real for w in bar_windows(s, bars)]
    print(
        json.dumps(
            {
                "composer": plan.composers[0],
                "samples": args.num_samples,
                "max_new_tokens": total,
                "context": context,
                "new_tokens": new,
                "windows": plan.windows,
                "syntax_error_rates": errors,
                "seconds": round(seconds, 1),
                "guidance_scale": plan.settings["effective_guidance_scale"],
                "bars_per_context": bars,
                "held_out_pieces": len(real),
                "real_passages": len(passages),
                "drift_gap_last_vs_first": mean_gap(last, first),
                "gap_first_vs_real": mean_gap(first, passages),
                "gap_last_vs_real": mean_gap(last, passages),
                "gap_real_half_vs_half": mean_gap(passages[0::2], passages[1::2]),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
