"""Building on a trained model: the base folder (local or from the Hub), its tokenizer with new composers
appended, the model grown to match, LoRA adapters (peft) merged on save, the base's data replayed, and
the lineage every output records.

The base's tokenizer is the contract. Its BPE vocabulary stays byte for byte; a composer it never saw
gets a new token after its last id (miditok's `add_to_vocab`), so every id the base knows keeps its
meaning and the base's embeddings stay valid. Only the new composers' rows of the embedding are new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from midilm.core.errors import InputError
from midilm.core.modeling import BASE_KEY, context_length, load_midilm_dir
from midilm.core.tokenizer import NONE, OTHER, TOKENIZER_DEFAULTS, ComposerMap, composer_tokens

# the tokenizer and dataset folders prepared for a model built on another record its base here
BASE_FILE = "base_model.json"
NEW_COMPOSER_INITS = ("none", "mean")
# peft's "all-linear": every linear layer of the transformer blocks (the output layer excluded), which fits
# the Llama preset (q/k/v/o and the MLP's gate/up/down) and GPT-2's (c_attn, c_proj, c_fc) alike.
DEFAULT_LORA_TARGETS = "all-linear"


@dataclass
class FinetuneArguments:
    init_from: str | None = field(
        default=None,
        metadata={
            "help": (
                "Start from this trained midilm model (a folder, or a Hub repo id, loaded with from_pretrained) "
                "instead of random weights. Its architecture and context are kept; the dataset must be prepared "
                "with prepare_dataset.py --base_model pointing at the same model."
            )
        },
    )
    # bench/RESULTS.md ("Fine-tuning"): at step 0 the two give the new composers' held-out pieces the same NLL per
    # note (20.416 against 20.406 nats), so the default is the one with a meaning: a new composer starts as the
    # unconditional model (COMPOSER_NONE), not as a blend of the known composers' styles.
    new_composer_init: str = field(
        default="none",
        metadata={
            "help": (
                f"How a new composer's embedding starts: {' or '.join(NEW_COMPOSER_INITS)} (COMPOSER_NONE's row, "
                "or the mean of the known composers' rows)."
            )
        },
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": (
                "LoRA rank (peft); 0 = full fine-tuning. With LoRA only the adapters and the new composers' "
                "embedding rows train; the saved folder has the adapters merged."
            )
        },
    )
    lora_alpha: float = field(
        default=32.0, metadata={"help": "LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str = field(
        default=DEFAULT_LORA_TARGETS,
        metadata={
            "help": (
                "Comma-separated module names to adapt, or all-linear (every linear layer of the blocks: fits "
                "the Llama and GPT-2 presets)."
            )
        },
    )
    save_adapter: bool = field(
        default=False,
        metadata={
            "help": (
                "With --lora_r: also write the adapter alone (peft's adapter_model.safetensors, a few MB) to "
                "<output_dir>/adapter."
            )
        },
    )
    replay_dataset: str | None = field(
        default=None,
        metadata={
            "help": (
                "The base model's own dataset (prepare_dataset.py output): a share of its training rows is mixed "
                "into every epoch, so the base's composers are not forgotten."
            )
        },
    )
    # bench/RESULTS.md ("Fine-tuning"): at 0.5 the demo's composers kept more of their adherence than at 0.2
    # (Palestrina 0.75 against 0.19 at s = 3), at a validation NLL per note on the new composers 6% higher.
    replay_share: float = field(
        default=0.5, metadata={"help": "With --replay_dataset: the share of training rows drawn from it."}
    )

    def __post_init__(self):
        if self.new_composer_init not in NEW_COMPOSER_INITS:
            raise InputError(
                f"--new_composer_init {self.new_composer_init!r}: choose {' or '.join(NEW_COMPOSER_INITS)}"
            )
        if self.lora_r < 0:
            raise InputError("--lora_r must be 0 (full fine-tuning) or a rank")
        if not 0 < self.replay_share < 1:
            raise InputError(f"--replay_share {self.replay_share} must be within (0, 1)")
        if self.init_from is None and (self.lora_r or self.replay_dataset):
            raise InputError("--lora_r and --replay_dataset build on a trained model: give --init_from too")
        if self.save_adapter and not self.lora_r:
            raise InputError("--save_adapter needs --lora_r")

    def method(self) -> str:
        return f"lora r={self.lora_r} alpha={self.lora_alpha:g}" if self.lora_r else "full"


@dataclass
class BaseModel:
    """A trained midilm model to build on: what the user named, where it lies, which version it is, and
    what `load_midilm_dir` read there (its config, tokenizer and composer map)."""

    source: str  # the folder or Hub repo id as given
    path: Path
    revision: str  # the Hub commit, or the sha256 of a local folder's weights
    config: object
    tokenizer: object
    composer_map: ComposerMap

    def record(self) -> dict:
        return {"model": self.source, "revision": self.revision}


def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("model*.safetensors")):
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def resolve_base(source: str, flag: str) -> BaseModel:
    """A local midilm folder, else a Hub repo id (its files fetched, or read from the cache offline);
    one InputError naming `flag` otherwise."""
    path = Path(source)
    if path.exists():
        return BaseModel(source, path, weights_digest(path), *load_midilm_dir(path, flag))
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(source, repo_type="model"))
    except Exception as err:  # offline and not cached, unknown repo, malformed id, no network: all one answer
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"{flag} {source}: no such folder, and not loadable from the Hub ({type(err).__name__}: {reason[:200]}); "
            "give a model folder, or a Hub repo id while online (offline, only repos already in the cache load)"
        ) from err
    return BaseModel(source, local, local.name, *load_midilm_dir(local, flag))


def tokenizer_settings_of(tokenizer) -> dict:
    """The settings (`midilm.core.tokenizer.TOKENIZER_DEFAULTS` keys, plus any other miditok key that differs
    from miditok's default) that build the base tokenizer's REMI vocabulary: what the scan encodes with."""
    import miditok

    mine, default = tokenizer.config.to_dict(serialize=True), miditok.TokenizerConfig().to_dict(serialize=True)
    skip = {"special_tokens", "one_token_stream_for_programs", "additional_params"}
    return {k: v for k, v in mine.items() if k not in skip and (k in TOKENIZER_DEFAULTS or v != default.get(k))}


def known_name(composer_map: ComposerMap, label: str) -> str | None:
    """The base's name for a composer label (`Bach` → `bach`, by name or token, case-insensitive), None if new."""
    try:
        token_id = composer_map.id_of(label)
    except KeyError:
        return None
    return None if token_id == composer_map.none_id else composer_map.name_of(token_id)


def composer_vocabulary(base: ComposerMap, counts: dict[str, int], min_pieces: int) -> tuple[list[str], dict[str, str]]:
    """The composers of a dataset built on `base`: the base's, in their order and with their ids, then
    the new ones that have at least `min_pieces` pieces (alphabetical), then OTHER if the base lacks it
    and new labels fold into it. Returns them and each label's composer."""
    folded = {}
    for label, n in counts.items():
        name = known_name(base, label)
        folded[label] = name if name is not None else (label if n >= min_pieces and label != OTHER else OTHER)
    new = sorted({c for c in folded.values() if c not in base.names and c != OTHER})
    other = [OTHER] if OTHER in folded.values() and OTHER not in base.names else []
    return base.names + new + other, folded


def extend_tokenizer(tokenizer, base: ComposerMap, composers: list[str]) -> ComposerMap:
    """Append a composer token for each of `composers` past the base's (`composers` starts with
    `base.names`) after the tokenizer's last id; the BPE vocabulary and every existing id stay."""
    new = composers[len(base.names) :]
    if composers[: len(base.names)] != base.names:
        raise ValueError("composers must start with the base's, in its order")
    tokens = composer_tokens(composers)[len(base.names) :]  # refuses two names with one token
    if new and not tokenizer.is_trained:
        raise InputError(
            "--base_model: its tokenizer has no BPE vocabulary (prepared with --vocab_size 0), and miditok rebuilds "
            "such a "
            f"vocabulary from its settings, so new composers ({', '.join(new)}) cannot be appended after its ids"
        )
    for token in tokens:
        tokenizer.add_to_vocab(token, special_token=True)
    return ComposerMap(
        names=list(composers),
        token_ids=base.token_ids + [tokenizer.vocab[t] for t in tokens],
        none_id=base.none_id,
    )


def _bpe_model(tokenizer) -> dict | None:
    return json.loads(tokenizer._model.to_str())["model"] if tokenizer.is_trained else None


def check_extends(base: BaseModel, tokenizer, composer_map: ComposerMap, where: str) -> list[str]:
    """That `tokenizer` is the base's with composers appended (as `extend_tokenizer` makes it); the new composers."""
    base_tokenizer, base_map, base_source = base.tokenizer, base.composer_map, base.source
    base_vocab, vocab = base_tokenizer.vocab, tokenizer.vocab
    same = (
        _bpe_model(base_tokenizer) == _bpe_model(tokenizer)
        and all(vocab.get(token) == i for token, i in base_vocab.items())
        and composer_map.names[: len(base_map.names)] == base_map.names
        and composer_map.token_ids[: len(base_map.names)] == base_map.token_ids
        and composer_map.none_id == base_map.none_id
        and set(range(len(base_tokenizer), len(tokenizer))) <= set(composer_map.token_ids)
    )
    if not same:
        raise InputError(
            f"{where} was prepared with another tokenizer than {base_source}'s (the vocabularies differ); "
            f"prepare the data with prepare_dataset.py --base_model {base_source}"
        )
    return composer_map.names[len(base_map.names) :]


def check_context(base: BaseModel, max_seq_len: int) -> None:
    if max_seq_len > context_length(base.config):
        raise InputError(
            f"--max_seq_len {max_seq_len} is longer than --init_from {base.source} can position "
            f"({context_length(base.config)} tokens); "
            f"prepare the data with prepare_dataset.py --max_seq_len {context_length(base.config)} or less"
        )


def grow_embeddings(model, base_map: ComposerMap, composer_map: ComposerMap, init: str) -> list[int]:
    """Resize the embeddings (and a tied output layer with them) to the new vocabulary; each new
    composer's row starts as COMPOSER_NONE's (`none`) or as the mean of the known composers' (`mean`).
    Returns the new rows' ids."""
    new_ids = composer_map.token_ids[len(base_map.names) :]
    old_size = model.get_input_embeddings().weight.shape[0]
    if not new_ids:
        return []
    model.resize_token_embeddings(max(new_ids) + 1, mean_resizing=False)
    layers = [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    with torch.no_grad():
        for weight in {
            id(m.weight): m.weight for m in layers
        }.values():  # a tied output layer shares the input's weight: once
            if weight.shape[0] <= old_size:
                continue
            weight[old_size:] = weight[base_map.none_id] if init == "none" else weight[base_map.token_ids].mean(0)
    return new_ids


def load_base_model(base: BaseModel, composer_map: ComposerMap, args: FinetuneArguments, record: dict):
    """The base's model with rows for the new composers (`grow_embeddings`), its config carrying the new
    composer map and `record` (`lineage`). Returns it and the new rows' ids."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.path)
    new_ids = grow_embeddings(model, base.composer_map, composer_map, args.new_composer_init)
    model.config.update(composer_map.to_config())
    model.config.update({BASE_KEY: record})
    return model, new_ids


def wrap_lora(model, args: FinetuneArguments, new_ids: list[int]):
    """The model with LoRA adapters (peft) on `args.lora_target_modules`, plus the new composers' rows of
    the embedding as peft's trainable tokens (the tied output follows them); everything else frozen."""
    from peft import LoraConfig, get_peft_model

    targets = args.lora_target_modules
    if targets != DEFAULT_LORA_TARGETS:
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        trainable_token_indices=list(new_ids) or None,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise InputError(f"--lora_target_modules {args.lora_target_modules!r}: {str(err).splitlines()[0]}") from err


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_merged(peft_model, output_dir: Path, save_adapter: bool) -> None:
    """The adapters merged into the weights, saved as a plain model folder (no adapter_config.json there,
    which would make transformers look for a base model); the adapter alone under adapter/ if asked."""
    if save_adapter:
        peft_model.save_pretrained(output_dir / "adapter")
    peft_model.merge_and_unload().save_pretrained(output_dir)


def replay_rows(
    replay_dir: str,
    composer_map: ComposerMap,
    base_vocab: int,
    new_rows: int,
    share: float,
    seed: int,
    tasks: list[str],
):
    """Training rows of the base's dataset to mix in, of the new data's `tasks` only (the model records
    those): as many as make `share` of the mixed rows, drawn with `seed` (with replacement only if the
    base has fewer). Returns (input_ids dataset, composer indices)."""
    from datasets import load_from_disk

    path = Path(replay_dir)
    try:
        train = load_from_disk(str(path))["train"]
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise InputError(f"--replay_dataset {path}: not a dataset written by prepare_dataset.py ({err})") from err
    names = train.features["composer"].names
    if names != composer_map.names[: len(names)] or not len(train):
        raise InputError(
            f"--replay_dataset {path} has composers {names}, which are not the base's ({composer_map.names}); give "
            "the base model's own dataset"
        )
    if "task" in train.column_names:
        train = train.filter(lambda task: task in tasks, input_columns="task")
    if not len(train):
        raise InputError(f"--replay_dataset {path}: no training rows of the tasks {', '.join(tasks)}")
    # with Arrow, as training checks its own rows, not as Python lists; [:] honours the filter above
    top = pc.max(pc.list_flatten(train.with_format("arrow")[:]["input_ids"])).as_py() or 0
    if top >= base_vocab:
        raise InputError(
            f"--replay_dataset {path}: token id {top} is outside the base's vocabulary ({base_vocab}); give the base "
            "model's own dataset"
        )
    wanted = max(1, round(new_rows * share / (1 - share)))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(train), size=wanted, replace=wanted > len(train))
    picked = train.select(sorted(chosen.tolist()))
    return picked.select_columns(["input_ids"]), list(picked["composer"])


def mix_replay(data, args: FinetuneArguments, composer_map: ComposerMap, base_vocab: int, seed: int) -> None:
    """Add `replay_rows` of --replay_dataset to the training split of `data` (midilm.training.data.TrainingData)."""
    from datasets import concatenate_datasets

    rows, composers = replay_rows(
        args.replay_dataset, composer_map, base_vocab, len(data.splits["train"]), args.replay_share, seed, data.tasks
    )
    data.splits["train"] = concatenate_datasets([data.splits["train"], rows])
    data.train_composers += composers
    print(f"replay: {len(rows)} rows of {args.replay_dataset} mixed into {len(data.splits['train'])} training rows")


def lineage(
    base: BaseModel, args: FinetuneArguments, new_composers: list[str], dataset_dir: str, tokenizer_dir: str, steps: int
) -> dict:
    """What a model built on another records in config.json (and so in its card and training_config.json)."""
    record = {
        **base.record(),
        "method": args.method(),
        "new_composers": new_composers,
        "new_composer_init": args.new_composer_init,
        "dataset": str(dataset_dir),
        "tokenizer": str(tokenizer_dir),
        "steps": steps,
    }
    if args.replay_dataset:
        record["replay"] = {"dataset": args.replay_dataset, "share": args.replay_share}
    return record


def new_composers_of(config) -> list[str]:
    """The composers a model learnt after its base (none for a model trained from scratch)."""
    return list((getattr(config, BASE_KEY, None) or {}).get("new_composers", []))


def write_base_file(folder: Path, base: BaseModel, base_names: list[str], new: list[str]) -> None:
    record = {**base.record(), "base_composers": base_names, "new_composers": new, "composer_none": NONE}
    (folder / BASE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def with_base_data(dataset, base_dataset_dir: str, composer_map: ComposerMap):
    """A fine-tuning dataset with the base's dataset joined to it (every split of the two), so that every
    composer, old and new, has real pieces to be judged against. The base's composers are the first of
    `composer_map.names` with the same label indices, so its rows keep their labels under the wider ClassLabel."""
    from datasets import ClassLabel, DatasetDict, concatenate_datasets, load_from_disk

    path = Path(base_dataset_dir)
    try:
        base = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"--base_dataset_dir {path}: not a dataset written by prepare_dataset.py ({err})") from err
    splits = [s for s in dataset if s in base]
    names = base["train"].features["composer"].names if "train" in base else None
    if names is None or names != composer_map.names[: len(names)] or set(splits) != set(dataset):
        raise InputError(
            f"--base_dataset_dir {path}: needs {', '.join(dataset)} splits whose composers are the base's, the first "
            "of the model's "
            f"({', '.join(composer_map.names)}); give the dataset the base model was trained on"
        )
    label = ClassLabel(names=composer_map.names)
    joined = {}
    for split in splits:
        extra = base[split].select_columns(dataset[split].column_names).cast_column("composer", label)
        joined[split] = concatenate_datasets([dataset[split], extra])
    return DatasetDict(joined)
