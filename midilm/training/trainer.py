"""The Trainer subclass (composer-balanced sampling, WSD decay, loss per task), saving a sharded model whole,
and the last complete checkpoint to resume from."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pyarrow.compute as pc
import torch
from transformers import ProgressCallback, Trainer

from midilm.training.arguments import WSD_DECAY_SHARE
from midilm.training.collator import MidiCollator
from midilm.training.sampler import ComposerBalancedSampler


class MidiTrainer(Trainer):
    """The HF Trainer, with eval perplexity in every evaluation log, the padding it trains on, and a
    validation that shows whether the model uses the composer token.

    Beside the Trainer's `train_tokens_per_second` (every input position, padding included, since
    the start of this session; `include_num_input_tokens_seen`), each training log holds
    `train_real_tokens_per_second` (the same, real tokens only, over the same time) and
    `train_padding_share` (the share of padding positions in the batches since the previous log).
    Both are summed over all processes. The final log holds the session's padding share.

    With a `MidiCollator` as `data_collator`, validation batches come from its `for_evaluation()` twin
    (no composer dropout, no random crop): `eval_loss` is the conditional loss, the same twice for
    the same weights, and it alone picks the best checkpoint and drives early stopping. With
    `unconditional_eval`, every evaluation also scores the same rows with COMPOSER_NONE in place of
    the composer token (`eval_uncond_loss`, `eval_uncond_runtime`) and logs their difference,
    `eval_composer_information` = uncond loss - cond loss: the nats per token that knowing the
    composer saves the model on validation (above 0: it uses the token). That doubles evaluation
    time. Both losses are the Trainer's own mean (per-batch token means, averaged over rows), over the
    same batches and the same predicted positions, so their difference compares like with like. Under
    DDP the Trainer gathers both from every process.
    """

    def __init__(self, *args, unconditional_eval: bool = True, balance_composers: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._balance_composers = balance_composers  # a composer index per training row: ComposerBalancedSampler
        # [real tokens, input positions] this process fed to training steps: this session, and at the last log
        self._seen = torch.zeros(2, dtype=torch.int64, device=self.args.device)
        self._seen_at_log = torch.zeros(2, dtype=torch.int64)
        self._eval_collators = None
        if isinstance(self.data_collator, MidiCollator):
            self._eval_collators = {"cond": self.data_collator.for_evaluation()}
            if unconditional_eval:
                self._eval_collators["uncond"] = self.data_collator.for_evaluation(unconditional=True)
        self._eval_pass = "cond"
        self._eval_loaders_by_pass: dict[str, dict] = {}
        self._uncond_metrics: dict[str, dict] = {}  # metric prefix -> the unconditional pass's figures, until logged

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # warmup_stable_decay needs its decay length in steps; unless given, the last WSD_DECAY_SHARE of this run
        # (lent to the Trainer for this call only, so a later train() with another length derives its own)
        given = self.args.lr_scheduler_kwargs
        if self.args.lr_scheduler_type != "warmup_stable_decay" or "num_decay_steps" in (given or {}):
            return super().create_scheduler(num_training_steps, optimizer)
        self.args.lr_scheduler_kwargs = {
            **(given or {}),
            "num_decay_steps": max(1, round(WSD_DECAY_SHARE * num_training_steps)),
        }
        try:
            return super().create_scheduler(num_training_steps, optimizer)
        finally:
            self.args.lr_scheduler_kwargs = given

    def _get_train_sampler(self, train_dataset=None):
        if self._balance_composers is None:
            return super()._get_train_sampler(train_dataset)
        dataset = (
            self.train_dataset if train_dataset is None else train_dataset
        )  # the Trainer passes a column-pruned copy
        if len(dataset) != len(self._balance_composers):
            raise ValueError(
                f"balance_composers holds {len(self._balance_composers)} composers for {len(dataset)} training rows"
            )
        lengths = pc.list_value_length(
            dataset.with_format("arrow")[:]["input_ids"]
        ).to_pylist()  # [:] honours a select()
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return ComposerBalancedSampler(self._balance_composers, lengths, batch, self.args.seed)

    def get_eval_dataloader(self, eval_dataset=None):
        if self._eval_collators is None:
            return super().get_eval_dataloader(eval_dataset)
        # The Trainer builds eval loaders from self.data_collator and, with persistent workers, keeps one
        # per dataset name: each pass gets its own collator and its own cache of loaders.
        train_collator, self.data_collator = self.data_collator, self._eval_collators[self._eval_pass]
        self._eval_dataloaders = self._eval_loaders_by_pass.setdefault(self._eval_pass, {})
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        several = isinstance(eval_dataset if eval_dataset is not None else self.eval_dataset, dict)
        if several or self._eval_collators is None or "uncond" not in self._eval_collators:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # a dict comes back here per dataset
        prefix = f"{metric_key_prefix}_uncond"
        start = time.time()
        self._eval_pass = "uncond"
        try:
            output = self.evaluation_loop(
                self.get_eval_dataloader(eval_dataset),
                description="Evaluation with COMPOSER_NONE",
                prediction_loss_only=True,
                ignore_keys=ignore_keys,
                metric_key_prefix=prefix,
            )
        finally:
            self._eval_pass = "cond"
        for callback in self.callback_handler.callbacks:  # its bar ends at on_evaluate, which this pass does not call
            if isinstance(callback, ProgressCallback) and callback.prediction_bar is not None:
                callback.prediction_bar.close()
                callback.prediction_bar = None
        # The conditional pass logs its metrics and hands them to the callbacks (samples, early
        # stopping) once: these join that one record in log(), and so its return value.
        self._uncond_metrics[metric_key_prefix] = {
            f"{prefix}_loss": output.metrics[f"{prefix}_loss"],
            f"{prefix}_runtime": round(time.time() - start, 4),
        }
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def training_step(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        # a padding-free batch (DataCollatorWithFlattening) has no attention mask: every position is real
        real = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
        self._seen += torch.stack(
            [torch.as_tensor(real, device=self._seen.device), torch.tensor(ids.numel(), device=self._seen.device)]
        )
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict, start_time: float | None = None, *args, **kwargs) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        for prefix in [p for p in self._uncond_metrics if f"{p}_loss" in logs]:
            uncond = self._uncond_metrics.pop(prefix)
            logs.update(uncond)
            logs[f"{prefix}_composer_information"] = uncond[f"{prefix}_uncond_loss"] - logs[f"{prefix}_loss"]
        if "loss" in logs or "train_loss" in logs:
            # every process logs training at the same steps, so this reduction meets on all of them
            seen = self.accelerator.reduce(self._seen.clone(), reduction="sum").cpu()
            interval = seen - self._seen_at_log if "loss" in logs else seen
            if interval[1] > 0:
                logs["train_padding_share"] = round(1.0 - interval[0].item() / interval[1].item(), 4)
            if start_time is not None and time.time() > start_time:
                logs["train_real_tokens_per_second"] = round(seen[0].item() / (time.time() - start_time), 3)
            self._seen_at_log = seen
        super().log(logs, start_time, *args, **kwargs)


def save_full_model(trainer: Trainer) -> None:
    """trainer.save_model(), with one whole model.safetensors under FSDP too.

    configs/fsdp.yaml checkpoints with SHARDED_STATE_DICT (each process writes its shard: fast, and
    what resuming reads), and with that the Trainer's save_model writes no weights at all. Switching
    the plugin to FULL_STATE_DICT for the final save gathers the weights, as accelerate intends
    ("trains with sharded, but final save is with full"). Every process must call this.
    """
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model()


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that was saved completely.

    The Trainer writes trainer_state.json last, so a checkpoint cut off by a kill lacks it (or holds
    half of it); such a folder is skipped and the one before it is used.
    """
    candidates = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in candidates:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            print(f"skipping incomplete checkpoint {checkpoint} (killed while saving?)")
            continue
        return checkpoint
    return None
