"""The report's music-metric gap of saved sample sets, against whole held-out pieces (the measure before
commit dc8b41e) and against the held-out pieces cut into passages as long as the samples (the measure
since).

    python bench/metric_gap_passages.py --model_dir model_output --dataset_dir data \\
        --samples_dir samples/eval/samples trained sweep_s2

Each named set under --samples_dir (`<composer>_<i>.mid`) is compared, per composer, with that
composer's pieces of --split: `midilm.metrics.compare.compare` and `summary_distance`'s mean standardised gap.
Passages are `midilm.metrics.piece.bar_windows` of the set's own median bar count. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from symusic import Score

from midilm.core.modeling import load_midilm_dir
from midilm.evaluation.data import join_pieces, load_eval_dataset, token_rows
from midilm.metrics.compare import compare, summary_distance
from midilm.metrics.piece import bar_windows, median_bars, piece_metrics
from midilm.sampling.generation import decode_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--samples_dir", required=True, help="an evaluation's samples/ folder")
    parser.add_argument("--split", default="validation")
    parser.add_argument("sets", nargs="+", help="sample sets (subfolders of --samples_dir)")
    args = parser.parse_args()

    config, tokenizer, composer_map = load_midilm_dir(args.model_dir)
    dataset = load_eval_dataset(args.dataset_dir, args.split, tokenizer, composer_map)
    real: dict[str, list[Score]] = {}
    for piece in join_pieces(token_rows(dataset[args.split], tokenizer, composer_map, args.split), config.eos_token_id):
        real.setdefault(composer_map.names[piece["composer"]], []).append(decode_ids(tokenizer, piece["ids"]))

    print("| set | bars | composer | held-out pieces | passages | gap to whole pieces | gap to passages |")
    print("|---|---|---|---|---|---|---|")
    for name in args.sets:
        by_composer: dict[str, list[dict]] = {}
        for path in sorted(Path(args.samples_dir, name).glob("*.mid")):
            by_composer.setdefault(path.stem.rsplit("_", 1)[0], []).append(piece_metrics(Score(path)))
        bars = median_bars([m for pieces in by_composer.values() for m in pieces])
        for composer, samples in sorted(by_composer.items()):
            if composer not in real:
                continue
            whole = summary_distance(compare(samples, [piece_metrics(s) for s in real[composer]]))["mean_gap"]
            passages = [piece_metrics(w) for s in real[composer] for w in bar_windows(s, bars)]
            cut = summary_distance(compare(samples, passages))["mean_gap"]
            print(
                f"| {name} | {bars} | {composer} | {len(real[composer])} | {len(passages)} | {whole:.2f} | {cut:.2f} |"
            )


if __name__ == "__main__":
    main()
