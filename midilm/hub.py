"""Cards and Hub pushes. The Hub is not reachable in tests: they check the folder that would be pushed."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from midilm.errors import InputError
from midilm.modeling import BASE_KEY, TRAINING_CONFIG_FILE, context_length, model_tasks, sampling_defaults
from midilm.sampling import SamplingSettings
from midilm.tokenizer import COMPOSERS_FILE, TOKENIZER_FILE, ComposerMap

METRICS_FILE = "all_results.json"  # Trainer.save_metrics("all", ...)

DATASET_CARD = "README.md"


def write_dataset_card(data_dir: Path, report: dict, resolved: dict) -> None:
    prep, tok = resolved["prepare"], resolved["tokenizer"]
    source = prep["midi_dir"] or prep["metadata"] or "the scores bundled in the music21 package (converted to MIDI)"
    rows = "\n".join(
        f"| {r['composer']} | `{r['token']}` | {r['id']} | {r['pieces']} |" for r in report["composers"]["composers"]
    )
    splits = "\n".join(f"| {s} | {v['pieces']} | {v['chunks']} | {v['tokens']} |" for s, v in report["splits"].items())
    files = report["files"]
    card = f"""---
tags: [midi, symbolic-music, midilm, miditok]
---
# midilm dataset

REMI token sequences (miditok) of MIDI pieces, one composer token per sequence, built by
`prepare_dataset.py` of midilm. Layout of a row: `[BOS, COMPOSER_x, tokens..., EOS]`; long pieces are
cut at bar lines into chunks of at most {prep["max_seq_len"]} tokens, and only a piece's last chunk ends with EOS.
The split is by piece, from a hash of its notes (its base tokens), not of its file name: no piece has
chunks in two splits, and the same music under two names is one piece, kept once (the others are listed
as duplicates in `prepare_report.json`).

Source: {source}. Files seen {files["seen"]}, kept {files["kept"]}, skipped {files["skipped"]}.

## Composers
| composer | token | id | pieces |
|---|---|---|---|
{rows}

`COMPOSER_NONE` (id {report["composers"]["none"]["id"]}) is the unconditional token for classifier-free guidance.

## Splits
| split | pieces | chunks | tokens |
|---|---|---|---|
{splits}

## Tokenizer
REMI, vocabulary {report["vocabulary"]["base"]} base tokens, {report["vocabulary"]["with_bpe"]} with BPE
(tokens per note {report["tokens_per_note"]["before_bpe"]} → {report["tokens_per_note"]["after_bpe"]}).
Settings: `{tok}`. Augmentation of the training split: {"on" if prep["augment"] else "off"}.
Load it with `miditok.REMI(params="tokenizer/tokenizer.json")`.
"""
    (data_dir / DATASET_CARD).write_text(card)


def push_dataset(data_dir: Path, tokenizer_dir: Path, repo_id: str) -> None:
    """Push the DatasetDict, then its card and the tokenizer folder, to one dataset repo."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    load_from_disk(str(data_dir)).push_to_hub(repo_id)
    api = HfApi()
    api.upload_file(
        path_or_fileobj=str(data_dir / DATASET_CARD), path_in_repo=DATASET_CARD, repo_id=repo_id, repo_type="dataset"
    )
    api.upload_folder(folder_path=str(tokenizer_dir), path_in_repo="tokenizer", repo_id=repo_id, repo_type="dataset")


MODEL_CARD = "README.md"
# A tuned folder's card section (tune.py writes it): kept when the card is written anew.
TUNING_CARD = "tuning_card.md"
TASK_TEXT = {
    "continuation": (
        "continuation: `[BOS, COMPOSER_x, tokens..., EOS]`, music in the composer's style, from nothing "
        "or from a MIDI prompt"
    ),
    "accompaniment": (
        "accompaniment: `[BOS, COMPOSER_x, MELODY, melody bars, FULL, the full piece's bars, EOS]`, a melody harmonized"
    ),
    "infill": (
        "infill: `[BOS, COMPOSER_x, bars before, GAP, bars after, FILL, the span's bars, EOS]`, "
        "bars of a piece rewritten (spans of 1-8 bars drawn from the continuation rows while training)"
    ),
}


def model_files(model_dir: Path) -> list[str]:
    """The files of a model folder that make its Hub repository: the card, what
    `AutoModelForCausalLM.from_pretrained` reads, the miditok tokenizer (`tokenizer.json`, the name
    `miditok.REMI.from_pretrained` looks for), the composer map and the resolved training configuration.
    Checkpoints, TensorBoard runs and logged samples stay local."""
    model_dir = Path(model_dir)
    weights = sorted(p.name for p in model_dir.glob("model*.safetensors")) + sorted(
        p.name for p in model_dir.glob("model.safetensors.index.json")
    )
    named = [
        MODEL_CARD,
        "config.json",
        "generation_config.json",
        TOKENIZER_FILE,
        COMPOSERS_FILE,
        TRAINING_CONFIG_FILE,
        METRICS_FILE,
    ]
    return sorted([n for n in named if (model_dir / n).is_file()] + weights)


def push_model(
    model_dir: str | Path,
    repo_id: str | None = None,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
) -> str:
    """Push a trained model folder to a Hub model repository, with midilm's card (rewritten with the
    repository's id in its examples); returns the repository id. `repo_id` defaults to the folder's name
    under the token's namespace, as the Trainer does."""
    from huggingface_hub import HfApi

    model_dir = Path(model_dir)
    files = model_files(model_dir)
    missing = [n for n in ("config.json", TOKENIZER_FILE, COMPOSERS_FILE, TRAINING_CONFIG_FILE) if n not in files]
    if missing or not any(n.endswith(".safetensors") for n in files):
        raise InputError(
            f"--output_dir {model_dir}: not a complete midilm model folder (missing "
            f"{', '.join(missing) or 'the weights'}); train it first"
        )
    api = HfApi(token=token)
    repo = api.create_repo(repo_id or model_dir.absolute().name, private=private, exist_ok=True, repo_type="model")
    rewrite_model_card(model_dir, repo_id=repo.repo_id)
    api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(model_dir),
        allow_patterns=files,
        revision=revision,
        commit_message="midilm model: weights, tokenizer, card",
    )
    return repo.repo_id


def rewrite_model_card(model_dir: str | Path, repo_id: str | None = None) -> None:
    """The card of a finished model folder written anew from what the folder holds (its config, metrics
    and training configuration): after its guidance default changed, or to name the Hub repository."""
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    metrics_path = model_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    resolved = json.loads((model_dir / TRAINING_CONFIG_FILE).read_text())
    write_model_card(model_dir, config, ComposerMap.from_config(config), metrics, resolved, repo_id=repo_id)
    if (model_dir / TUNING_CARD).is_file():
        (model_dir / MODEL_CARD).write_text(
            (model_dir / MODEL_CARD).read_text() + (model_dir / TUNING_CARD).read_text()
        )


def write_model_card(
    model_dir: Path, config, composer_map, metrics: dict, resolved: dict, repo_id: str | None = None
) -> None:
    """README.md of a model folder: what it was trained on and for, how well, and how to sample from it
    (`repo_id`: the Hub repository its examples load from; else the folder)."""
    model_dir = Path(model_dir)
    card = (
        _card_data(config, composer_map, resolved)
        + _card_lineage(config)
        + _card_metrics(metrics, resolved)
        + _card_generate(model_dir, config, composer_map, repo_id)
    )
    (model_dir / MODEL_CARD).write_text(card)


def _card_data(config, composer_map, resolved: dict) -> str:
    """The card's header, tasks and data sections."""
    data_dir = Path(resolved["data"]["dataset_dir"])
    report_path, prepare_path = data_dir / "prepare_report.json", data_dir / "prepare_config.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    prepare = json.loads(prepare_path.read_text()).get("prepare", {}) if prepare_path.is_file() else {}
    composers = "\n".join(
        f"| {r['composer']} | `{r['token']}` | {r['id']} | {r['pieces']} |"
        for r in (report or {}).get("composers", {}).get("composers", [])
    ) or "\n".join(f"| {n} | | {i} | |" for n, i in zip(composer_map.names, composer_map.token_ids))
    splits = ""
    if report:
        splits = "\n".join(
            f"| {s} | {v['pieces']} | {v['chunks']} | {v['tokens']} |" for s, v in report["splits"].items()
        )
        splits = f"\n| split | pieces | chunks | tokens |\n|---|---|---|---|\n{splits}\n"
    if prepare.get("midi_dir") or prepare.get("metadata"):
        source = f"the MIDI files of `{prepare.get('midi_dir') or prepare.get('metadata')}`"
    elif prepare:
        source = (
            f"the scores bundled in the music21 package ({prepare.get('composers') or 'all composers'}), "
            "converted to MIDI"
        )
    else:
        source = "not recorded"
    vocabulary = f"{config.vocab_size} tokens (miditok REMI{' + BPE' if prepare.get('vocab_size') else ''})"
    task_lines = "\n".join(f"- {TASK_TEXT.get(t, t)}" for t in model_tasks(config))
    model, base = resolved["model"], getattr(config, BASE_KEY, None)
    title = (
        f"{config.model_type}, fine-tuned from `{base['model']}`"
        if base
        else f"{model['model_type']} `{model['model_preset']}`"
    )
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [midi, symbolic-music, music-generation, midilm, miditok]
---
# midilm model: {title}

A composer-conditioned REMI language model trained with midilm on MIDI files.
`COMPOSER_NONE` is the unconditional token used for classifier-free guidance (composer dropout
{resolved["data"]["composer_dropout"]} in training).

## Tasks
Trained on (config.json `midilm_tasks`):
{task_lines}

## Data
Dataset: `{data_dir}`, built from {source}. Vocabulary {vocabulary}, context {context_length(config)} tokens.

| composer | token | id | pieces |
|---|---|---|---|
{composers}
{splits}
"""


def _card_lineage(config) -> str:
    """What a model built on another was built on (config.json's midilm_base_model); nothing for one trained
    from scratch."""
    base = getattr(config, BASE_KEY, None)
    if not base:
        return ""
    replay = base.get("replay")
    lines = [
        f"| base model | `{base['model']}` (revision `{base['revision']}`) |",
        f"| method | {base['method']} |",
        (
            f"| new composers | {', '.join(base['new_composers']) or 'none'} (embedding rows initialised from "
            f"{'COMPOSER_NONE' if base['new_composer_init'] == 'none' else 'the mean of the known composers'}) |"
        ),
        f"| data | `{base['dataset']}` (tokenizer `{base['tokenizer']}`, the base's extended) |",
        f"| steps | {base['steps']} |",
    ] + (
        [f"| replay of the base's data | `{replay['dataset']}`, {replay['share']:.0%} of the rows |"] if replay else []
    )
    return (
        "## Built on\nFine-tuned from another midilm model (config.json `midilm_base_model`):\n\n| | |\n|---|---|\n"
        + "\n".join(lines)
        + "\n\n"
    )


def _card_metrics(metrics: dict, resolved: dict) -> str:
    eval_loss = metrics.get("eval_loss")
    uncond_loss, information = metrics.get("eval_uncond_loss"), metrics.get("eval_composer_information")
    conditioning = ""
    if uncond_loss is not None and information is not None:
        conditioning = (
            "| eval loss with `COMPOSER_NONE` in place of the composer (unconditional, per token) | "
            f"{uncond_loss:.4f} |\n"
            "| composer information (nats per token: unconditional - conditional loss; above 0, the model uses the "
            f"composer token) | {information:.4f} |\n"
        )
    return f"""## Metrics
| metric | value |
|---|---|
| eval loss (conditional, per token) | {eval_loss if eval_loss is None else f"{eval_loss:.4f}"} |
{conditioning}| eval perplexity | {"" if eval_loss is None else f"{math.exp(min(eval_loss, 50)):.2f}"} |
| training steps | {metrics.get("train_steps", resolved["training"].get("max_steps"))} |

Validation batches are scored without composer dropout. Per-token loss is not comparable across
BPE vocabularies; see midilm's evaluation report for NLL per note.

"""


def _card_generate(model_dir: Path, config, composer_map, repo_id: str | None) -> str:
    """How to sample: with midilm (guided, grammar) and with plain transformers."""
    first = composer_map.names[0]
    first_arg = shlex.quote(first)  # `Bach, Johann Sebastian` must reach --composer as one shell word
    guidance = SamplingSettings().resolve(sampling_defaults(config)).guidance_scale
    where = repo_id or model_dir.name
    folder = f'snapshot_download("{repo_id}")' if repo_id else f'"{model_dir.name}"'
    fetch = "from huggingface_hub import snapshot_download\n" if repo_id else ""
    model_arg = "MODEL_DIR" if repo_id else model_dir.name
    sample = f"python generate.py --model_dir {model_arg} --composer {first_arg} --num_samples 4"
    local_copy = (
        f', and `MODEL_DIR` a local copy of this repository (`huggingface_hub.snapshot_download("{repo_id}")` '
        "makes one)"
        if repo_id
        else ""
    )
    accompany = (
        f"python generate.py --model_dir {model_arg} --melody_midi melody.mid --composer {first_arg}"
        "  # a melody harmonized\n"
        if "accompaniment" in model_tasks(config)
        else ""
    )
    rewrite = (
        f"python generate.py --model_dir {model_arg} --infill_midi piece.mid "
        f"--bars 9-12 --composer {first_arg}  # bars 9-12 rewritten, every other note kept\n"
        if "infill" in model_tasks(config)
        else ""
    )
    return f"""## Generate
Guided samples come from midilm: its logits processors add classifier-free guidance (the composer's
row against a `COMPOSER_NONE` row, scale {guidance:g} by default: `midilm_guidance_scale` in config.json)
and a REMI grammar that masks every token that would make the music invalid, and it decodes to MIDI.
With midilm installed{local_copy}:
```bash
{sample}   # --guidance_scale {guidance:g} by default
{accompany}{rewrite}```
```python
{fetch}from transformers import AutoModelForCausalLM
from midilm.generation import prepare_generation

folder = {folder}
model = AutoModelForCausalLM.from_pretrained(folder)
plan = prepare_generation(folder, composer="{first}", num_samples=2, seed=0)
output = model.generate(plan.input_ids, attention_mask=plan.attention_mask,
                        generation_config=plan.generation_config, logits_processor=plan.logits_processor)
for i, score in enumerate(plan.decode(output)):
    score.dump_midi("{first}_" + str(i) + ".mid")
```

Plain `transformers` needs no midilm. `model.generate()` then gives a plain sample, with no guidance and
no grammar: generation_config.json holds only sampling settings (temperature, top-k, top-p,
repetition penalty). It has no `guidance_scale` on purpose: transformers' own guidance would use the
composer token itself as the unconditional prompt. Without the grammar processor a sample may hold
tokens that break REMI's grammar; miditok's decoder skips what it cannot read.
```python
import miditok, torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("{where}")
tokenizer = miditok.REMI.from_pretrained("{where}")  # tokenizer.json
prompt = torch.tensor([[model.config.bos_token_id, model.config.composer_to_id["{first}"]]])
ids = model.generate(prompt)[0].tolist()  # up to generation_config.json's max_new_tokens
tokenizer.decode([i for i in ids if i not in tokenizer.special_tokens_ids]).dump_midi("{first}.mid")
```
The composer map is `composer_to_id` in config.json and `composers.json`; the resolved training
configuration is `training_config.json`.
"""
