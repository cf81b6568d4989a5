"""Data-preparation speed and BPE compression on real pieces from the bundled music21 corpus.

    python bench/bench_prepare.py                       # bach + palestrina, 150 pieces each
    python bench/bench_prepare.py --pieces 20 --vocab_sizes 1000   # smoke run

Measures, in one run on one machine:
- files/s of the whole prepare step (check, BPE training, tokenize, chunk, write Arrow) with 1 and 2
  workers, and the scaling ratio;
- the per-file cost of that step against a bare `tokenizer.encode` loop over the same files;
- tokens per note and per beat before and after BPE at each vocabulary size (Fradet et al. 2023,
  REMI on MAESTRO: -45% tokens at 1k, -64% at 20k).
Prints a Markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from symusic import Score

from midilm.core.tokenizer import build_tokenizer, load_tokenizer, tokenizer_settings
from midilm.data.arguments import PrepareArguments
from midilm.data.corpus import music21_corpus_files
from midilm.data.prepare import prepare

REPO = Path(__file__).resolve().parent.parent  # for config.json; midilm itself is the installed package

# What prepare_dataset.py builds its tokenizer with: the package defaults and config.json's overrides.
SETTINGS = tokenizer_settings(json.loads((REPO / "config.json").read_text()).get("tokenizer"))


def timed_prepare(
    composers: str, pieces: int, num_proc: int, vocab_size: int, workdir: Path
) -> tuple[float, dict, Path]:
    out = workdir / f"p{num_proc}_v{vocab_size}"
    args = PrepareArguments(
        composers=composers,
        max_files_per_composer=pieces,
        num_proc=num_proc,
        vocab_size=vocab_size,
        output_dir=str(out / "data"),
        tokenizer_dir=str(out / "tokenizer"),
        min_pieces_per_composer=1,
    )
    start = time.perf_counter()
    report = prepare(args, SETTINGS)
    return time.perf_counter() - start, report, out / "tokenizer"


def per_beat(tokenizer, scores: list[Score]) -> tuple[float, float]:
    """(tokens per note, tokens per quarter-note beat) of the encoded pieces, specials excluded."""
    tokens = notes = beats = 0
    for score in scores:
        tokens += len(tokenizer.encode(score).ids)
        notes += score.note_num()
        beats += score.end() / score.ticks_per_quarter
    return tokens / notes, tokens / beats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--composers", default="bach,palestrina")
    parser.add_argument("--pieces", type=int, default=150, help="pieces per composer")
    parser.add_argument("--vocab_sizes", default="1000,5000")
    args = parser.parse_args()
    vocab_sizes = [int(v) for v in args.vocab_sizes.split(",")]

    # Convert (or find cached) corpus pieces first, so conversion is not timed
    files, _ = music21_corpus_files(args.composers.split(","), args.pieces, os.cpu_count() or 1)
    scores = [Score(f.path) for f in files]

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        timings = {}
        for workers in (1, 2):
            seconds, report, tokenizer_dir = timed_prepare(
                args.composers, args.pieces, workers, vocab_sizes[0], workdir
            )
            timings[workers] = (seconds, report["files"]["kept"])
        tokenizer, _ = load_tokenizer(tokenizer_dir)
        start = time.perf_counter()
        for path in (f.path for f in files):
            tokenizer.encode(Score(path))
        encode_seconds = time.perf_counter() - start

        base, _ = build_tokenizer(SETTINGS, ["x"])
        rows = [("none (REMI)", len(base), *per_beat(base, scores))]
        for vocab in vocab_sizes:
            bpe, _ = build_tokenizer(SETTINGS, ["x"])
            bpe.train(vocab_size=vocab, model="BPE", files_paths=[f.path for f in files])
            rows.append((f"BPE {vocab}", vocab, *per_beat(bpe, scores)))

    n = len(files)
    fps = {w: kept / s for w, (s, kept) in timings.items()}
    print(
        f"### Data preparation — {datetime.date.today()}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"`python bench/bench_prepare.py --composers {args.composers} --pieces {args.pieces} --vocab_sizes "
        f"{args.vocab_sizes}` "
        f"({n} music21 pieces, BPE {vocab_sizes[0]})\n"
    )
    print("| measure | value |\n|---|---|")
    print(f"| prepare, 1 worker | {timings[1][0]:.1f} s, {fps[1]:.1f} files/s |")
    print(f"| prepare, 2 workers | {timings[2][0]:.1f} s, {fps[2]:.1f} files/s |")
    print(f"| scaling 2 vs 1 workers | {fps[2] / fps[1]:.2f}x |")
    print(f"| bare `tokenizer.encode` loop | {encode_seconds / n * 1000:.1f} ms/file |")
    print(f"| prepare (1 worker) per file / bare encode per file | {timings[1][0] / encode_seconds:.2f}x |\n")
    print("| vocabulary | size | tokens/note | tokens/beat | tokens vs REMI |\n|---|---|---|---|---|")
    for name, size, tpn, tpb in rows:
        print(f"| {name} | {size} | {tpn:.2f} | {tpb:.2f} | {tpb / rows[0][3] - 1:+.0%} |")


if __name__ == "__main__":
    main()
