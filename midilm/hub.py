"""Cards and Hub pushes. The Hub is not reachable in tests: they check the folder that would be pushed."""

from __future__ import annotations

import json
import math
from pathlib import Path

DATASET_CARD = "README.md"


def write_dataset_card(data_dir: Path, report: dict, resolved: dict) -> None:
    prep, tok = resolved["prepare"], resolved["tokenizer"]
    source = prep["midi_dir"] or prep["metadata"] or "the scores bundled in the music21 package (converted to MIDI)"
    rows = "\n".join(
        f"| {r['composer']} | `{r['token']}` | {r['id']} | {r['pieces']} |" for r in report["composers"]["composers"]
    )
    splits = "\n".join(f"| {s} | {v['pieces']} | {v['chunks']} | {v['tokens']} |" for s, v in report["splits"].items())
    card = f"""---
tags: [midi, symbolic-music, midilm, miditok]
---
# midilm dataset

REMI token sequences (miditok) of MIDI pieces, one composer token per sequence, built by
`prepare_dataset.py` of midilm. Layout of a row: `[BOS, COMPOSER_x, tokens..., EOS]`; long pieces are
cut at bar lines into chunks of at most {prep['max_seq_len']} tokens, and only a piece's last chunk ends with EOS.
The split is by piece (hash of the relative path): no piece has chunks in two splits.

Source: {source}. Files seen {report['files']['seen']}, kept {report['files']['kept']}, skipped {report['files']['skipped']}.

## Composers
| composer | token | id | pieces |
|---|---|---|---|
{rows}

`COMPOSER_NONE` (id {report['composers']['none']['id']}) is the unconditional token for classifier-free guidance.

## Splits
| split | pieces | chunks | tokens |
|---|---|---|---|
{splits}

## Tokenizer
REMI, vocabulary {report['vocabulary']['base']} base tokens, {report['vocabulary']['with_bpe']} with BPE
(tokens per note {report['tokens_per_note']['before_bpe']} → {report['tokens_per_note']['after_bpe']}).
Settings: `{tok}`. Augmentation of the training split: {'on' if prep['augment'] else 'off'}.
Load it with `miditok.REMI(params="tokenizer/tokenizer.json")`.
"""
    (data_dir / DATASET_CARD).write_text(card)


def push_dataset(data_dir: Path, tokenizer_dir: Path, repo_id: str) -> None:
    """Push the DatasetDict, then its card and the tokenizer folder, to one dataset repo."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    load_from_disk(str(data_dir)).push_to_hub(repo_id)
    api = HfApi()
    api.upload_file(path_or_fileobj=str(data_dir / DATASET_CARD), path_in_repo=DATASET_CARD, repo_id=repo_id, repo_type="dataset")
    api.upload_folder(folder_path=str(tokenizer_dir), path_in_repo="tokenizer", repo_id=repo_id, repo_type="dataset")


def write_model_card(model_dir: Path, config, composer_map, metrics: dict, resolved: dict) -> None:
    """README.md of a model folder: what it was trained on, how well, and how to sample from it."""
    data_dir = Path(resolved["data"]["dataset_dir"])
    report_path = data_dir / "prepare_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    composers = "\n".join(
        f"| {r['composer']} | `{r['token']}` | {r['id']} | {r['pieces']} |" for r in (report or {}).get("composers", {}).get("composers", [])
    ) or "\n".join(f"| {n} | | {i} | |" for n, i in zip(composer_map.names, composer_map.token_ids))
    splits = ""
    if report:
        splits = "\n".join(f"| {s} | {v['pieces']} | {v['chunks']} | {v['tokens']} |" for s, v in report["splits"].items())
        splits = f"\n| split | pieces | chunks | tokens |\n|---|---|---|---|\n{splits}\n"
    eval_loss = metrics.get("eval_loss")
    first = composer_map.names[0]
    model = resolved["model"]
    card = f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [midi, symbolic-music, music-generation, midilm, miditok]
---
# midilm model: {model['model_type']} `{model['model_preset']}`

A composer-conditioned REMI language model trained with midilm on MIDI files.
Sequence layout: `[BOS, COMPOSER_x, REMI tokens..., EOS]`; `COMPOSER_NONE` is the unconditional
token used for classifier-free guidance (composer dropout {resolved['data']['composer_dropout']} in training).

## Data
Dataset: `{data_dir}` (vocabulary {config.vocab_size} tokens, context {resolved['data']['max_seq_len']}).

| composer | token | id | pieces |
|---|---|---|---|
{composers}
{splits}
## Metrics
| metric | value |
|---|---|
| eval loss (per token) | {eval_loss if eval_loss is None else f'{eval_loss:.4f}'} |
| eval perplexity | {'' if eval_loss is None else f'{math.exp(min(eval_loss, 50)):.2f}'} |
| training steps | {metrics.get('train_steps', resolved['training'].get('max_steps'))} |

Per-token loss is not comparable across BPE vocabularies; see midilm's evaluation report for NLL per note.

## Generate
```bash
python generate.py --model_dir . --composer {first} --num_samples 4 --guidance_scale 3.0
```
Plain transformers loads it (`AutoModelForCausalLM.from_pretrained`); midilm adds the CFG and REMI
grammar logits processors and MIDI decoding. The tokenizer (`tokenizer.json`, miditok REMI) and the
composer map (`composers.json`, and `composer_to_id` in config.json) are in this folder.
"""
    (Path(model_dir) / "README.md").write_text(card)
