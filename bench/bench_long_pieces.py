"""Pieces longer than the context: windows, syntax errors, seconds, and drift (the music-metric gap of
the piece's last context's worth of new tokens against its first).

    python bench/bench_long_pieces.py --model_dir model_output --dataset_dir data --composer palestrina --num_samples 8

Draws --num_samples samples of --max_new_tokens (default: 4x the context; EOS held off unless
--allow_eos) with the model's default sampling settings (as generate.py does), in one batched windowed run.
The drift is measured as evaluate_samples.py --long_tokens measures it (`midilm.evaluation.long_pieces.drift`):
each sample's first and last `body_room(context)` new tokens, each cut to whole bars, decoded and measured
(`midilm.metrics.piece`); the drift is `summary_distance(compare(last, first))["mean_gap"]`. Reference points: each
set's gap to the composer's held-out pieces cut into passages of the windows' median bar count; the gap
between two sets of as many real passages drawn from two random halves of those pieces (real pieces vs
real pieces, the issue's target); and, as in earlier runs, between two halves of all those passages taken
alternately (passages of one piece on both sides).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from midilm.core.modeling import context_length, load_midilm_dir
from midilm.core.rows import body_room
from midilm.core.tokenizer import bar_start_table
from midilm.evaluation.data import join_pieces, load_eval_dataset, token_rows
from midilm.evaluation.long_pieces import drift, mean_gap
from midilm.metrics.piece import bar_windows, piece_metrics
from midilm.sampling.generation import decode_ids, load_model, prepare_generation
from midilm.sampling.grammar import count_syntax_errors
from midilm.sampling.settings import SamplingSettings


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
        settings=SamplingSettings(
            max_new_tokens=total, min_new_tokens=None if args.allow_eos else total, seed=args.seed
        ),
    )
    model = load_model(args.model_dir)
    start = time.perf_counter()
    output = plan.run(model)
    seconds = time.perf_counter() - start

    starts_bar = np.asarray(bar_start_table(tokenizer))
    samples = [
        {"composer": c, "name": f"{c}_{i}", "ids": ids, "windows": plan.windows}
        for i, (c, ids) in enumerate(zip(plan.composers, plan.sample_ids(output)))
    ]
    errors = [count_syntax_errors(tokenizer, s["ids"]) for s in samples]

    dataset = load_eval_dataset(args.dataset_dir, args.split, tokenizer, composer_map)
    composer = plan.composers[0]
    real = [
        {"composer": composer, "score": decode_ids(tokenizer, p["ids"])}
        for p in join_pieces(token_rows(dataset[args.split], tokenizer, composer_map, args.split), config.eos_token_id)
        if composer_map.names[p["composer"]] == composer
    ]
    section = drift(
        samples, real, [composer], tokenizer, starts_bar, body_room(context), config.eos_token_id, args.seed
    )
    row = section["per_composer"][composer]
    passages = [piece_metrics(w) for p in real for w in bar_windows(p["score"], row["bars_per_window"])]
    print(
        json.dumps(
            {
                "composer": composer,
                "samples": args.num_samples,
                "max_new_tokens": total,
                "context": context,
                "new_tokens": row["new_tokens"],
                "windows": plan.windows,
                "syntax_error_rates": errors,
                "seconds": round(seconds, 1),
                "guidance_scale": plan.settings["effective_guidance_scale"],
                "bars_per_context": row["bars_per_window"],
                "held_out_pieces": len(real),
                "real_passages": len(passages),
                "drift_gap_last_vs_first": row["drift_gap"],
                "gap_first_vs_real": row["first_vs_real"],
                "gap_last_vs_real": row["last_vs_real"],
                "gap_real_pieces_vs_real_pieces": row["real_pieces_gap"],
                "drift_within_real_pieces_gap": row["within_reference"],
                "gap_real_half_vs_half": mean_gap(passages[0::2], passages[1::2]),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
