"""Sampling MIDI from a midilm model with plain `model.generate()` and our logits processors.

    from transformers import AutoModelForCausalLM
    from midilm import SamplingSettings, prepare_generation

    model = AutoModelForCausalLM.from_pretrained("model_output")
    plan = prepare_generation("model_output", composer="bach", num_samples=2, settings=SamplingSettings(seed=0))
    output = model.generate(plan.input_ids, attention_mask=plan.attention_mask,
                            generation_config=plan.generation_config, logits_processor=plan.logits_processor)
    for i, score in enumerate(plan.decode(output)):
        score.dump_midi(f"bach_{i}.mid")

(`plan.run(model)` is that generate() call.) `prepare_generation` takes a `SamplingSettings`
(midilm.sampling.settings), the one way settings are given, and resolves it against the model folder's defaults
(guidance from config.json's `midilm_guidance_scale`, which plain transformers never reads; the rest
from generation_config.json). It builds the rows (B conditional, then B unconditional when guidance
is on; midilm.core.rows), the grammar processor, the musical guard (midilm.sampling.guard: at most as many notes
per onset and per bar as the training data hold, on by default for a model whose config.json
carries the bounds) and our CFG processor (midilm.sampling.guidance), which does the sampling itself: the
`generation_config` it returns is greedy on purpose, so transformers' own sampling, repetition
penalty and CFG stay out of the way. Under guidance one forward serves both branches, so the usual
speed-ups apply unchanged: `compile=True` (generate.py --compile) has transformers compile the
decoding forward over a static KV cache (`midilm.sampling.settings.fast_sampling`), with the same tokens for
the same seed where tested.

A plan longer than the context (`max_new_tokens` beyond `body_room(context)`) is written by
`plan.run(model)` in windows, one generate() call each (`run_windows`): the header and the latest
whole bars, at most WINDOW_PAST_SHARE of the context, then new tokens; `plan.windows` counts them.
Its `input_ids` hold the whole prompt and may exceed the context: call `run`, not generate() yourself.

Accompanying a melody (`generate.py --melody_midi`) takes several generate() calls when the melody is
long; its API is `midilm.sampling.accompaniment` (`harmonize`, `accompany`). Sample files are written by
`midilm.sampling.sample_files`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from miditok import TokSequence
from symusic import Score
from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessorList
from transformers.generation import StoppingCriteriaList

from midilm.core.errors import InputError
from midilm.core.midi_checks import require_usable_midi
from midilm.core.modeling import context_length, load_midilm_dir, sampling_defaults
from midilm.core.rows import RowLayout, body_room, new_tokens_start
from midilm.core.tokenizer import NONE, ComposerMap, bar_start_table, encode_ids, load_tokenizer
from midilm.sampling.grammar_processor import GrammarLogitsProcessor
from midilm.sampling.guard import guard_processor
from midilm.sampling.plan import SamplingPlan
from midilm.sampling.settings import SamplingSettings, fast_sampling, greedy_config
from midilm.sampling.windows import TokenProgress, Windowed, run_windows


@dataclass
class GenerationPlan(SamplingPlan):
    """Everything one `model.generate()` call needs, and how to read its output back."""

    input_ids: torch.LongTensor  # num_samples conditional rows, then as many unconditional ones under guidance
    attention_mask: torch.LongTensor
    generation_config: GenerationConfig
    logits_processor: LogitsProcessorList
    tokenizer: object = field(repr=False)
    composers: list[str]  # one per sample
    settings: dict  # the resolved sampling settings, for the record
    prompt_ids: list[int]  # the (possibly cut) prompt, without the row's header; whole when windowed
    windowed: Windowed | None = None  # set when max_new_tokens is beyond the context: `run` writes in windows
    windows: int = 0  # generate() calls the last `run` took

    @torch.no_grad()
    def run(self, model, progress: bool = False, **generate_kwargs) -> torch.LongTensor:
        """The plan's `model.generate()` call, or one per window when the plan is longer than the
        context (`windowed`; `generate_kwargs` then go to every window); `generate_kwargs` add to it
        (stopping criteria) or replace its parts (a wrapped `logits_processor`, as the benches time
        them). `progress`: a tqdm bar over the new tokens of the whole piece."""
        if self.windowed is not None:
            return run_windows(self, model, progress, **generate_kwargs)
        kwargs = {
            "attention_mask": self.attention_mask,
            "generation_config": self.generation_config,
            "logits_processor": self.logits_processor,
        }
        meter = TokenProgress(self.generation_config.max_new_tokens) if progress else None
        if meter is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([meter])
        output = model.generate(self.input_ids, **{**kwargs, **generate_kwargs})
        self.windows = 1
        if meter is not None:
            meter.close()
        return output

    def sample_ids(self, sequences: torch.LongTensor) -> list[list[int]]:
        """Each sample's tokens: BOS, composer, prompt, continuation, up to and including EOS."""
        eos = self.generation_config.eos_token_id
        start = new_tokens_start(len(self.prompt_ids))
        pad = self.generation_config.pad_token_id
        rows = []
        for row in sequences[: self.num_samples].tolist():
            end = row.index(eos, start) + 1 if eos in row[start:] else len(row)
            while end > start and row[end - 1] == pad:  # a windowed row that stopped before the others
                end -= 1
            rows.append(row[:end])
        return rows

    def new_tokens(self, ids: list[int]) -> int:
        """How many tokens of one sample (`sample_ids`) were generated."""
        return len(ids) - new_tokens_start(len(self.prompt_ids))

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
    path = Path(path)
    require_usable_midi(path, "--prompt_midi")  # the data pipeline's own checks, so prompts fail the same way
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


def guard_bounds(processor) -> dict | None:
    """The bounds a guard processor applies, for a sample's record (None: no guard ran)."""
    if processor is None:
        return None
    return {
        "max_notes_per_onset": processor.guard.max_notes_per_onset,
        "max_notes_per_bar": processor.guard.max_notes_per_bar,
    }


def model_settings(
    config,
    generation: GenerationConfig | None,
    settings: SamplingSettings | None = None,
    with_length: bool = True,
    defaults: dict | None = None,
) -> SamplingSettings:
    """`settings` (default: all the model's) resolved against `defaults` (a folder's `sampling_defaults`), else an
    in-memory model's (`sampling_defaults(config, generation)`), and checked; `with_length=False` leaves
    max_new_tokens unset."""
    return (settings or SamplingSettings()).resolve(
        sampling_defaults(config, generation) if defaults is None else defaults,
        context_length(config) if with_length else None,
    )


def composer_ids_of(composer_map: ComposerMap, composers: list[str]) -> list[int]:
    try:
        return [composer_map.id_of(c) for c in composers]
    except KeyError as err:
        raise InputError(f"--composer: {err.args[0]}") from err


def build_plan(
    tokenizer,
    composer_map: ComposerMap,
    config,
    settings: SamplingSettings,
    composers: list[str],
    *,
    prompt_ids: list[int] | None = None,
    device: str | torch.device = "cpu",
) -> GenerationPlan:
    """The plan for one batched generate() call: one sample per entry of `composers` (names or `none`).
    `settings`: resolved (`SamplingSettings.resolve` or `model_settings`). The musical guard
    (`midilm.sampling.guard`) applies when `settings.guard` and `config` carries its bounds; the record says
    whether it ran (`guard`) and its bounds."""
    composer_ids = composer_ids_of(composer_map, composers)
    names = [composer_map.name_of(i) for i in composer_ids]
    context = context_length(config)
    scale = settings.effective_guidance_scale(composer_ids, composer_map.none_id)
    windowed = None
    if settings.max_new_tokens > body_room(
        context
    ):  # beyond the context: the whole prompt is kept, each window reads its end
        windowed = Windowed(context, settings, scale, composer_ids, composer_map.none_id)
        prompt = list(prompt_ids or [])
    else:
        prompt = fit_prompt(tokenizer, list(prompt_ids or []), body_room(context) - settings.max_new_tokens)

    layout = RowLayout.for_tokenizer(tokenizer)
    rows = [layout.continuation_prompt(c, prompt) for c in composer_ids]
    if scale != 1.0:
        rows += [layout.continuation_prompt(composer_map.none_id, prompt) for _ in composer_ids]
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)

    processors = LogitsProcessorList()
    if settings.grammar:
        processors.append(GrammarLogitsProcessor(tokenizer))  # built once per tokenizer and cached there
    note_guard = guard_processor(tokenizer, config) if settings.guard else None
    if note_guard is not None:
        processors.append(note_guard)  # after the grammar, before the processor that mixes and samples
    processors.append(settings.sampler(scale))
    gen_config = greedy_config(
        settings.max_new_tokens, config.bos_token_id, config.eos_token_id, config.pad_token_id, settings.min_new_tokens
    )
    speed = fast_sampling(gen_config, settings.static_cache, settings.compile, settings.compile_backend, device)
    return GenerationPlan(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=gen_config,
        logits_processor=processors,
        tokenizer=tokenizer,
        composers=names,
        settings=settings.record(scale, guard_bounds(note_guard), prompt_tokens=len(prompt), **speed),
        prompt_ids=prompt,
        windowed=windowed,
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


def sample_composers(composer_map: ComposerMap, composer: str, num_samples: int) -> list[str]:
    """One composer per sample: each of `--composer`'s names (`composer_names`) `num_samples` times. InputError,
    before any weight is read, for a count below 1 or a composer the model does not know."""
    if num_samples < 1:
        raise InputError(f"--num_samples {num_samples}: must be at least 1")
    names = composer_names(composer_map, composer)
    composer_ids_of(composer_map, names)
    return [c for c in names for _ in range(num_samples)]


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
    settings: SamplingSettings | None = None,
    *,
    prompt_midi: str | Path | None = None,
    prompt_bars: int | None = None,
    device: str | torch.device = "cpu",
) -> GenerationPlan:
    """Plan `num_samples` samples of `composer` from a model folder: a name (case-insensitive), a
    comma-separated list, `all` (every composer of the model) or `none` (unconditional).

    `settings` (`SamplingSettings(seed=0, max_new_tokens=64, ...)`, None: all defaults): what is left
    unset comes from the folder (`sampling_defaults`). `prompt_midi` continues the first `prompt_bars`
    bars (default: all) of a MIDI file. Raises InputError on bad input.
    """
    settings = settings or SamplingSettings()
    config, tokenizer, composer_map = load_midilm_dir(model_dir)
    if not composer:
        raise InputError(f"--composer is required; choose one of: {', '.join(composer_map.names + [NONE.lower()])}")
    resolved = settings.resolve(sampling_defaults(model_dir), context_length(config))
    composers = sample_composers(composer_map, composer, num_samples)
    prompt = load_prompt(tokenizer, prompt_midi, prompt_bars) if prompt_midi is not None else None
    return build_plan(tokenizer, composer_map, config, resolved, composers, prompt_ids=prompt, device=device)


def replace_settings(settings: SamplingSettings | None, overrides: dict) -> SamplingSettings:
    """`settings` with some fields replaced (a dict of field names); an unknown name is a TypeError."""
    unknown = sorted(set(overrides) - set(SamplingSettings.names()))
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
    return SamplingSettings(**{**(vars(settings) if settings else {}), **overrides})


def sample_scores(
    model,
    tokenizer,
    composer_map: ComposerMap,
    composers: list[str],
    samples_per_composer: int,
    settings: SamplingSettings | None = None,
) -> list[tuple[str, Score]]:
    """(composer, Score) for `samples_per_composer` samples of each composer, from one generate() call
    on an in-memory model (train.py's evaluation samples). Unset settings come from `model.generation_config`;
    max_new_tokens is capped to the context."""
    names = [c for c in composers for _ in range(samples_per_composer)]
    if not names:
        return []
    settings = settings or SamplingSettings()
    longest = body_room(context_length(model.config))
    if settings.max_new_tokens is not None and settings.max_new_tokens > longest:
        settings = replace_settings(settings, {"max_new_tokens": longest})
    plan = build_plan(
        tokenizer,
        composer_map,
        model.config,
        model_settings(model.config, model.generation_config, settings),
        names,
        device=model.device,
    )
    return list(zip(plan.composers, plan.decode(plan.run(model))))


def list_composers(model_dir: str | Path) -> str:
    load_midilm_dir(model_dir)  # the same checks as sampling
    _, composer_map = load_tokenizer(model_dir)
    pieces = composer_map.pieces or [0] * len(composer_map.names)
    lines = [f"{name} ({n} training pieces)" if n else name for name, n in zip(composer_map.names, pieces)]
    return "\n".join(lines + ["none (unconditional)"])


def load_model(model_dir: str | Path, device: str | torch.device = "cpu"):
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    except (OSError, ValueError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--model_dir {model_dir}: cannot load the weights ({first_line})") from err
    return model.to(device).eval()
