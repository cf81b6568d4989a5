"""The files a sample becomes: `<composer>_<i>.mid` and `.json` (tokens, settings, seed), plus `.wav`
and `.png` on request; an accompaniment's are `accompaniment_<composer>_<i>.*`, an infill's
`infill_<composer>_<i>.*`. Used by generate.py,
the app and train.py's evaluation samples (`sample_stem`).

Every call's files are written under temporary names and moved into place once all are complete: a
failure leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from symusic import Score

from midilm import render  # the soundfont checks through the module, where a test can stand in for them
from midilm.errors import InputError
from midilm.generation import GenerationPlan
from midilm.grammar import count_syntax_errors
from midilm.outputs import staging_dir
from midilm.render import SOUNDFONT_ENV, AudioUnavailable, piano_roll_png, write_wav
from midilm.tokenizer import NONE

ACCOMPANIMENT_PREFIX = "accompaniment_"
INFILL_PREFIX = "infill_"


def sample_stem(composer: str, index: int) -> str:
    """`bach_0`, `Bach, Johann Sebastian_0`: the composer's own name, less the characters no file
    name may hold on some system (path separators, `<>:"|?*`, control characters)."""
    name = (
        NONE.lower() if composer == NONE else re.sub(r'[\x00-\x1f/\\<>:"|?*]+', "-", composer).strip(" .") or "unnamed"
    )
    return f"{name}_{index}"


def sample_files(
    plan: GenerationPlan, output_dir: Path, wav: bool, png: bool, overwrite: bool
) -> list[dict[str, Path]]:
    """Every file this call will write, per sample; refuses to replace existing ones without --overwrite."""
    return output_files(plan.composers, output_dir, wav, png, overwrite)


def output_files(
    composers: list[str], output_dir: Path, wav: bool, png: bool, overwrite: bool, prefix: str = ""
) -> list[dict[str, Path]]:
    """`<prefix><composer>_<i>.mid/.json` (+ .wav, .png) per sample; refuses to replace files without --overwrite."""
    suffixes = [".mid", ".json"] + [".wav"] * wav + [".png"] * png
    files, counts = [], {}
    for composer in composers:
        index = counts[composer] = counts.get(composer, -1) + 1
        files.append({s: output_dir / f"{prefix}{sample_stem(composer, index)}{s}" for s in suffixes})
    existing = [p for f in files for p in f.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(
            f"--output_dir {output_dir}: {existing[0].name} already exists ({len(existing)} files would be replaced); pass --overwrite"
        )
    return files


def check_soundfont(soundfont: str | None) -> Path:
    """Find the soundfont and a synthesizer before any sampling, so --wav fails fast (render.py renders)."""
    try:
        path = render.find_soundfont(soundfont)
    except FileNotFoundError as err:
        raise InputError(f"--soundfont: {err}") from err
    if path is None:
        raise InputError(f"--wav: no General MIDI soundfont found; pass --soundfont PATH or set ${SOUNDFONT_ENV}")
    if not render.available_backends():
        raise InputError(
            "--wav: no MIDI synthesizer; `pip install --no-deps tinysoundfont` or `apt-get install fluidsynth`"
        )
    return path


def write_samples(
    plan: GenerationPlan, sequences: torch.LongTensor, files: list[dict[str, Path]], record: dict, soundfont=None
) -> list[dict[str, Path]]:
    """Write every sample under temporary names, then move them all into place: a failure leaves no
    partial file behind. `record` (model_dir, prompt, ...) goes into each sample's JSON."""
    scores, ids = plan.decode(sequences), plan.sample_ids(sequences)
    infos = []
    for index, (score, tokens) in enumerate(zip(scores, ids)):
        info = {
            "composer": plan.composers[index],
            "sample": index,
            "seed": plan.settings["seed"],
            **record,
            "settings": plan.settings,
            "prompt_tokens": len(plan.prompt_ids),
            "new_tokens": plan.new_tokens(tokens),
            "windows": plan.windows or 1,  # generate() calls: more than one for a piece longer than the context
            "ended_with_eos": tokens[-1] == plan.generation_config.eos_token_id and plan.new_tokens(tokens) > 0,
            "notes": score.note_num(),
        }
        info["syntax_error_rate"] = count_syntax_errors(plan.tokenizer, tokens)  # miditok's tokens_errors
        info["tokens"] = tokens
        infos.append(info)
    return write_staged(files, scores, infos, soundfont)


def write_staged(
    files: list[dict[str, Path]], scores: list[Score], infos: list[dict], soundfont=None
) -> list[dict[str, Path]]:
    """Each score as .mid (and .wav, .png where `files` names them) with its JSON record, written under
    temporary names and moved into place once all are complete."""
    output_dir = files[0][".mid"].parent
    with staging_dir(output_dir) as tmp:
        for paths, score, info in zip(files, scores, infos):
            staged = {s: tmp / p.name for s, p in paths.items()}
            staged[".mid"].write_bytes(score.dumps_midi())
            if ".wav" in staged:
                try:
                    write_wav(score, staged[".wav"], soundfont=soundfont)
                except AudioUnavailable as err:
                    raise InputError(f"--wav: {err}") from err
            if ".png" in staged:
                piano_roll_png(score, staged[".png"])
            # Readable settings, and the token list on one line rather than one id per line.
            info = dict(info)
            tokens = info.pop("tokens", None)
            text = json.dumps(info, indent=2)
            if tokens is not None:
                text = text[:-2] + f',\n  "tokens": {json.dumps(tokens)}\n}}'
            staged[".json"].write_text(text + "\n")
        output_dir.mkdir(parents=True, exist_ok=True)
        for paths in files:
            for path in paths.values():
                os.replace(tmp / path.name, path)
    return files


def accompaniment_files(
    composers: list[str], output_dir: Path, wav: bool, png: bool, overwrite: bool
) -> list[dict[str, Path]]:
    """`accompaniment_<composer>_<i>.mid/.json` (+ .wav, .png) per sample; refuses to replace files without --overwrite."""
    return output_files(composers, output_dir, wav, png, overwrite, prefix=ACCOMPANIMENT_PREFIX)


def write_accompaniments(
    results: list, files: list[dict[str, Path]], record: dict, soundfont=None
) -> list[dict[str, Path]]:
    """Write `midilm.accompaniment.Accompaniment`s as generate.py writes samples: MIDI (the melody track
    first, then the new parts), JSON (settings, figures, the full section's tokens), WAV and PNG."""
    infos, counts = [], {}
    for result in results:
        index = counts[result.composer] = counts.get(result.composer, -1) + 1
        infos.append(
            {
                "composer": result.composer,
                "sample": index,
                "seed": result.settings.get("seed"),
                **record,
                "settings": result.settings,
                "bars": result.bars,
                "windows": result.windows,
                "cut_bars": result.cut_bars,
                "notes": result.score.note_num(),
                "syntax_error_rate": result.syntax_error_rate,
                **result.metrics(),
                "tokens": result.ids,
            }
        )
    return write_staged(files, [r.score for r in results], infos, soundfont)


def infill_files(
    composers: list[str], output_dir: Path, wav: bool, png: bool, overwrite: bool
) -> list[dict[str, Path]]:
    """`infill_<composer>_<i>.mid/.json` (+ .wav, .png) per sample; refuses to replace files without --overwrite."""
    return output_files(composers, output_dir, wav, png, overwrite, prefix=INFILL_PREFIX)


def write_infills(results: list, files: list[dict[str, Path]], record: dict, soundfont=None) -> list[dict[str, Path]]:
    """Write `midilm.infilling.Infill`s as generate.py writes samples: MIDI (the whole piece, its span rewritten),
    JSON (bars, the context bars the prompt held, settings, the span's tokens), WAV and PNG."""
    infos, counts = [], {}
    for result in results:
        index = counts[result.composer] = counts.get(result.composer, -1) + 1
        infos.append(
            {
                "composer": result.composer,
                "sample": index,
                "seed": result.settings.get("seed"),
                **record,
                "settings": result.settings,
                "bars": list(result.bars),
                "context_bars": result.context_bars,
                "windows": 1,  # generate() calls: the span is written in one
                "cut_bars": result.cut_bars,
                "replaced_notes": result.replaced_notes,
                "new_notes": result.span.note_num(),
                "notes": result.score.note_num(),
                "syntax_error_rate": result.syntax_error_rate,
                "tokens": result.ids,
            }
        )
    return write_staged(files, [r.score for r in results], infos, soundfont)
