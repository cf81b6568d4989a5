"""Train a composer-conditioned REMI language model with the HF Trainer.

    midilm train                                   # the package defaults: tiny Llama on data/ + tokenizer/
    midilm train --model_preset small --max_seq_len 2048 --bf16 true
    accelerate launch --multi_gpu --num_processes 2 -m midilm.commands.train --model_preset small
    midilm train my_config.json --output_dir runs/bach --max_steps 2000
    midilm train --init_from model_output --dataset_dir data_ft --tokenizer_dir tokenizer_ft \\
        --output_dir model_ft --max_steps 500
    midilm train --init_from model_output --dataset_dir data_ft --tokenizer_dir tokenizer_ft \\
        --output_dir model_lora --lora_r 16

In a clone, `python train.py` takes the same flags and reads the config.json beside it.
The context (--max_seq_len) is the dataset's row length (prepare_dataset.py --max_seq_len) unless given;
a shorter one is refused. Running the same command again on the same --output_dir resumes from its
newest complete checkpoint. With --init_from, training starts from a trained midilm model (its
architecture and weights; the data prepared with prepare_dataset.py --base_model), fully or with LoRA
adapters (--lora_r), which the saved folder holds merged.
Defaults come from the package (midilm.training.trainer); the `model`, `data`, `finetune` and `training` sections
of a config file override them, and any flag overrides both.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, EarlyStoppingCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback

from midilm.core.cli import parse_args, run
from midilm.core.errors import InputError
from midilm.core.modeling import (
    BASE_KEY,
    TRAINING_CONFIG_FILE,
    build_config,
    copy_tokenizer,
    generation_config,
)
from midilm.core.rows import RowLayout
from midilm.core.tokenizer import bar_start_table, infill_token_ids, load_tokenizer, section_token_ids
from midilm.sampling.guard import bounds_to_config
from midilm.training.arguments import TRAINING_DEFAULTS, DataArguments, ModelArguments
from midilm.training.callbacks import SampleLoggingCallback, evaluation_samples
from midilm.training.collator import MidiCollator
from midilm.training.data import learn_guard_bounds, load_training_data, training_context
from midilm.training.finetune import (
    FinetuneArguments,
    check_context,
    check_extends,
    lineage,
    load_base_model,
    mix_replay,
    resolve_base,
    save_merged,
    trainable_parameters,
    wrap_lora,
)
from midilm.training.hub import push_model, write_model_card
from midilm.training.trainer import MidiTrainer, last_complete_checkpoint, save_full_model


def main(argv: list[str] | None = None, config_file: Path | None = None) -> None:
    # With no GPU, use_cpu makes `accelerate launch`/torchrun run real CPU DDP (gloo), not N separate runs.
    model_args, data_args, finetune_args, training_args, _ = parse_args(
        (ModelArguments, DataArguments, FinetuneArguments, TrainingArguments),
        ("model", "data", "finetune", "training"),
        argv,
        defaults={**TRAINING_DEFAULTS, "use_cpu": not torch.cuda.is_available()},
        description=__doc__,
        config_file=config_file,
    )
    output_dir = Path(training_args.output_dir)
    # The Trainer's own pushes (at each checkpoint and in save_model) send its generic model card:
    # it never pushes here; push_model sends the finished folder with midilm's card at the end.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False

    # Load tokenizer and dataset (every check runs before a model is built)
    tokenizer, composer_map = load_training_tokenizer(data_args)
    base, new_composers = load_base(model_args, data_args, finetune_args, tokenizer, composer_map)
    data = load_data(data_args, finetune_args, training_args, tokenizer, composer_map, base)

    # Build model: random weights, or the base's with rows for the new composers
    model, described, new_ids = build_model(
        model_args, data_args, finetune_args, training_args, tokenizer, composer_map, base, new_composers
    )
    config = model.config
    bounds = configure_model(model, data, data_args, tokenizer)
    if finetune_args.lora_r:
        model = wrap_lora(model, finetune_args, new_ids)
    print(describe_run(described, model, config, bounds, data, data_args, finetune_args, training_args))

    # Train
    trainer = build_trainer(model, config, tokenizer, composer_map, data, data_args, training_args)
    train_result = train_or_resume(trainer, output_dir)

    # Save: a Hub-ready folder that AutoModelForCausalLM.from_pretrained loads without midilm
    metrics = save_model_folder(trainer, train_result, config, base, finetune_args, output_dir)
    if trainer.is_world_process_zero():
        resolved = resolved_config(model_args, data_args, finetune_args, training_args, push_to_hub, config, base)
        write_records(output_dir, Path(data_args.tokenizer_dir), trainer, config, composer_map, metrics, resolved)
    if push_to_hub and trainer.is_world_process_zero():
        push_folder(output_dir, training_args)
    end_distributed(trainer)


def load_training_tokenizer(data_args: DataArguments):
    """The tokenizer and composer map from --tokenizer_dir; a missing one is an InputError naming the flag."""
    try:
        return load_tokenizer(data_args.tokenizer_dir)
    except FileNotFoundError as err:
        raise InputError(f"--tokenizer_dir: {err}") from err


def load_base(
    model_args: ModelArguments, data_args: DataArguments, finetune_args: FinetuneArguments, tokenizer, composer_map
):
    """The --init_from base and the composers the tokenizer adds to it, checked; (None, None) without one."""
    if not finetune_args.init_from:
        return None, None
    base = resolve_base(finetune_args.init_from, "--init_from")
    new_composers = check_extends(
        base,
        tokenizer,
        composer_map,
        f"--dataset_dir {data_args.dataset_dir} (--tokenizer_dir {data_args.tokenizer_dir})",
    )
    if model_args.model_overrides:
        raise InputError("--model_overrides does not apply with --init_from: the base model's architecture is kept")
    return base, new_composers


def load_data(
    data_args: DataArguments,
    finetune_args: FinetuneArguments,
    training_args: TrainingArguments,
    tokenizer,
    composer_map,
    base,
):
    """The training data, checked against the tokenizer and the base, with the base's replay mixed in; sets
    data_args.max_seq_len to the context trained on."""
    data = load_training_data(data_args, tokenizer, composer_map)
    if "infill" in data.tasks and infill_token_ids(tokenizer) is None:
        raise InputError(
            f"--tokenizer_dir {data_args.tokenizer_dir}: made before the infill task (no GAP/FILL markers); "
            "prepare the dataset again"
        )
    data_args.max_seq_len = training_context(data_args, data)
    if base is not None:
        check_context(base, data_args.max_seq_len)
    if finetune_args.replay_dataset:
        mix_replay(data, finetune_args, composer_map, len(base.tokenizer), training_args.seed)
    return data


def build_model(
    model_args: ModelArguments,
    data_args: DataArguments,
    finetune_args: FinetuneArguments,
    training_args: TrainingArguments,
    tokenizer,
    composer_map,
    base,
    new_composers,
):
    """The model (random weights, or the base's with rows for the new composers), how to name it in the
    summary, and the new composers' ids (None without a base)."""
    if base is None:
        model = AutoModelForCausalLM.from_config(
            build_config(
                model_args.model_type,
                model_args.model_preset,
                tokenizer,
                composer_map,
                data_args.max_seq_len,
                model_args.overrides(),
            )
        )
        return model, f"{model_args.model_type} {model_args.model_preset}", None
    model, new_ids = load_base_model(
        base,
        composer_map,
        finetune_args,
        lineage(
            base,
            finetune_args,
            new_composers,
            data_args.dataset_dir,
            data_args.tokenizer_dir,
            training_args.max_steps,
        ),
    )
    described = (
        f"{model.config.model_type} from {base.source} (+{len(new_ids)} composers: "
        f"{', '.join(new_composers) or 'none'})"
    )
    return model, described, new_ids


def configure_model(model, data, data_args: DataArguments, tokenizer) -> dict:
    """Writes what the model was trained for and the musical guard's bounds into its config and its
    generation config; returns the bounds."""
    config = model.config
    # What the model was trained for: generate.py refuses an accompaniment from a continuation-only model.
    config.update({"midilm_tasks": data.tasks, "midilm_max_seq_len": data.row_len})
    # The musical guard's bounds travel in config.json, so every checkpoint and the final folder carry them.
    bounds = learn_guard_bounds(data, tokenizer, data_args.dataset_dir)
    bounds_to_config(config, bounds)
    model.generation_config = generation_config(config)
    return bounds


def describe_run(
    described: str,
    model,
    config,
    bounds: dict,
    data,
    data_args: DataArguments,
    finetune_args: FinetuneArguments,
    training_args: TrainingArguments,
) -> str:
    """The one line printed before training: the model, its size, what is trained, on what."""
    return (
        f"{described}: {model.num_parameters() / 1e6:.2f}M parameters ({trainable_parameters(model) / 1e6:.3f}M "
        f"trained, {finetune_args.method()}), "
        f"vocabulary {config.vocab_size}, context {data_args.max_seq_len}, tasks {'+'.join(data.tasks)}, "
        f"{training_args.world_size} process(es); "
        f"musical guard: at most {bounds['max_notes_per_onset']} notes per onset, {bounds['max_notes_per_bar']} per bar"
    )


def build_trainer(
    model, config, tokenizer, composer_map, data, data_args: DataArguments, training_args: TrainingArguments
) -> MidiTrainer:
    """The Trainer with midilm's collator, its sample logging and (with a patience) early stopping."""
    if data_args.padding_free and training_args.use_cache:
        raise InputError(
            "--padding_free true needs --use_cache false: with a KV cache, transformers lets packed rows attend to "
            "each other"
        )
    collator = MidiCollator(
        config.pad_token_id,
        composer_map.none_id,
        data_args.composer_dropout,
        data_args.max_seq_len,
        section_ids=section_token_ids(tokenizer),
        padding_free=data_args.padding_free,
        infill_share=data_args.infill_share if "infill" in data.tasks else 0.0,
        layout=RowLayout.for_tokenizer(tokenizer),
        starts_bar=bar_start_table(tokenizer),
    )
    trainer = MidiTrainer(
        model=model,
        args=training_args,
        train_dataset=data.splits["train"],
        eval_dataset=data.splits["validation"],
        data_collator=collator,
        unconditional_eval=data_args.unconditional_eval,
        balance_composers=data.train_composers if data_args.composer_balanced else None,
    )
    tensorboard = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TensorBoardCallback)), None)
    trainer.add_callback(
        SampleLoggingCallback(
            tokenizer,
            composer_map,
            evaluation_samples(trainer, data_args.samples_per_composer),
            data_args.sample_max_new_tokens,
            data_args.soundfont,
            writer_source=lambda: getattr(tensorboard, "tb_writer", None),
        )
    )
    if data_args.early_stopping_patience:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    return trainer


def train_or_resume(trainer: MidiTrainer, output_dir: Path):
    """Trains, from the newest complete checkpoint in output_dir when there is one."""
    checkpoint = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
    if checkpoint:
        print(f"resuming from {checkpoint}")
    return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def save_model_folder(
    trainer: MidiTrainer, train_result, config, base, finetune_args: FinetuneArguments, output_dir: Path
) -> dict:
    """Evaluates, then saves the model (merged with LoRA) ready for sampling; returns the run's metrics."""
    metrics = {**train_result.metrics, **trainer.evaluate()}
    config.use_cache = True  # the Trainer turns the KV cache off for training; sampling needs it
    if base is not None:
        config.update({BASE_KEY: {**getattr(config, BASE_KEY), "steps": trainer.state.global_step}})
    if not finetune_args.lora_r:
        save_full_model(trainer)
    elif trainer.is_world_process_zero():
        save_merged(trainer.model, output_dir, finetune_args.save_adapter)
    return metrics


def resolved_config(
    model_args: ModelArguments,
    data_args: DataArguments,
    finetune_args: FinetuneArguments,
    training_args: TrainingArguments,
    push_to_hub: bool,
    config,
    base,
) -> dict:
    """The configuration the run used, as training_config.json holds it."""
    resolved = {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "finetune": asdict(finetune_args),
        "training": {**training_args.to_dict(), "push_to_hub": push_to_hub},
    }
    if base is not None:
        resolved["base_model"] = getattr(config, BASE_KEY)
    return resolved


def write_records(
    output_dir: Path, tokenizer_dir: Path, trainer: MidiTrainer, config, composer_map, metrics: dict, resolved: dict
) -> None:
    """The files beside the weights: the tokenizer, training_config.json, all_results.json, the model card."""
    copy_tokenizer(tokenizer_dir, output_dir)
    (output_dir / TRAINING_CONFIG_FILE).write_text(json.dumps(resolved, indent=2, default=str) + "\n")
    trainer.save_metrics("all", metrics)
    write_model_card(output_dir, config, composer_map, metrics, resolved)


def push_folder(output_dir: Path, training_args: TrainingArguments) -> None:
    """Pushes the finished folder, with midilm's model card, to the Hub."""
    repo_id = push_model(
        output_dir,
        training_args.hub_model_id,
        token=training_args.hub_token,
        private=training_args.hub_private_repo,
        revision=training_args.hub_revision,
    )
    print(f"pushed {output_dir} to https://huggingface.co/{repo_id}")


def end_distributed(trainer: MidiTrainer) -> None:
    """Tears down the process group of a multi-process run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # All ranks meet first: tearing gloo down while one of its threads still frees a finished
        # collective deadlocks on the GIL. Without the destroy, a multi-process run aborts at exit.
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(main)
