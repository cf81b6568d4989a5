"""TRL's DPOTrainer on midilm's token-id rows.

midilm has no text tokenizer: a sample is token ids. TRL 1.x tokenizes `prompt`/`chosen`/`rejected` text in
`DPOTrainer._prepare_dataset`; its collator (`DataCollatorForPreference`) reads `prompt_ids`, `chosen_ids`
and `rejected_ids`. So the rows are built here already as ids (the prompt is the row header `[BOS,
COMPOSER]`, midilm.core.rows) and `TokenIdDPOTrainer` skips the text step. DPOTrainer still wants a
`processing_class` for its pad token: `id_tokenizer` is a word-level fast tokenizer over the model's
vocabulary whose PAD/BOS/EOS are the model's own.
"""

from __future__ import annotations

from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer

from midilm.core.rows import body, header


def id_tokenizer(config) -> PreTrainedTokenizerFast:
    """A tokenizer whose tokens are the model's ids (`<17>`), with the model's PAD, BOS and EOS."""
    special = {config.pad_token_id: "<pad>", config.bos_token_id: "<bos>", config.eos_token_id: "<eos>"}
    vocab = {special.get(i, f"<{i}>"): i for i in range(config.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def preference_rows(samples: list[dict], pairs: list[dict]) -> Dataset:
    """One row per pair: the shared header as the prompt, each sample's tokens after it (EOS included when it ended)."""
    rows = []
    for pair in pairs:
        chosen, rejected = samples[pair["chosen"]]["ids"], samples[pair["rejected"]]["ids"]
        assert list(header(chosen)) == list(header(rejected)), "a pair shares its prompt"
        rows.append(
            {"prompt_ids": list(header(chosen)), "chosen_ids": list(body(chosen)), "rejected_ids": list(body(rejected))}
        )
    return Dataset.from_list(rows)


class TokenIdDPOTrainer(DPOTrainer):
    """DPOTrainer over rows that already hold `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def run_dpo(policy, reference, config, rows: Dataset, args: DPOConfig, callbacks=None) -> dict:
    """Train `policy` in place on the pairs against the frozen `reference`; returns the last logged metrics
    (rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies, loss) averaged over the round."""
    trainer = TokenIdDPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=rows,
        processing_class=id_tokenizer(config),
        callbacks=callbacks,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    summary = {k: sum(e[k] for e in logs if k in e) / max(1, sum(k in e for e in logs)) for k in keys}
    summary["steps"] = trainer.state.global_step
    return summary
