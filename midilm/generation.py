"""Sampling MIDI from a midilm model with plain `model.generate()` and our logits processors.

    from transformers import AutoModelForCausalLM
    from midilm.generation import prepare_generation

    model = AutoModelForCausalLM.from_pretrained("model_output")
    plan = prepare_generation("model_output", composer="bach", num_samples=2, seed=0)
    output = model.generate(plan.input_ids, attention_mask=plan.attention_mask,
                            generation_config=plan.generation_config, logits_processor=plan.logits_processor)
    for i, score in enumerate(plan.decode(output)):
        score.dump_midi(f"bach_{i}.mid")

`prepare_generation` reads the sampling defaults from the model folder (guidance from config.json's
`midilm_guidance_scale`, which plain transformers never reads; the rest from generation_config.json) and builds
the rows (B conditional, then B unconditional when guidance is on), the grammar processor, the musical
guard (midilm.guard: at most as many notes per onset and per bar as the training data hold, on by
default for a model whose config.json carries the bounds) and our CFG processor (midilm.guidance), which
does the sampling itself: the `generation_config` it returns is
greedy on purpose, so transformers' own sampling, repetition penalty and CFG stay out of the way.
Under guidance one forward serves both branches, so the usual speed-ups apply unchanged:
`prepare_generation(..., compile=True)` (generate.py --compile) has transformers compile the decoding
forward over a static KV cache (`fast_sampling`), with the same tokens for the same seed where tested.

Accompanying a melody (`generate.py --melody_midi`) takes several generate() calls when the melody is
long; its API is `midilm.accompaniment` (`harmonize`, `accompany`), its files are written here.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from miditok import TokSequence
from symusic import Score
from transformers import GenerationConfig, LogitsProcessorList

from midilm.guidance import CFGSamplingProcessor
from midilm.modeling import context_length, load_midilm_dir, sampling_defaults
from midilm.outputs import staging_dir
from midilm.errors import InputError
from midilm.tokenizer import (
    NONE,
    ComposerMap,
    bar_start_table,
    encode_ids,
    load_tokenizer,
)

HEADER_TOKENS = 2  # BOS, COMPOSER


@dataclass
class GenerationPlan:
    """Everything one `model.generate()` call needs, and how to read its output back."""

    input_ids: torch.LongTensor  # num_samples conditional rows, then as many unconditional ones under guidance
    attention_mask: torch.LongTensor
    generation_config: GenerationConfig
    logits_processor: LogitsProcessorList
    tokenizer: object = field(repr=False)
    composers: list[str]  # one per sample
    settings: dict  # the resolved sampling settings, for the record
    prompt_ids: list[int]  # the (possibly cut) prompt, without BOS and composer

    @property
    def num_samples(self) -> int:
        return len(self.composers)

    def sample_ids(self, sequences: torch.LongTensor) -> list[list[int]]:
        """Each sample's tokens: BOS, composer, prompt, continuation, up to and including EOS."""
        eos = self.generation_config.eos_token_id
        start = HEADER_TOKENS + len(self.prompt_ids)
        rows = []
        for row in sequences[: self.num_samples].tolist():
            end = row.index(eos, start) + 1 if eos in row[start:] else len(row)
            rows.append(row[:end])
        return rows

    def decode(self, sequences: torch.LongTensor) -> list[Score]:
        """One symusic Score per sample (prompt followed by continuation); an unfinished last note is
        dropped (miditok only makes a note of Pitch followed by Velocity and Duration)."""
        return [decode_ids(self.tokenizer, ids) for ids in self.sample_ids(sequences)]


def decode_ids(tokenizer, ids: list[int]) -> Score:
    """Music tokens to a Score; BOS, composer, EOS and padding are left out."""
    special = set(tokenizer.special_tokens_ids)
    music = [i for i in ids if i not in special]
    return tokenizer.decode(TokSequence(ids=music, are_ids_encoded=tokenizer.is_trained))


def load_prompt(tokenizer, path: str | Path, prompt_bars: int | None = None) -> list[int]:
    """Token ids of a MIDI file, or of its first `prompt_bars` bars."""
    from midilm.dataset import require_usable_midi  # the data pipeline's own checks, so prompts fail the same way

    path = Path(path)
    require_usable_midi(path, "--prompt_midi")
    ids = encode_ids(tokenizer, Score(path))
    if len(ids) == 0:
        raise InputError(f"--prompt_midi {path}: nothing the tokenizer can represent")
    if prompt_bars is not None:
        if prompt_bars < 1:
            raise InputError(f"--prompt_bars {prompt_bars}: must be at least 1")
        bar_lines = np.flatnonzero(np.asarray(bar_start_table(tokenizer))[ids])
        if len(bar_lines) > prompt_bars:
            ids = ids[: bar_lines[prompt_bars]]
    return ids.tolist()


def fit_prompt(tokenizer, ids: list[int], room: int) -> list[int]:
    """Keep the last `room` tokens, starting at a bar line when one is there to start at."""
    if len(ids) <= room:
        return ids
    arr = np.asarray(ids, dtype=np.int64)
    bar_lines = np.flatnonzero(np.asarray(bar_start_table(tokenizer))[arr])
    inside = bar_lines[bar_lines >= len(ids) - room]
    start = int(inside[0]) if len(inside) else min(len(ids), len(ids) - room)
    warnings.warn(
        f"the prompt ({len(ids)} tokens) and max_new_tokens do not fit the model's context: "
        f"the first {start} prompt tokens are dropped",
        stacklevel=3,
    )
    return ids[start:]


def resolve_settings(defaults: dict, context: int, **given) -> dict:
    """The sampling settings: given values over the model's defaults (`midilm.modeling.sampling_defaults`), checked."""

    def pick(name, neutral):
        value = given.get(name)
        if value is None:
            value = defaults.get(name)
        return neutral if value is None else value

    s = {
        "guidance_scale": float(pick("guidance_scale", 1.0)),
        "temperature": float(pick("temperature", 1.0)),
        "top_k": int(pick("top_k", 0)),
        "top_p": float(pick("top_p", 1.0)),
        "repetition_penalty": float(pick("repetition_penalty", 1.0)),
    }
    longest = context - HEADER_TOKENS
    if given.get("max_new_tokens") is None:
        s["max_new_tokens"] = min(defaults.get("max_new_tokens") or longest, longest)
    else:
        s["max_new_tokens"] = int(given["max_new_tokens"])
        if s["max_new_tokens"] > longest:
            raise InputError(
                f"--max_new_tokens {s['max_new_tokens']}: beyond the model's context of {context} tokens "
                f"({HEADER_TOKENS} go to BOS and the composer); use at most {longest}"
            )
    if s["max_new_tokens"] < 1:
        raise InputError(f"--max_new_tokens {s['max_new_tokens']}: must be at least 1")
    min_new = given.get("min_new_tokens")
    if min_new is not None:
        s["min_new_tokens"] = min(int(min_new), s["max_new_tokens"])
    if s["guidance_scale"] < 0:
        raise InputError(f"--guidance_scale {s['guidance_scale']}: must be >= 0 (1 = no guidance)")
    if s["temperature"] <= 0:
        raise InputError(f"--temperature {s['temperature']}: must be > 0")
    if s["top_k"] < 0:
        raise InputError(f"--top_k {s['top_k']}: must be >= 0 (0 = off)")
    if not 0 < s["top_p"] <= 1:
        raise InputError(f"--top_p {s['top_p']}: must be within (0, 1]")
    if s["repetition_penalty"] <= 0:
        raise InputError(f"--repetition_penalty {s['repetition_penalty']}: must be > 0 (1 = off)")
    return s


def fast_sampling(
    gen_config: GenerationConfig, static_cache: bool, compile: bool, backend: str = "inductor", device: str | torch.device = "cpu"
) -> dict:
    """Set `gen_config` for transformers' static KV cache and compiled decoding; returns what was set, for the record.

    `compile` implies the static cache: transformers compiles the forward of the decoding steps (the
    prompt's forward stays eager) only with a cache of fixed shape, and it does so itself
    (`compile_config`), on CPU too once told to. Our processors run outside the compiled forward,
    so CFG and the grammar are unchanged. The first call compiles (on the 2-core CPU VM, inductor
    took 25-50 s for the tiny model); later calls of the same shape in the same process reuse it.
    A static cache alone turns transformers' automatic compile off, so the flag means what it says.
    """
    if not (static_cache or compile):
        return {"static_cache": False, "compile": False}
    if compile:
        from torch._dynamo import list_backends
        from transformers import CompileConfig

        known = list_backends(exclude_tags=())
        if backend not in known:
            raise InputError(f"--compile_backend {backend!r}: not a torch.compile backend here; choose one of: {', '.join(known)}")
        # CUDA graphs ("reduce-overhead", transformers' default mode) exist for inductor only.
        config = CompileConfig(backend=backend) if backend == "inductor" else CompileConfig(backend=backend, mode=None)
        if torch.device(device).type != "cuda":
            config._compile_all_devices = True  # transformers' own switch: otherwise it compiles on accelerators only
        gen_config.update(cache_implementation="static", compile_config=config, disable_compile=False)
        return {"static_cache": True, "compile": True, "compile_backend": backend}
    gen_config.update(cache_implementation="static", disable_compile=True)
    return {"static_cache": True, "compile": False}


def grammar_processor(tokenizer):
    from midilm.grammar import GrammarLogitsProcessor  # built once per tokenizer and cached there

    return GrammarLogitsProcessor(tokenizer)


def music_guard(tokenizer, config):
    """The musical guard for a model config with `midilm_guard` bounds; None for a model saved without them."""
    from midilm.guard import guard_processor

    return guard_processor(tokenizer, config)


def guard_bounds(processor) -> dict | None:
    """The bounds a guard processor applies, for a sample's record (None: no guard ran)."""
    if processor is None:
        return None
    return {"max_notes_per_onset": processor.guard.max_notes_per_onset, "max_notes_per_bar": processor.guard.max_notes_per_bar}


def build_plan(
    tokenizer,
    composer_map: ComposerMap,
    config,
    defaults: dict | GenerationConfig,
    composers: list[str],
    *,
    seed: int = 0,
    prompt_ids: list[int] | None = None,
    grammar: bool = True,
    guard: bool = True,
    device: str | torch.device = "cpu",
    static_cache: bool = False,
    compile: bool = False,
    compile_backend: str = "inductor",
    **settings,
) -> GenerationPlan:
    """The plan for one batched generate() call: one sample per entry of `composers` (names or `none`).
    `guard`: the musical guard (`midilm.guard`), applied when `config` carries its bounds; the
    settings record whether it ran (`guard`) and its bounds. `static_cache` and `compile`: see `fast_sampling`.
    `defaults`: `sampling_defaults(...)`, or a GenerationConfig read with `config`'s guidance default."""
    if isinstance(defaults, GenerationConfig):
        defaults = sampling_defaults(config, defaults)
    try:
        composer_ids = [composer_map.id_of(c) for c in composers]
    except KeyError as err:
        raise InputError(f"--composer: {err.args[0]}") from err
    names = [composer_map.name_of(i) for i in composer_ids]
    context = context_length(config)
    s = resolve_settings(defaults, context, **settings)
    unconditional = all(i == composer_map.none_id for i in composer_ids)
    # Guiding COMPOSER_NONE towards itself is plain sampling; skip the second half of the batch.
    s["effective_guidance_scale"] = 1.0 if unconditional else s["guidance_scale"]
    s["grammar"], s["seed"] = bool(grammar), int(seed)
    prompt = fit_prompt(tokenizer, list(prompt_ids or []), context - HEADER_TOKENS - s["max_new_tokens"])
    s["prompt_tokens"] = len(prompt)

    bos = config.bos_token_id
    rows = [[bos, c, *prompt] for c in composer_ids]
    if s["effective_guidance_scale"] != 1.0:
        rows += [[bos, composer_map.none_id, *prompt] for _ in composer_ids]
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)

    processors = LogitsProcessorList()
    if grammar:
        processors.append(grammar_processor(tokenizer))
    note_guard = music_guard(tokenizer, config) if guard else None
    s["guard"], s["guard_bounds"] = note_guard is not None, guard_bounds(note_guard)
    if note_guard is not None:
        processors.append(note_guard)  # after the grammar, before the processor that mixes and samples
    processors.append(
        CFGSamplingProcessor(
            s["effective_guidance_scale"], s["temperature"], s["top_k"], s["top_p"], s["repetition_penalty"], seed=seed
        )
    )
    # Greedy over the forced scores our processor returns. Every sampling flag is set to its neutral
    # value because generate() fills unset ones from the model's generation_config.json (which would
    # add a second repetition penalty and transformers' own CFG).
    gen_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=s["max_new_tokens"],
        min_new_tokens=s.get("min_new_tokens"),
        guidance_scale=1.0,
        repetition_penalty=1.0,
        temperature=1.0,
        top_k=50,  # transformers' neutral value for greedy search; our processor applies top_k
        top_p=1.0,
        bos_token_id=bos,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    s.update(fast_sampling(gen_config, static_cache, compile, compile_backend, device))
    return GenerationPlan(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=gen_config,
        logits_processor=processors,
        tokenizer=tokenizer,
        composers=names,
        settings=s,
        prompt_ids=prompt,
    )


def composer_names(composer_map: ComposerMap, composer: str) -> list[str]:
    """`--composer` as a list: a name or token, a comma-separated list, `all` (every composer) or `none`.

    Names may hold commas (`Bach, Johann Sebastian`): the longest run of comma-separated parts that
    names a composer is taken first, so `Bach, Johann Sebastian,mozart` is two composers.
    """
    if composer.strip().lower() == "all":
        return composer_map.names
    parts, names, start = composer.split(","), [], 0
    while start < len(parts):
        for stop in range(len(parts), start, -1):
            candidate = ",".join(parts[start:stop]).strip()
            if stop == start + 1 or _known_composer(composer_map, candidate):
                if candidate:
                    names.append(candidate)
                start = stop
                break
    return names


def _known_composer(composer_map: ComposerMap, name: str) -> bool:
    try:
        composer_map.id_of(name)
    except KeyError:
        return False
    return True


def prepare_generation(
    model_dir: str | Path,
    composer: str | None,
    num_samples: int = 1,
    *,
    max_new_tokens: int | None = None,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int = 0,
    prompt_midi: str | Path | None = None,
    prompt_bars: int | None = None,
    grammar: bool = True,
    guard: bool = True,
    min_new_tokens: int | None = None,
    device: str | torch.device = "cpu",
    static_cache: bool = False,
    compile: bool = False,
    compile_backend: str = "inductor",
) -> GenerationPlan:
    """Plan `num_samples` samples of `composer` from a model folder: a name (case-insensitive), a
    comma-separated list, `all` (every composer of the model) or `none` (unconditional).

    Settings left as None come from the folder (`sampling_defaults`: guidance from config.json's
    `midilm_guidance_scale`, the rest from generation_config.json). `prompt_midi` continues the
    first `prompt_bars` bars (default: all) of a MIDI file. `guard=False` turns the musical guard off
    (it is on whenever the model carries its bounds). `static_cache`, `compile`: see
    `fast_sampling`. Raises InputError on bad input.
    """
    config, tokenizer, composer_map = load_midilm_dir(model_dir)
    if not composer:
        raise InputError(f"--composer is required; choose one of: {', '.join(composer_map.names + [NONE.lower()])}")
    defaults = sampling_defaults(model_dir)
    if num_samples < 1:
        raise InputError(f"--num_samples {num_samples}: must be at least 1")
    composers = composer_names(composer_map, composer)
    prompt = load_prompt(tokenizer, prompt_midi, prompt_bars) if prompt_midi is not None else None
    return build_plan(
        tokenizer, composer_map, config, defaults, [c for c in composers for _ in range(num_samples)],
        seed=seed, prompt_ids=prompt, grammar=grammar, guard=guard, device=device, max_new_tokens=max_new_tokens,
        guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, min_new_tokens=min_new_tokens,
        static_cache=static_cache, compile=compile, compile_backend=compile_backend,
    )


@torch.no_grad()
def sample_scores(
    model, tokenizer, composer_map: ComposerMap, composers: list[str], samples_per_composer: int,
    max_new_tokens: int | None = None, seed: int = 0, grammar: bool = True, guard: bool = True,
) -> list[tuple[str, Score]]:
    """(composer, Score) for `samples_per_composer` samples of each composer, from one generate() call
    on an in-memory model (train.py's evaluation samples). Defaults come from `model.generation_config`."""
    names = [c for c in composers for _ in range(samples_per_composer)]
    if not names:
        return []
    context = context_length(model.config)
    plan = build_plan(
        tokenizer, composer_map, model.config, model.generation_config, names, seed=seed, grammar=grammar, guard=guard,
        device=model.device, max_new_tokens=None if max_new_tokens is None else min(max_new_tokens, context - HEADER_TOKENS),
    )
    output = model.generate(
        plan.input_ids, attention_mask=plan.attention_mask, generation_config=plan.generation_config, logits_processor=plan.logits_processor
    )
    return list(zip(plan.composers, plan.decode(output)))



# ---------------------------------------------------------------------------------------------
# generate.py: arguments, file names and writing


@dataclass
class GenerateArguments:
    model_dir: str = field(default="model_output", metadata={"help": "Model folder written by train.py."})
    composer: str | None = field(default=None, metadata={"help": "Composer to imitate (case-insensitive): a name, a comma-separated list, `all`, or `none` (unconditional)."})
    num_samples: int = field(default=1, metadata={"help": "Samples per composer; all come from one batched generate() call."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Tokens to generate (default: the model's generation_config.json)."})
    guidance_scale: float | None = field(default=None, metadata={"help": "Classifier-free guidance scale s; 1 = off, 0 = unconditional."})
    temperature: float | None = field(default=None, metadata={"help": "Softmax temperature."})
    top_k: int | None = field(default=None, metadata={"help": "Keep the k most likely tokens (0 = off)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling mass (1 = off)."})
    repetition_penalty: float | None = field(default=None, metadata={"help": "Penalty on tokens already in the sequence (1 = off)."})
    seed: int = field(default=0, metadata={"help": "Same seed and settings give byte-identical MIDI files."})
    output_dir: str = field(default="samples", metadata={"help": "Where <composer>_<i>.mid/.json (and .wav, .png) go."})
    prompt_midi: str | None = field(default=None, metadata={"help": "MIDI file to continue."})
    prompt_bars: int | None = field(default=None, metadata={"help": "Continue only the first N bars of --prompt_midi (default: all)."})
    melody_midi: str | None = field(default=None, metadata={"help": "Accompany this melody (a marked melody track, else the top voice): writes accompaniment_<composer>_<i>.mid with the melody unchanged on its own track plus the generated parts, bar for bar; --composer is optional (default: none), --max_new_tokens does not apply (the melody sets the length)."})
    wav: bool = field(default=False, metadata={"help": "Also render a WAV with a General MIDI soundfont."})
    png: bool = field(default=False, metadata={"help": "Also draw a piano-roll PNG."})
    no_grammar: bool = field(default=False, metadata={"help": "Turn the REMI grammar processor off (for measuring)."})
    no_guard: bool = field(default=False, metadata={"help": "Turn the musical guard off: it caps the notes starting at one onset and in one bar at the bounds learnt from the training data (config.json's midilm_guard), and is on by default for a model that carries them."})
    soundfont: str | None = field(default=None, metadata={"help": "Soundfont for --wav (default: one found locally)."})
    static_cache: bool = field(default=False, metadata={"help": "Preallocated KV cache (transformers' cache_implementation='static'): same seed, same MIDI bytes as without it (tested). Pays off with --compile; alone it is slower on CPU."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the decoding forward (implies --static_cache). The first call compiles (25-50 s on a 2-core CPU with inductor, for the tiny model), so it pays off for long or many samples, mostly on a GPU. Same seed, same MIDI bytes as without it on CPU (tested with aot_eager; seen with inductor in bench/RESULTS.md), but inductor may reorder float sums, so on another machine or a GPU a draw can change."})
    compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend for --compile (inductor; eager or aot_eager only check that the model compiles)."})
    list_composers: bool = field(default=False, metadata={"help": "Print the model's composers and exit."})
    overwrite: bool = field(default=False, metadata={"help": "Replace sample files already in --output_dir."})


def list_composers(model_dir: str | Path) -> str:
    load_midilm_dir(model_dir)  # the same checks as sampling
    _, composer_map = load_tokenizer(model_dir)
    pieces = composer_map.pieces or [0] * len(composer_map.names)
    lines = [f"{name} ({n} training pieces)" if n else name for name, n in zip(composer_map.names, pieces)]
    return "\n".join(lines + ["none (unconditional)"])


def sample_stem(composer: str, index: int) -> str:
    """`bach_0`, `Bach, Johann Sebastian_0`: the composer's own name, less the characters no file
    name may hold on some system (path separators, `<>:"|?*`, control characters)."""
    name = NONE.lower() if composer == NONE else re.sub(r'[\x00-\x1f/\\<>:"|?*]+', "-", composer).strip(" .") or "unnamed"
    return f"{name}_{index}"


def sample_files(plan: GenerationPlan, output_dir: Path, wav: bool, png: bool, overwrite: bool) -> list[dict[str, Path]]:
    """Every file this call will write, per sample; refuses to replace existing ones without --overwrite."""
    return output_files(plan.composers, output_dir, wav, png, overwrite)


def output_files(composers: list[str], output_dir: Path, wav: bool, png: bool, overwrite: bool, prefix: str = "") -> list[dict[str, Path]]:
    """`<prefix><composer>_<i>.mid/.json` (+ .wav, .png) per sample; refuses to replace files without --overwrite."""
    suffixes = [".mid", ".json"] + [".wav"] * wav + [".png"] * png
    files, counts = [], {}
    for composer in composers:
        index = counts[composer] = counts.get(composer, -1) + 1
        files.append({s: output_dir / f"{prefix}{sample_stem(composer, index)}{s}" for s in suffixes})
    existing = [p for f in files for p in f.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"--output_dir {output_dir}: {existing[0].name} already exists ({len(existing)} files would be replaced); pass --overwrite")
    return files


def check_soundfont(soundfont: str | None) -> Path:
    """Find the soundfont and a synthesizer before any sampling, so --wav fails fast (render.py renders)."""
    from midilm.render import SOUNDFONT_ENV, available_backends, find_soundfont

    try:
        path = find_soundfont(soundfont)
    except FileNotFoundError as err:
        raise InputError(f"--soundfont: {err}") from err
    if path is None:
        raise InputError(f"--wav: no General MIDI soundfont found; pass --soundfont PATH or set ${SOUNDFONT_ENV}")
    if not available_backends():
        raise InputError("--wav: no MIDI synthesizer; `pip install --no-deps tinysoundfont` or `apt-get install fluidsynth`")
    return path


def load_model(model_dir: str | Path, device: str | torch.device = "cpu"):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    except (OSError, ValueError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--model_dir {model_dir}: cannot load the weights ({first_line})") from err
    return model.to(device).eval()


def write_samples(
    plan: GenerationPlan, sequences: torch.LongTensor, files: list[dict[str, Path]], record: dict, soundfont=None
) -> list[dict[str, Path]]:
    """Write every sample under temporary names, then move them all into place: a failure leaves no
    partial file behind. `record` (model_dir, prompt, ...) goes into each sample's JSON."""
    try:
        from midilm.grammar import count_syntax_errors
    except ImportError:
        count_syntax_errors = None
    scores, ids = plan.decode(sequences), plan.sample_ids(sequences)
    start = len(plan.prompt_ids) + HEADER_TOKENS
    infos = []
    for index, (score, tokens) in enumerate(zip(scores, ids)):
        info = {
            "composer": plan.composers[index],
            "sample": index,
            "seed": plan.settings["seed"],
            **record,
            "settings": plan.settings,
            "prompt_tokens": len(plan.prompt_ids),
            "new_tokens": len(tokens) - start,
            "ended_with_eos": tokens[-1] == plan.generation_config.eos_token_id and len(tokens) > start,
            "notes": score.note_num(),
        }
        if count_syntax_errors is not None:
            info["syntax_error_rate"] = count_syntax_errors(plan.tokenizer, tokens)  # miditok's tokens_errors
        info["tokens"] = tokens
        infos.append(info)
    return write_staged(files, scores, infos, soundfont)


def write_staged(files: list[dict[str, Path]], scores: list[Score], infos: list[dict], soundfont=None) -> list[dict[str, Path]]:
    """Each score as .mid (and .wav, .png where `files` names them) with its JSON record, written under
    temporary names and moved into place once all are complete."""
    output_dir = files[0][".mid"].parent
    with staging_dir(output_dir) as tmp:
        for paths, score, info in zip(files, scores, infos):
            staged = {s: tmp / p.name for s, p in paths.items()}
            staged[".mid"].write_bytes(score.dumps_midi())
            if ".wav" in staged:
                from midilm.render import AudioUnavailable, write_wav

                try:
                    write_wav(score, staged[".wav"], soundfont=soundfont)
                except AudioUnavailable as err:
                    raise InputError(f"--wav: {err}") from err
            if ".png" in staged:
                from midilm.render import piano_roll_png

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


# ---------------------------------------------------------------------------------------------
# generate.py --melody_midi: accompaniment files

ACCOMPANIMENT_PREFIX = "accompaniment_"


def accompaniment_files(composers: list[str], output_dir: Path, wav: bool, png: bool, overwrite: bool) -> list[dict[str, Path]]:
    """`accompaniment_<composer>_<i>.mid/.json` (+ .wav, .png) per sample; refuses to replace files without --overwrite."""
    return output_files(composers, output_dir, wav, png, overwrite, prefix=ACCOMPANIMENT_PREFIX)


def write_accompaniments(results: list, files: list[dict[str, Path]], record: dict, soundfont=None) -> list[dict[str, Path]]:
    """Write `midilm.accompaniment.Accompaniment`s as generate.py writes samples: MIDI (the melody track
    first, then the new parts), JSON (settings, figures, the full section's tokens), WAV and PNG."""
    infos, counts = [], {}
    for result in results:
        index = counts[result.composer] = counts.get(result.composer, -1) + 1
        infos.append({
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
        })
    return write_staged(files, [r.score for r in results], infos, soundfont)
