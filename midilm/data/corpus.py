"""The real scores bundled in the `music21` package, converted once to MIDI into a cache.

Parsing a score with music21 costs about 0.35 s (a Beethoven quartet far more), so each piece is
converted once, in parallel, and later runs read the cached MIDI files.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from midilm.core.errors import InputError
from midilm.data.sources import SourceFile

# Folders of the music21 corpus that hold composers' scores. Left out: roman-numeral analyses
# (.rntxt, not music), the folk-tune ABC collections (many tunes per file, no composer), and demos.
SCORE_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn"}
NOT_COMPOSERS = {"demos", "theoryExercises", "leadSheet", "nottingham-dataset"}


def default_cache_dir() -> Path:
    base = os.environ.get("MIDILM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "midilm"
    return Path(base) / "music21_midi"


def corpus_root() -> Path:
    from music21 import corpus

    return Path(corpus.__file__).parent


def corpus_scores() -> dict[str, list[Path]]:
    """Composer folder → score files of the bundled corpus, sorted for a stable order."""
    from music21 import corpus

    by_composer: dict[str, list[Path]] = {}
    root = corpus_root()
    for path in corpus.getCorePaths():
        path = Path(path)
        composer = path.relative_to(root).parts[0]
        if path.suffix.lower() in SCORE_SUFFIXES and composer not in NOT_COMPOSERS:
            by_composer.setdefault(composer, []).append(path)
    return {c: sorted(paths) for c, paths in sorted(by_composer.items())}


def _convert(job: tuple[Path, Path]) -> str | None:
    """Write one score as MIDI (to a temporary name, renamed when complete); the reason on failure."""
    score_path, midi_path = job
    from music21 import converter

    failed = midi_path.with_suffix(".failed")
    try:
        midi_path.parent.mkdir(parents=True, exist_ok=True)
        score = converter.parse(score_path)
        partial = midi_path.with_suffix(".partial")
        score.write("midi", fp=partial)
        partial.replace(midi_path)
        return None
    except Exception as err:  # music21 raises many kinds; one bad score must not stop the corpus
        reason = f"{type(err).__name__}: {err}"
        failed.write_text(reason)  # remembered, so later runs skip it instead of parsing it again
        return reason


def music21_corpus_files(
    composers: list[str] | None, max_files_per_composer: int | None, num_proc: int, cache_dir: Path | None = None
) -> tuple[list[SourceFile], dict[str, str]]:
    """MIDI files for the chosen corpus composers (converted on first use); also conversion failures."""
    available, root = corpus_scores(), corpus_root()
    if composers:
        unknown = [c for c in composers if c not in available]
        if unknown:
            raise InputError(
                f"--composers: {', '.join(unknown)} not in the music21 corpus; available: {', '.join(available)}"
            )
        available = {c: available[c] for c in composers}
    cache_dir = cache_dir or default_cache_dir()
    files, jobs, failures = [], [], {}
    for composer, scores in available.items():
        for score_path in scores[:max_files_per_composer] if max_files_per_composer else scores:
            # movements of one work share file names (opus18no1/movement1.mxl): keep the sub-folders
            relative = score_path.relative_to(root / composer).as_posix()
            midi_path = cache_dir / composer / (relative.replace("/", "_").replace(".", "_") + ".mid")
            files.append(SourceFile(midi_path, f"{composer}/{midi_path.name}", composer))
            failed = midi_path.with_suffix(".failed")
            if failed.exists():
                failures[files[-1].source] = f"music21 could not convert it: {failed.read_text()}"
            elif not midi_path.exists():
                jobs.append((score_path, midi_path))
    if jobs:
        with ProcessPoolExecutor(max_workers=max(1, num_proc)) as pool:
            results = pool.map(_convert, jobs, chunksize=1)
            for (_, midi_path), error in tqdm(
                zip(jobs, results), total=len(jobs), desc="music21 corpus → MIDI (cached)", unit="score"
            ):
                if error:
                    failures[f"{midi_path.parent.name}/{midi_path.name}"] = f"music21 could not convert it: {error}"
    return [f for f in files if f.source not in failures], failures
