"""The data step at scale: files/s and peak memory of `prepare_dataset.py` against corpus size.

    python bench/bench_scale.py                              # N = 1,000, 10,000, 30,000; 1 and 2 workers
    python bench/bench_scale.py --sizes 300 --workers 1      # smoke run

The corpus is synthetic but made of real music: transposed, re-timed and cropped copies of the
music21 corpus's pieces (Bach, Monteverdi, Palestrina), written with symusic into 237 composer
folders of Zipf-like sizes, named as people name them (commas, dots, accents, other scripts).
`build_corpus` is importable, for other benchmarks that need a large corpus:

    from bench.bench_scale import build_corpus     # or importlib, bench/ is not a package
    midi_dir = build_corpus(Path("/tmp/scale"), 10_000)

Each (N, workers) runs the whole prepare step as a subprocess; its peak resident memory is the
largest sum, over the process tree (workers included), of the RSS polled every 0.1 s. The step's
own `prepare_report.json` says where the time went (scan = parse + checks + base tokenize; bpe;
rows = BPE encode + chunk + Arrow shards, in the workers; write = `save_to_disk` of the mapped shards).
Prints a Markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from symusic import Score

from midilm.core.tokenizer import composer_token
from midilm.data.corpus import music21_corpus_files

REPO = Path(__file__).resolve().parent.parent
COMPOSERS = 237
SOURCE_COMPOSERS = ("bach", "monteverdi", "palestrina")
SOURCE_PIECES = 80
# Name shapes seen in real collections: "Surname, Given", initials, accents, other scripts, ids.
SURNAMES = [
    "Bach",
    "Händel",
    "Dvořák",
    "Saint-Saëns",
    "Fauré",
    "Janáček",
    "Bartók",
    "Liszt",
    "Chopin",
    "Schütz",
    "Mendelssohn Bartholdy",
    "Grieg",
    "Sibelius",
    "Nielsen",
    "Elgar",
    "Purcell",
    "Byrd",
    "Tallis",
    "Lully",
    "Rameau",
    "Couperin",
    "Debussy",
    "Ravel",
    "Satie",
    "Bizet",
    "Gounod",
    "Berlioz",
    "Franck",
    "Albéniz",
    "Granados",
    "de Falla",
    "Scarlatti",
    "Vivaldi",
    "Corelli",
    "Monteverdi",
    "Palestrina",
    "Gesualdo",
    "Frescobaldi",
    "Telemann",
    "Buxtehude",
]
GIVEN = [
    "Johann Sebastian",
    "Carl Philipp Emanuel",
    "Antonín",
    "Camille",
    "Gabriel",
    "Leoš",
    "Béla",
    "Franz",
    "Frédéric",
    "Heinrich",
]
NON_LATIN = [
    "Чайковский",
    "Рахманинов",
    "Мусоргский",
    "Римский-Корсаков",
    "Шостакович",
    "Прокофьев",
    "武満徹",
    "細川俊夫",
    "윤이상",
    "Σκαλκώτας",
]


def composer_names(count: int = COMPOSERS, seed: int = 0) -> list[str]:
    """`count` distinct folder names whose composer tokens differ too (prepare refuses a clash)."""
    rng = random.Random(seed)
    names, tokens = [], set()
    first = ["Bach, Johann Sebastian", "composer_000", "C.P.E. Bach", "Dvořák", "Saint-Saëns", *NON_LATIN]
    rest = [
        *SURNAMES,
        *(f"{s}, {g}" for s in SURNAMES for g in GIVEN),
        *(f"{g[0]}. {s}" for s in SURNAMES for g in GIVEN),
    ]
    rest += [f"composer_{i:03d}" for i in range(1, 1000)]
    rng.shuffle(rest)
    for name in first + rest:
        token = composer_token(name).casefold()
        if token not in tokens:
            names.append(name)
            tokens.add(token)
        if len(names) == count:
            return names
    raise ValueError("not enough composer names")


def zipf_sizes(n_files: int, count: int = COMPOSERS, exponent: float = 1.0) -> list[int]:
    """Files per composer, the r-th largest ∝ 1/r^exponent, each at least 1, summing to n_files."""
    if n_files < count:
        raise ValueError(f"{n_files} files cannot fill {count} composer folders")
    weights = 1 / np.arange(1, count + 1) ** exponent
    sizes = 1 + np.floor(weights / weights.sum() * (n_files - count)).astype(int)
    sizes[0] += n_files - sizes.sum()
    return sizes.tolist()


def variant(score: Score, rng: random.Random) -> Score:
    """A transposed, re-timed and cropped copy of a piece (4-32 bars of 4 beats from a random start)."""
    tpq = score.ticks_per_quarter
    bars = rng.randint(4, 32)
    end = score.end()
    start = rng.randrange(0, max(1, end - bars * 4 * tpq)) // (4 * tpq) * (4 * tpq)
    out = score.clip(start, start + bars * 4 * tpq).shift_time(-start)
    pitches = [n.pitch for t in out.tracks for n in t.notes]
    if pitches:
        out = out.shift_pitch(max(21 - min(pitches), min(108 - max(pitches), rng.randint(-5, 5))))
    factor = rng.choice([0.8, 0.9, 1.0, 1.1, 1.25])
    for tempo in out.tempos:
        tempo.qpm = tempo.qpm * factor
    return out


def build_corpus(root: Path, n_files: int, seed: int = 0) -> Path:
    """`root/<composer>/<i>.mid`: `n_files` MIDI files in 237 composer folders of Zipf-like sizes,
    each a transposed, re-timed, cropped copy of a music21 corpus piece. Built once per (n_files, seed):
    a second call with the same arguments returns the finished folder."""
    root = Path(root)
    stamp = root / ".complete.json"
    wanted = {"n_files": n_files, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # 80 a composer: the pieces the demo converts (cached in ~/.cache/midilm); all of them take ~10 min to convert
    sources, _ = music21_corpus_files(list(SOURCE_COMPOSERS), SOURCE_PIECES, os.cpu_count() or 1)
    scores = [s for s in (Score(f.path) for f in sources) if s.note_num() > 0]
    rng = random.Random(seed)
    for name, size in zip(composer_names(seed=seed), zipf_sizes(n_files)):
        folder = root / name
        folder.mkdir()
        for i in range(size):
            variant(rng.choice(scores), rng).dump_midi(folder / f"{i:05d}.mid")
    stamp.write_text(json.dumps(wanted))
    return root


def run_prepare(midi_dir: Path, workers: int, workdir: Path, extra: list[str]) -> dict:
    """One prepare_dataset.py run: wall seconds, peak RSS of its process tree, its report."""
    out = workdir / f"w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        str(REPO / "prepare_dataset.py"),
        "--midi_dir",
        str(midi_dir),
        "--num_proc",
        str(workers),
        "--output_dir",
        str(out / "data"),
        "--tokenizer_dir",
        str(out / "tokenizer"),
        *extra,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": str(workers),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    root = psutil.Process(process.pid)
    peak_sum = peak_one = peak_pss = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss, pss = [], []
            for p in tree:
                try:
                    # RSS counts pages a forked worker shares with its parent once per process; PSS splits them
                    info = p.memory_full_info()
                    rss.append(info.rss)
                    pss.append(info.pss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak_sum, peak_one, peak_pss = (
                max(peak_sum, sum(rss)),
                max(peak_one, max(rss, default=0)),
                max(peak_pss, sum(pss)),
            )
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    stdout, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"prepare_dataset.py failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    report = json.loads((out / "data" / "prepare_report.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_sum / 2**20,
        "peak_one_mb": peak_one / 2**20,
        "peak_pss_mb": peak_pss / 2**20,
        "report": report,
    }


def bpe_one(midi_dir: Path, n_train: int, vocab_size: int, seed: int = 0) -> dict:
    """BPE learnt from `n_train` files drawn from the corpus (what `--bpe_max_files` bounds), in this
    process: seconds, this process's peak RSS, and tokens per note on 300 other files."""
    import resource

    from midilm.core.tokenizer import build_tokenizer, encode_ids, tokenizer_settings

    settings = tokenizer_settings(json.loads((REPO / "config.json").read_text()).get("tokenizer"))
    paths = sorted(midi_dir.rglob("*.mid"))
    random.Random(seed).shuffle(paths)
    held_out, train = paths[:300], paths[300 : 300 + n_train]
    tokenizer, _ = build_tokenizer(settings, [])
    start = time.perf_counter()
    tokenizer.train(vocab_size=vocab_size, model="BPE", files_paths=train)
    seconds = time.perf_counter() - start
    scores = [Score(p) for p in held_out]
    tokens = sum(len(encode_ids(tokenizer, s)) for s in scores)
    notes = sum(s.note_num() for s in scores)
    return {
        "files": len(train),
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens_per_note": tokens / notes,
    }


def bpe_sweep(midi_dir: Path, sizes: list[int], vocab_size: int) -> list[dict]:
    """`bpe_one` for each size, each in a fresh process (its own peak memory)."""
    rows = []
    for n in sizes:
        code = (
            "import json, sys; sys.argv = ['x']; from pathlib import Path; import importlib.util as u; spec = "
            f"u.spec_from_file_location('b', {str(Path(__file__))!r}); m = u.module_from_spec(spec); "
            f"spec.loader.exec_module(m); print(json.dumps(m.bpe_one(Path({str(midi_dir)!r}), {n}, {vocab_size})))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "TQDM_DISABLE": "1", "RAYON_NUM_THREADS": "1"},
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"BPE from {n} files: {rows[-1]}", file=sys.stderr)
    return rows


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--corpus_dir",
        default=str(Path(tempfile.gettempdir()) / "midilm_scale"),
        help="built corpora are kept here and reused",
    )
    parser.add_argument("--vocab_size", type=int, default=1000)
    parser.add_argument(
        "--bpe_sweep", default="250,1000,2000,4000", help="BPE training sizes to cost on the largest corpus ('' = skip)"
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    extra = ["--vocab_size", str(args.vocab_size)]

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            clock = time.perf_counter()
            midi_dir = build_corpus(Path(args.corpus_dir) / f"n{n}", n)
            print(f"corpus of {n} files ready in {time.perf_counter() - clock:.0f} s", file=sys.stderr)
            for w in workers:
                before = load()
                result = run_prepare(midi_dir, w, Path(tmp), extra)
                result["load"] = (before, load())
                results[(n, w)] = result
                print(
                    (
                        f"N={n} workers={w}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, load "
                        f"{before} -> {result['load'][1]}"
                    ),
                    file=sys.stderr,
                )

    sweep = []
    if args.bpe_sweep:
        before = load()
        sweep = bpe_sweep(
            build_corpus(Path(args.corpus_dir) / f"n{sizes[-1]}", sizes[-1]),
            [int(k) for k in args.bpe_sweep.split(",")],
            args.vocab_size,
        )
        print(f"BPE sweep load {before} -> {load()}", file=sys.stderr)

    print(
        f"### Prepare at scale — {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
    print(
        f"`python bench/bench_scale.py --sizes {args.sizes} --workers {args.workers} --vocab_size {args.vocab_size}` "
        f"(synthetic corpus of music21 pieces, {COMPOSERS} composer folders, BPE {args.vocab_size})\n"
    )
    print(
        "| files | workers | kept | s | files/s | peak RSS, process tree (MB) | peak PSS, process tree (MB) | "
        "largest process (MB) | scan s | BPE s (files) | rows s | write s | load before → after |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for (n, w), r in results.items():
        t, rep = r["report"]["seconds"], r["report"]
        print(
            f"| {n:,} | {w} | {rep['files']['kept']:,} | {r['seconds']:.1f} | {n / r['seconds']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} | {r['peak_one_mb']:.0f} | "
            f"{t['scan']:.1f} | {t['bpe']:.1f} ({rep['bpe']['training_files']}) | {t['rows']:.1f} | {t['write']:.1f} "
            f"| {r['load'][0]} → {r['load'][1]} |"
        )
    print()
    for w in workers:
        if (sizes[0], w) in results and (sizes[-1], w) in results:
            a, b = results[(sizes[0], w)], results[(sizes[-1], w)]
            print(
                f"- {w} worker(s), {sizes[0]:,} → {sizes[-1]:,} files: peak RSS "
                f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} (goal < 1.5), "
                f"peak PSS x{b['peak_pss_mb'] / a['peak_pss_mb']:.2f}, "
                f"files/s x{(sizes[-1] / b['seconds']) / (sizes[0] / a['seconds']):.2f} (goal ≥ 0.8)"
            )
    if 1 in workers and 2 in workers:
        for n in sizes:
            one, two = results[(n, 1)]["report"]["seconds"], results[(n, 2)]["report"]["seconds"]
            outside = lambda t: t["scan"] + t["rows"]  # noqa: E731
            print(
                f"- {n:,} files: 2 workers vs 1 on scan + rows (outside BPE and writing): "
                f"x{outside(one) / outside(two):.2f} (goal ≥ 1.6)"
            )
    if sweep:
        print(
            f"\nBPE {args.vocab_size} learnt from a sample of the {sizes[-1]:,}-file corpus (miditok's own file "
            "reader, one process; "
            "tokens per note on 300 other files):\n"
        )
        print(
            "| training files | BPE s | s per file | peak RSS (MB) | tokens/note after BPE "
            "|\n|---:|---:|---:|---:|---:|"
        )
        for r in sweep:
            print(
                f"| {r['files']:,} | {r['seconds']:.1f} | {r['seconds'] / r['files'] * 1000:.1f} ms | "
                f"{r['peak_rss_mb']:.0f} | {r['tokens_per_note']:.3f} |"
            )


if __name__ == "__main__":
    main()
