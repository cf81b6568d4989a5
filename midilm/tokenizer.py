"""The miditok REMI tokenizer, its BPE vocabulary and the composer tokens that travel with it."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import miditok
import numpy as np

from midilm.errors import InputError

COMPOSERS_FILE = "composers.json"
TOKENIZER_FILE = "tokenizer.json"
COMPOSER_PREFIX = "COMPOSER_"
OTHER = "OTHER"
NONE = "NONE"
# PAD must stay first: miditok and the collator treat id 0 as padding.
BASE_SPECIAL_TOKENS = ("PAD", "BOS", "EOS")
# The accompaniment layout `[BOS, COMPOSER, MELODY, melody bars…, FULL, the same bars in full…, EOS]`
# marks its two sections with special tokens: BPE learns from music only, so it never merges them.
# They come after the composer tokens, so adding them moved no existing id.
MELODY_TOKEN, FULL_TOKEN = "MELODY_None", "FULL_None"
SECTION_TOKENS = ("MELODY", "FULL")
# The infilling layout `[BOS, COMPOSER, bars before the span…, GAP, bars after it…, FILL, the span…, EOS]`
# marks where the span was taken out (GAP) and where it is written (FILL); appended after MELODY and FULL.
GAP_TOKEN, FILL_TOKEN = "GAP_None", "FILL_None"
INFILL_TOKENS = ("GAP", "FILL")


def composer_token(name: str) -> str:
    """`COMPOSER_<slug>`: letters and digits of any script are kept, every other run of characters
    (spaces, commas, dots, underscores) becomes one `-`: `Bach, Johann Sebastian` → `COMPOSER_Bach-Johann-Sebastian`.

    miditok reads a special token as `TYPE_value` and rewrites any token with more than one
    underscore (`A_B_C` → `A-B_C`, miditok.classes._format_special_token), so the slug holds none.
    """
    slug = "-".join(re.findall(r"[^\W_]+", unicodedata.normalize("NFC", name))) or "unnamed"
    return COMPOSER_PREFIX + slug


def composer_tokens(names: list[str]) -> list[str]:
    """`composer_token` of every name; two names with one token (letter case aside, as `--composer`
    matches names and tokens case-insensitively), or a name taking the unconditional token, are an InputError."""
    owner: dict[str, str] = {composer_token(NONE).casefold(): f"the unconditional token {composer_token(NONE)}"}
    tokens = []
    for name in names:
        token = composer_token(name)
        other = owner.setdefault(token.casefold(), repr(name))
        if other != repr(name):
            raise InputError(
                f"composers {other} and {name!r} would share the token {token}; rename one of them "
                "(its folder, or its label in --metadata)"
            )
        tokens.append(token)
    return tokens


@dataclass
class ComposerMap:
    """Composer name ↔ token id. `names` is in ClassLabel order; `NONE` (the CFG token) is kept apart."""

    names: list[str]
    token_ids: list[int]
    none_id: int
    pieces: list[int] = field(default_factory=list)

    def id_of(self, name: str) -> int:
        """Token id of a composer: its name or its token (`Bach, Johann Sebastian`,
        `COMPOSER_Bach-Johann-Sebastian` or `Bach-Johann-Sebastian`), case-insensitive; `none` gives
        the unconditional token."""
        wanted = unicodedata.normalize("NFC", name.strip()).casefold()
        if wanted in (NONE.casefold(), composer_token(NONE).casefold()):
            return self.none_id
        for known, token_id in zip(self.names, self.token_ids):
            token = composer_token(known).casefold()
            if wanted in (unicodedata.normalize("NFC", known).casefold(), token, token[len(COMPOSER_PREFIX) :]):
                return token_id
        raise KeyError(f"unknown composer {name!r}; choose one of: {', '.join(self.names + [NONE.lower()])}")

    def name_of(self, token_id: int) -> str:
        if token_id == self.none_id:
            return NONE
        return self.names[self.token_ids.index(token_id)]

    def to_json(self) -> dict:
        rows = [
            {"composer": n, "token": composer_token(n), "id": i, "pieces": p}
            for n, i, p in zip(self.names, self.token_ids, self.pieces or [0] * len(self.names))
        ]
        return {"composers": rows, "none": {"token": composer_token(NONE), "id": self.none_id}}

    @classmethod
    def from_json(cls, data: dict) -> ComposerMap:
        rows = data["composers"]
        return cls(
            names=[r["composer"] for r in rows],
            token_ids=[r["id"] for r in rows],
            none_id=data["none"]["id"],
            pieces=[r.get("pieces", 0) for r in rows],
        )

    def to_config(self) -> dict:
        """The compact form stored in a model's config.json, so `from_pretrained` alone knows it."""
        return {"composer_to_id": dict(zip(self.names, self.token_ids)), "composer_none_id": self.none_id}

    @classmethod
    def from_config(cls, config) -> ComposerMap:
        mapping = getattr(config, "composer_to_id", None)
        if not mapping:
            raise ValueError("the model config has no composer map (composer_to_id); is it a midilm model?")
        # config.json is written with sorted keys; token ids follow the ClassLabel order, so sort by id.
        rows = sorted(mapping.items(), key=lambda item: item[1])
        return cls(names=[n for n, _ in rows], token_ids=[i for _, i in rows], none_id=config.composer_none_id)


# The REMI tokenizer's settings (miditok.TokenizerConfig keys); config.json's `tokenizer` section overrides any.
TOKENIZER_DEFAULTS = {
    "pitch_range": [21, 109],  # the 88 piano keys: General MIDI music outside them is rare and mostly noise
    "beat_res": {
        "0_4": 8,
        "4_12": 4,
    },  # 32nd notes within a bar of 4/4, 16th notes for longer values: the grid of common notation
    "num_velocities": 16,  # 8 dynamics steps each split in two: finer steps are not heard, and cost vocabulary
    "use_velocities": True,
    "use_programs": True,  # instruments matter to a composer's texture (string quartet vs organ)
    "use_tempos": True,
    "num_tempos": 32,
    "tempo_range": [40, 250],  # quarter notes per minute: the span of performance practice
    "use_time_signatures": True,  # a melody's metre constrains its accompaniment bar by bar
    "use_rests": False,  # REMI's Position tokens already place notes after a silence
    "remove_duplicated_notes": True,  # the same pitch twice at one onset on one track sounds once
    "encode_ids_split": "bar",  # BPE never merges across a bar line, so rows can be cut at bar lines
}


def tokenizer_settings(overrides: dict | None = None) -> dict:
    """`TOKENIZER_DEFAULTS` with config.json's `tokenizer` section (whole, partial or empty) over it;
    any other miditok.TokenizerConfig key passes through to miditok, which checks it."""
    return {**TOKENIZER_DEFAULTS, **(overrides or {})}


def make_tokenizer_config(settings: dict, composers: list[str], infill_markers: bool = True) -> miditok.TokenizerConfig:
    """A REMI config from tokenizer settings (`tokenizer_settings`), with one special token per composer.

    `infill_markers=False` leaves GAP and FILL out: the data step's scan encodes with that vocabulary, so its ids,
    whose hash puts each piece in its split, are those of the tokenizers made before the markers existed, and a
    corpus keeps its splits."""
    settings = dict(settings)
    beat_res = {tuple(int(x) for x in k.split("_")): v for k, v in settings.pop("beat_res").items()}
    specials = list(BASE_SPECIAL_TOKENS) + composer_tokens(composers) + [composer_token(NONE)] + list(SECTION_TOKENS)
    specials += list(INFILL_TOKENS) if infill_markers else []
    return miditok.TokenizerConfig(
        beat_res=beat_res,
        pitch_range=tuple(settings.pop("pitch_range")),
        special_tokens=specials,
        one_token_stream_for_programs=True,
        **settings,
    )


def build_tokenizer(
    settings: dict, composers: list[str], infill_markers: bool = True
) -> tuple[miditok.REMI, ComposerMap]:
    tokenizer = miditok.REMI(make_tokenizer_config(settings, composers, infill_markers))
    composer_map = ComposerMap(
        names=list(composers),
        token_ids=[tokenizer.vocab[composer_token(c)] for c in composers],
        none_id=tokenizer.vocab[composer_token(NONE)],
    )
    return tokenizer, composer_map


def save_tokenizer(tokenizer: miditok.REMI, composer_map: ComposerMap, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(directory, filename=TOKENIZER_FILE)
    (directory / COMPOSERS_FILE).write_text(json.dumps(composer_map.to_json(), indent=2) + "\n")


def load_tokenizer(directory: str | Path) -> tuple[miditok.REMI, ComposerMap]:
    """Load a tokenizer folder written by `prepare_dataset.py` (or a model folder, which holds a copy)."""
    directory = Path(directory)
    params, composers = directory / TOKENIZER_FILE, directory / COMPOSERS_FILE
    if not params.is_file() or not composers.is_file():
        raise FileNotFoundError(
            f"{directory} is not a midilm tokenizer folder (needs {TOKENIZER_FILE} and {COMPOSERS_FILE}); "
            "run prepare_dataset.py first"
        )
    tokenizer = miditok.REMI(params=params)
    return tokenizer, ComposerMap.from_json(json.loads(composers.read_text()))


def section_token_ids(tokenizer: miditok.REMI) -> tuple[int, int] | None:
    """Ids of the MELODY and FULL section tokens; None for a tokenizer made before they existed."""
    vocab = tokenizer.vocab
    if MELODY_TOKEN not in vocab or FULL_TOKEN not in vocab:
        return None
    return vocab[MELODY_TOKEN], vocab[FULL_TOKEN]


def infill_token_ids(tokenizer: miditok.REMI) -> tuple[int, int] | None:
    """Ids of the GAP and FILL infilling markers; None for a tokenizer made before they existed (it cannot infill)."""
    vocab = tokenizer.vocab
    if GAP_TOKEN not in vocab or FILL_TOKEN not in vocab:
        return None
    return vocab[GAP_TOKEN], vocab[FILL_TOKEN]


def vocab_base_tokens(tokenizer: miditok.REMI) -> list[list[str]]:
    """For every vocabulary id, the base REMI tokens it stands for (one each when there is no BPE).

    Relies on miditok's byte table, which `decode_token_ids` uses the same way.
    """
    if not tokenizer.is_trained:
        return [[tokenizer[i]] for i in range(tokenizer.vocab_size)]
    model = tokenizer._model
    return [list(tokenizer._vocab_learned_bytes_to_tokens[model.id_to_token(i)]) for i in range(tokenizer.vocab_size)]


def bar_start_table(tokenizer: miditok.REMI) -> list[bool]:
    """For every vocabulary id, whether it begins with a `Bar` token.

    BPE is trained per bar (`encode_ids_split="bar"`), so no merged item spans a bar line and a bar
    always starts at the first base token of some item.
    """
    # miditok's BPE vocabulary also holds the bare word-start marker, which stands for no token.
    return [bool(base) and base[0].startswith("Bar_") for base in vocab_base_tokens(tokenizer)]


def encode_ids(tokenizer: miditok.REMI, score) -> np.ndarray:
    """A score's token ids (BPE applied) as the model sees them.

    miditok's BPE can leave its bare word-start marker alone before a bar line: an item that stands
    for no base token, decodes to nothing and breaks the grammar. It is dropped here, so training
    rows, prompts and melodies never hold it.
    """
    ids = np.asarray(tokenizer.encode(score).ids, dtype=np.int64)
    empty = _empty_items(tokenizer)
    return ids[~empty[ids]] if len(ids) and empty.any() else ids


def bar_words(tokenizer: miditok.REMI, base_ids: np.ndarray) -> list[str]:
    """Base REMI ids as miditok's BPE sees them (`encode_ids_split="bar"`): one string per bar, one
    character (miditok's byte) per base token. Equal to what `tokenizer.encode` builds from a score."""
    is_bar = getattr(tokenizer, "_midilm_base_bars", None)
    if is_bar is None:
        # by id, not by position: composers appended to a trained tokenizer (midilm.finetune) sit after its BPE ids
        is_bar = np.zeros(max(tokenizer.vocab.values()) + 1, dtype=bool)
        is_bar[[i for token, i in tokenizer.vocab.items() if token.startswith("Bar_")]] = True
        tokenizer._midilm_base_bars = is_bar
    cuts = np.flatnonzero(is_bar[base_ids])
    byte_of = tokenizer._vocab_base_id_to_byte
    return ["".join(byte_of[i] for i in bar.tolist()) for bar in np.split(base_ids, cuts[cuts > 0]) if len(bar)]


class BarWordsIterator:
    """Training data for `tokenizer.train(iterator=...)`: the bar words of each base id sequence that
    `sequences()` yields (`count` of them), so BPE learns from stored ids without parsing files again."""

    def __init__(self, tokenizer: miditok.REMI, sequences, count: int):
        self.tokenizer, self.sequences, self.count = tokenizer, sequences, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return (bar_words(self.tokenizer, ids) for ids in self.sequences())


def encode_base_ids(tokenizer: miditok.REMI, base_ids: np.ndarray) -> np.ndarray:
    """BPE applied to base REMI ids (stored by the data step's scan), as `encode_ids` applies it to a score."""
    if not tokenizer.is_trained or not len(base_ids):
        return np.asarray(base_ids, dtype=np.int64)
    ids = np.asarray(tokenizer._model.encode(bar_words(tokenizer, base_ids), is_pretokenized=True).ids, dtype=np.int64)
    empty = _empty_items(tokenizer)
    return ids[~empty[ids]] if len(ids) and empty.any() else ids


def _empty_items(tokenizer: miditok.REMI) -> np.ndarray:
    table = getattr(tokenizer, "_midilm_empty_items", None)
    if table is None or len(table) != len(tokenizer):
        table = np.array([not base for base in vocab_base_tokens(tokenizer)])
        tokenizer._midilm_empty_items = table
    return table
