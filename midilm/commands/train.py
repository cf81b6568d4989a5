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
Defaults come from the package (midilm.training); the `model`, `data`, `finetune` and `training` sections
of a config file override them, and any flag overrides both.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, EarlyStoppingCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback

from midilm.cli import parse_args, run
from midilm.errors import InputError
from midilm.finetune import (
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
from midilm.guard import bounds_to_config
from midilm.hub import push_model, write_model_card
from midilm.modeling import (
    BASE_KEY,
    TRAINING_CONFIG_FILE,
    build_config,
    copy_tokenizer,
    generation_config,
)
from midilm.rows import RowLayout
from midilm.tokenizer import bar_start_table, infill_token_ids, load_tokenizer, section_token_ids
from midilm.training import (
    TRAINING_DEFAULTS,
    DataArguments,
    MidiCollator,
    MidiTrainer,
    ModelArguments,
    SampleLoggingCallback,
    evaluation_samples,
    last_complete_checkpoint,
    learn_guard_bounds,
    load_training_data,
    save_full_model,
    training_context,
)


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
    try:
        tokenizer, composer_map = load_tokenizer(data_args.tokenizer_dir)
    except FileNotFoundError as err:
        raise InputError(f"--tokenizer_dir: {err}") from err
    base = resolve_base(finetune_args.init_from, "--init_from") if finetune_args.init_from else None
    if base is not None:
        new_composers = check_extends(
            base,
            tokenizer,
            composer_map,
            f"--dataset_dir {data_args.dataset_dir} (--tokenizer_dir {data_args.tokenizer_dir})",
        )
        if model_args.model_overrides:
            raise InputError("--model_overrides does not apply with --init_from: the base model's architecture is kept")
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

    # Build model: random weights, or the base's with rows for the new composers
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
        described = f"{model_args.model_type} {model_args.model_preset}"
    else:
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
    config = model.config
    # What the model was trained for: generate.py refuses an accompaniment from a continuation-only model.
    config.update({"midilm_tasks": data.tasks, "midilm_max_seq_len": data.row_len})
    # The musical guard's bounds travel in config.json, so every checkpoint and the final folder carry them.
    bounds = learn_guard_bounds(data, tokenizer, data_args.dataset_dir)
    bounds_to_config(config, bounds)
    model.generation_config = generation_config(config)
    if finetune_args.lora_r:
        model = wrap_lora(model, finetune_args, new_ids)
    print(
        f"{described}: {model.num_parameters() / 1e6:.2f}M parameters ({trainable_parameters(model) / 1e6:.3f}M "
        f"trained, {finetune_args.method()}), "
        f"vocabulary {config.vocab_size}, context {data_args.max_seq_len}, tasks {'+'.join(data.tasks)}, "
        f"{training_args.world_size} process(es); "
        f"musical guard: at most {bounds['max_notes_per_onset']} notes per onset, {bounds['max_notes_per_bar']} per bar"
    )

    # Train
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
    checkpoint = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
    if checkpoint:
        print(f"resuming from {checkpoint}")
    train_result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # Save: a Hub-ready folder that AutoModelForCausalLM.from_pretrained loads without midilm
    metrics = {**train_result.metrics, **trainer.evaluate()}
    config.use_cache = True  # the Trainer turns the KV cache off for training; sampling needs it
    if base is not None:
        config.update({BASE_KEY: {**getattr(config, BASE_KEY), "steps": trainer.state.global_step}})
    if not finetune_args.lora_r:
        save_full_model(trainer)
    elif trainer.is_world_process_zero():
        save_merged(trainer.model, output_dir, finetune_args.save_adapter)
    if trainer.is_world_process_zero():
        copy_tokenizer(Path(data_args.tokenizer_dir), output_dir)
        resolved = {
            "model": asdict(model_args),
            "data": asdict(data_args),
            "finetune": asdict(finetune_args),
            "training": {**training_args.to_dict(), "push_to_hub": push_to_hub},
        }
        if base is not None:
            resolved["base_model"] = getattr(config, BASE_KEY)
        (output_dir / TRAINING_CONFIG_FILE).write_text(json.dumps(resolved, indent=2, default=str) + "\n")
        trainer.save_metrics("all", metrics)
        write_model_card(output_dir, config, composer_map, metrics, resolved)
    if push_to_hub and trainer.is_world_process_zero():
        repo_id = push_model(
            output_dir,
            training_args.hub_model_id,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            revision=training_args.hub_revision,
        )
        print(f"pushed {output_dir} to https://huggingface.co/{repo_id}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # All ranks meet first: tearing gloo down while one of its threads still frees a finished
        # collective deadlocks on the GIL. Without the destroy, a multi-process run aborts at exit.
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(main)
