"""train.py: a real tiny run, TensorBoard, resume after SIGKILL, the Hub-ready folder, bad input, the
context and tasks taken from the dataset, padding figures, deterministic conditional and unconditional
validation (composer information), the guard's bounds in the model folder, DDP, FSDP's CPU fallback,
two nodes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_refused, load_script, train_until_killed
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from midilm.training.arguments import TRAINING_DEFAULTS
from midilm.training.collator import MidiCollator
from midilm.training.data import dataset_tasks_and_row_len
from midilm.training.sampler import ComposerBalancedSampler
from midilm.training.trainer import MidiTrainer, last_complete_checkpoint

# No --max_seq_len: the context comes from the dataset (prepared with --max_seq_len 256).
TINY = [
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "4",
    "--learning_rate",
    "3e-3",
    "--warmup_steps",
    "0",
    "--logging_steps",
    "5",
    "--dataloader_num_workers",
    "0",
]


# The launchers of this interpreter, whether or not its bin/ folder is on PATH (`make test` does not put it there).
ACCELERATE_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def train_args(prepared, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_dir",
        str(prepared["data"]),
        "--tokenizer_dir",
        str(prepared["tokenizer"]),
        "--output_dir",
        str(output_dir),
        *TINY,
        *extra,
    ]


def run_train(
    args: list[str], launcher: list[str] | None = None, target: list[str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """train.py (or `target`: e.g. the packaged trainer, `-m midilm.commands.train`) under `launcher`."""
    command = (launcher or [sys.executable]) + (target or [str(REPO / "train.py")]) + args
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "model_output"
    result = run_train(
        train_args(
            prepared,
            out,
            "--max_steps",
            "60",
            "--eval_steps",
            "30",
            "--save_steps",
            "30",
            "--samples_per_composer",
            "1",
            "--sample_max_new_tokens",
            "48",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_loss_falls(trained):
    state = json.loads((trained / "checkpoint-60" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0]  # first log is at step 5, already below ln(vocab)


def test_tensorboard_holds_scalars_piano_rolls_and_audio(trained):
    runs = list((trained / "runs").glob("*/events.out.tfevents.*"))
    assert runs
    scalars, images, audio = set(), set(), set()
    for event_file in runs:
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0, "audio": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars |= set(tags["scalars"])
        images |= set(tags["images"])
        audio |= set(tags["audio"])
    assert {
        "train/loss",
        "eval/loss",
        "eval/perplexity",
        "train/learning_rate",
        "train/train_tokens_per_second",
        "train/train_real_tokens_per_second",
        "train/train_padding_share",
    } <= scalars
    assert {"samples/alpha_0/piano_roll", "samples/beta_0/piano_roll", "samples/OTHER_0/piano_roll"} <= images
    assert "samples/alpha_0/audio" in audio
    assert (trained / "samples" / "step-30" / "alpha_0.mid").is_file()


def test_output_is_hub_ready_and_loads_without_midilm(trained):
    for name in (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "composers.json",
        "training_config.json",
        "README.md",
    ):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert set(config["composer_to_id"]) == {"alpha", "beta", "OTHER"} and "composer_none_id" in config
    # midilm's guidance default sits where plain transformers never reads it (generate() would run its own CFG)
    assert "guidance_scale" not in json.loads((trained / "generation_config.json").read_text())
    assert config["midilm_guidance_scale"] == 3.0
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM; "
        f"m = AutoModelForCausalLM.from_pretrained({str(trained)!r}); "
        "out = m(torch.tensor([[m.config.bos_token_id, m.config.composer_to_id['alpha']]])); "
        "assert 'midilm' not in sys.modules; print(out.logits.shape[-1])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) == config["vocab_size"]
    assert "## Generate" in (trained / "README.md").read_text()


def test_composer_information_is_logged_and_on_the_card(trained):
    """Every evaluation logs the conditional and unconditional validation losses in one record, and
    their difference; the final ones reach all_results.json, TensorBoard and the model card."""
    state = json.loads((trained / "checkpoint-60" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_loss" in e]
    summary = json.loads((trained / "all_results.json").read_text())
    assert [e["step"] for e in evals] == [30, 60]
    for record in [*evals, summary]:
        assert record["eval_uncond_loss"] > 0 and record["eval_uncond_runtime"] > 0
        assert record["eval_composer_information"] == pytest.approx(
            record["eval_uncond_loss"] - record["eval_loss"], abs=1e-12
        )
        assert record["eval_uncond_loss"] != record["eval_loss"]
    assert not any("eval_uncond_loss" in e and "eval_loss" not in e for e in state["log_history"]), (
        "one record per evaluation"
    )
    assert state["best_metric"] == min(e["eval_loss"] for e in evals), "the conditional loss picks the best checkpoint"
    scalars = set()
    for event_file in (trained / "runs").glob("*/events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
    assert {"eval/uncond_loss", "eval/composer_information"} <= scalars
    card = (trained / "README.md").read_text()
    assert f"| {summary['eval_uncond_loss']:.4f} |" in card
    assert (
        "| composer information (nats per token" in card and f"| {summary['eval_composer_information']:.4f} |" in card
    )


def test_model_carries_the_guard_bounds(trained, prepared):
    from datasets import load_from_disk

    from midilm.core.tokenizer import load_tokenizer
    from midilm.sampling.guard import load_bounds, onset_counts

    bounds = load_bounds(trained)
    assert (
        bounds is not None
        and bounds == json.loads((trained / "checkpoint-30" / "config.json").read_text())["midilm_guard"]
    )
    assert 1 <= bounds["max_notes_per_onset"] <= bounds["observed_max_notes_per_onset"]
    assert 1 <= bounds["max_notes_per_bar"] <= bounds["observed_max_notes_per_bar"]
    # the observed maxima are those of the original training rows, read here one by one
    tokenizer, _ = load_tokenizer(prepared["tokenizer"])
    train = load_from_disk(str(prepared["data"]))["train"]
    originals = [ids for ids, aug in zip(train["input_ids"], train["augmentation"]) if aug == ""]
    counts = [onset_counts(tokenizer, ids) for ids in originals]
    assert bounds["observed_max_notes_per_onset"] == max(c[0] for c in counts)
    assert bounds["observed_max_notes_per_bar"] == max(c[1] for c in counts)


def test_evaluation_is_deterministic_and_conditional(prepared, tmp_path):
    """Eval batches keep every composer token (and the unconditional pass replaces every one), so two
    evaluations agree and each equals the loss of its batch computed by hand, even with a training
    dropout of 0.5."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, TrainingArguments

    from midilm.core.modeling import build_config
    from midilm.core.tokenizer import load_tokenizer
    from midilm.training.trainer import MidiTrainer

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    rows = (
        load_from_disk(str(prepared["data"]))["train"].select_columns(["input_ids"]).select(range(8))
    )  # any rows serve as validation
    torch.manual_seed(0)
    config = build_config("llama", "tiny", tokenizer, composer_map, 256)
    model = AutoModelForCausalLM.from_config(config)
    collator = MidiCollator(config.pad_token_id, composer_map.none_id, 0.5, 256)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=len(rows), report_to=[], use_cpu=True)
    trainer = MidiTrainer(model=model, args=args, eval_dataset=rows, data_collator=collator)
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first["eval_loss"] == second["eval_loss"] and first["eval_uncond_loss"] == second["eval_uncond_loss"]

    batch = MidiCollator(config.pad_token_id, composer_map.none_id, 0.0, 256)(rows.to_list())
    with torch.no_grad():
        conditional = model(**batch).loss.item()
        batch["input_ids"][:, 1] = composer_map.none_id
        unconditional = model(**batch).loss.item()
    assert first["eval_loss"] == pytest.approx(conditional, rel=1e-5)
    assert first["eval_uncond_loss"] == pytest.approx(unconditional, rel=1e-5)
    assert abs(conditional - unconditional) > 1e-4, "the test could not tell the two passes apart"
    assert (
        first["eval_composer_information"]
        == second["eval_composer_information"]
        == first["eval_uncond_loss"] - first["eval_loss"]
    )
    assert (
        "eval_uncond_loss"
        not in MidiTrainer(
            model=model, args=args, eval_dataset=rows, data_collator=collator, unconditional_eval=False
        ).evaluate()
    )


def test_context_and_tasks_come_from_the_dataset(trained, prepared):
    prepared_len = json.loads((prepared["data"] / "prepare_config.json").read_text())["prepare"]["max_seq_len"]
    config = json.loads((trained / "config.json").read_text())
    assert config["max_position_embeddings"] == prepared_len
    assert config["midilm_max_seq_len"] == prepared_len
    assert config["midilm_tasks"] == ["continuation"]
    assert json.loads((trained / "training_config.json").read_text())["data"]["max_seq_len"] == prepared_len


def test_tasks_read_from_the_task_column_else_the_report(tmp_path):
    from datasets import Dataset

    (tmp_path / "prepare_config.json").write_text(json.dumps({"prepare": {"max_seq_len": 384}}))
    both = Dataset.from_dict({"input_ids": [[1, 5], [1, 5]], "task": ["accompaniment", "continuation"]})
    assert dataset_tasks_and_row_len(tmp_path, both) == (["continuation", "accompaniment"], 384)
    (tmp_path / "prepare_config.json").unlink()
    (tmp_path / "prepare_report.json").write_text(json.dumps({"tasks": ["accompaniment"]}))
    assert dataset_tasks_and_row_len(tmp_path, Dataset.from_dict({"input_ids": [[1, 5]]})) == (["accompaniment"], None)


def test_context_shorter_than_the_rows_is_refused(prepared, tmp_path, monkeypatch, capsys):
    from datasets import load_from_disk

    longest = max(len(ids) for ids in load_from_disk(str(prepared["data"]))["train"]["input_ids"])
    script = load_script("train.py")
    argv = train_args(prepared, tmp_path / "out", "--max_steps", "2", "--max_seq_len", str(longest - 1))
    assert_refused(
        script,
        monkeypatch,
        capsys,
        tmp_path,
        argv,
        f"--max_seq_len {longest - 1} is shorter than the rows of --dataset_dir",
    )


def test_padding_figures_are_logged(trained):
    state = json.loads((trained / "checkpoint-60" / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "loss" in e]
    assert steps and all(0.0 <= e["train_padding_share"] < 1.0 for e in steps)
    assert all(0 < e["train_real_tokens_per_second"] <= e["train_tokens_per_second"] for e in steps)
    # Over the whole run, real / all tokens per second is one minus the run's padding share.
    last, summary = steps[-1], json.loads((trained / "all_results.json").read_text())
    assert last["step"] == 60
    assert last["train_real_tokens_per_second"] / last["train_tokens_per_second"] == pytest.approx(
        1 - summary["train_padding_share"], abs=0.01
    )


def test_section_markers_survive_the_crop(prepared):
    from midilm.core.tokenizer import load_tokenizer, section_token_ids

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    melody_id, full_id = section_token_ids(tokenizer)
    bos, eos, composer = tokenizer["BOS_None"], tokenizer["EOS_None"], composer_map.token_ids[0]
    melody, full = list(range(100, 110)), list(range(200, 240))
    accompaniment = [bos, composer, melody_id, *melody, full_id, *full, eos]
    continuation = [bos, composer, *range(300, 360), eos]
    collator = MidiCollator(
        0, composer_map.none_id, 0.0, 24, torch.Generator().manual_seed(0), section_ids=(melody_id, full_id)
    )
    batch = collator([{"input_ids": accompaniment}, {"input_ids": continuation}] * 50)
    rows = batch["input_ids"].tolist()
    assert all(row == accompaniment[:24] for row in rows[0::2]), (
        "an accompaniment row keeps its markers and its first bars"
    )
    starts = {row[2] for row in rows[1::2]}
    assert all(row[:2] == [bos, composer] for row in rows[1::2]) and len(starts) > 10, (
        "continuation rows are still cropped at random"
    )
    with pytest.raises(ValueError, match="melody section alone is longer than the context"):
        MidiCollator(0, composer_map.none_id, 0.0, 12, section_ids=(melody_id, full_id))([{"input_ids": accompaniment}])


def test_padding_free_batches_give_the_padded_loss(prepared):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    from midilm.core.modeling import build_config
    from midilm.core.tokenizer import load_tokenizer

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    rows = load_from_disk(str(prepared["data"]))["train"].select(range(6)).to_list()
    for model_type in ("llama", "gpt2"):
        torch.manual_seed(0)
        config = build_config(model_type, "tiny", tokenizer, composer_map, 256)
        model = AutoModelForCausalLM.from_config(config).eval()
        padded = MidiCollator(config.pad_token_id, composer_map.none_id, 0.5, 256, torch.Generator().manual_seed(1))(
            rows
        )
        packed = MidiCollator(
            config.pad_token_id, composer_map.none_id, 0.5, 256, torch.Generator().manual_seed(1), padding_free=True
        )(rows)
        assert "attention_mask" not in packed and packed["input_ids"].shape == (1, padded["attention_mask"].sum())
        with torch.no_grad():  # use_cache=False, as in training: transformers splits packed rows only without a cache
            assert model(**packed, use_cache=False).loss.item() == pytest.approx(
                model(**padded, use_cache=False).loss.item(), abs=1e-4
            )


def test_sigkill_then_resume_continues_from_last_checkpoint(prepared, tmp_path):
    out = tmp_path / "run"
    no_eval = ["--eval_strategy", "no", "--load_best_model_at_end", "false", "--samples_per_composer", "0"]
    args = train_args(prepared, out, "--max_steps", "400", "--save_steps", "5", *no_eval)
    train_until_killed(args, out)
    checkpoint = last_complete_checkpoint(out)
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) >= 10
    (out / "checkpoint-100000").mkdir()  # what a kill during a save leaves: no trainer_state.json
    step = int(checkpoint.name.split("-")[1])
    resumed = run_train(train_args(prepared, out, "--max_steps", str(step + 5), "--save_steps", "5", *no_eval))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoint}" in resumed.stdout
    assert "skipping incomplete checkpoint" in resumed.stdout
    state = json.loads((out / f"checkpoint-{step + 5}" / "trainer_state.json").read_text())
    assert state["global_step"] == step + 5
    logged = [e["step"] for e in state["log_history"] if "loss" in e]
    assert logged[0] == 5 and logged[-1] == step + 5, "the log history runs on from the first run, not from step 0"


def test_composer_dropout_rate_and_labels():
    generator = torch.Generator().manual_seed(0)
    collator = MidiCollator(pad_id=0, none_id=9, composer_dropout=0.3, max_seq_len=6, generator=generator)
    rows = [{"input_ids": [1, 5, 20, 21, 22, 23, 24, 25, 2]}, {"input_ids": [1, 6, 20, 2]}] * 2000
    batch = collator(rows)
    assert batch["input_ids"].shape == (4000, 6)
    rate = (batch["input_ids"][:, 1] == 9).float().mean().item()
    assert abs(rate - 0.3) < 0.03  # 4000 draws: 3 standard deviations is about 0.022
    assert (batch["input_ids"][:, 0] == 1).all(), "crops keep BOS in front"
    assert (batch["labels"][:, 1] == -100).all() and (batch["labels"][1::2, 4:] == -100).all()
    none = MidiCollator(0, 9, 0.0, 16)(rows[:100])
    assert not (none["input_ids"][:, 1] == 9).any()
    # evaluation twins: no draw, the composer token kept (or always replaced), a long row cut at its end
    state = generator.get_state()
    kept, replaced = collator.for_evaluation()(rows[:100]), collator.for_evaluation(unconditional=True)(rows[:100])
    assert torch.equal(generator.get_state(), state), "evaluating leaves training's random stream alone"
    assert kept["input_ids"][0::2].tolist() == [[1, 5, 20, 21, 22, 23]] * 50 and (kept["input_ids"][1::2, 1] == 6).all()
    assert (replaced["input_ids"][:, 1] == 9).all() and torch.equal(
        replaced["input_ids"][:, 2:], kept["input_ids"][:, 2:]
    )
    assert torch.equal(replaced["labels"], kept["labels"])
    assert collator.composer_dropout == 0.3, "the training collator is unchanged"


def test_composer_balanced_sampler_evens_composers_and_groups_lengths():
    composers = [0] * 900 + [1] * 100  # 9:1 rows
    lengths = [(i * 7919) % 500 + 3 for i in range(1000)]
    sampler = ComposerBalancedSampler(composers, lengths, batch_size=4, seed=0)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 1000
    share = sum(composers[i] for i in drawn) / len(drawn)
    assert abs(share - 0.5) < 0.05, share  # 1,000 draws: 3 standard deviations is about 0.047
    mega = 4 * ComposerBalancedSampler.MEGA_BATCHES
    for start in range(0, 1000, mega):
        block = [lengths[i] for i in drawn[start : start + mega]]
        assert block == sorted(block, reverse=True), "each mega-batch is sorted longest first"
    assert list(sampler) == drawn, "one epoch, one draw"
    sampler.set_epoch(1)
    assert list(sampler) != drawn, "another epoch, another draw"


def test_trainer_uses_the_balanced_sampler_only_when_asked(tmp_path):
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    rows = Dataset.from_dict({"input_ids": [[1, 5 + (i % 10 == 0), 20, 2] for i in range(200)]})
    composers = [int(i % 10 == 0) for i in range(200)]
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, report_to=[], use_cpu=True, seed=3
    )
    collator = MidiCollator(pad_id=0, none_id=9, composer_dropout=0.0, max_seq_len=8)
    balanced = MidiTrainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, balance_composers=composers
    )
    seen = torch.cat([batch["input_ids"][:, 1] for batch in balanced.get_train_dataloader()])
    assert len(seen) == 200 and abs((seen == 6).float().mean().item() - 0.5) < 0.15  # 1:9 rows, drawn 1:1
    plain = MidiTrainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    assert not isinstance(plain._get_train_sampler(), ComposerBalancedSampler)


def test_warmup_stable_decay_decays_over_the_last_fifth_unless_told(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )

    def rates(trainer: MidiTrainer, steps: int) -> list[float]:
        trainer.lr_scheduler = None
        trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        return [trainer.lr_scheduler.lr_lambdas[0](step) for step in range(steps + 1)]

    def trainer_with(**kwargs) -> MidiTrainer:
        args = TrainingArguments(
            output_dir=str(tmp_path),
            report_to=[],
            use_cpu=True,
            learning_rate=1.0,
            warmup_steps=2,
            lr_scheduler_type=TRAINING_DEFAULTS["lr_scheduler_type"],
            **kwargs,
        )
        return MidiTrainer(model=model, args=args)

    trainer = trainer_with()
    default = rates(trainer, 50)
    assert (
        default[2:40] == [1.0] * 38 and default[40] == 1.0 > default[41] > default[45] > default[50] == 0.0
    )  # decays over 10 of 50
    longer = rates(trainer, 100)  # a second run on the same arguments derives its own decay length
    assert longer[80] == 1.0 > longer[81] and not trainer.args.lr_scheduler_kwargs
    told = rates(trainer_with(lr_scheduler_kwargs={"num_decay_steps": 25}), 50)
    assert told[24] == 1.0 > told[26]


def test_incomplete_checkpoint_is_skipped(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_st')
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-5"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model_type", "mamba"], "--model_type 'mamba' is unknown"),
        (["--model_preset", "huge"], "--model_preset 'huge' is unknown"),
        (["--max_seq_len", "4096"], "is over the tiny preset's context of 1024 tokens"),
        (["--dataset_dir", "/nonexistent/data"], "--dataset_dir /nonexistent/data: not a dataset"),
        (["--tokenizer_dir", "/nonexistent/tok"], "--tokenizer_dir: /nonexistent/tok is not a midilm tokenizer folder"),
        (["--tokenizer_dir", "{other_tokenizer}"], "has composers"),
    ],
)
def test_bad_input_fails_before_training(extra, message, prepared, tmp_path):
    other = tmp_path / "other_tok"
    from conftest import TOKENIZER_SETTINGS

    from midilm.core.tokenizer import build_tokenizer, save_tokenizer

    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["x", "y"])
    save_tokenizer(tokenizer, composer_map, other)
    extra = [e.format(other_tokenizer=other) for e in extra]
    result = run_train(train_args(prepared, tmp_path / "out", "--max_steps", "2") + extra)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines and message in lines[-1] and lines[-1].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", [None, ["-m", "midilm.commands.train"]], ids=["train.py", "module"])
def test_accelerate_two_cpu_processes(prepared, tmp_path, target):
    """`accelerate launch train.py` in a clone, `accelerate launch -m midilm.commands.train` from an installed
    package."""
    result = run_train(
        train_args(
            prepared,
            tmp_path / "ddp",
            "--max_steps",
            "4",
            "--eval_steps",
            "1000",
            "--save_steps",
            "1000",
            "--samples_per_composer",
            "0",
        ),
        launcher=[
            *ACCELERATE_LAUNCH,
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ],
        target=target,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


def test_fsdp_config_on_cpu_says_it_runs_ddp(prepared, tmp_path):
    """accelerate runs FSDP on accelerators only: on CPU, configs/fsdp.yaml gives DDP, and train.py says so."""
    out = tmp_path / "fsdp"
    result = run_train(
        train_args(
            prepared,
            out,
            "--max_steps",
            "2",
            "--eval_steps",
            "1000",
            "--save_steps",
            "1000",
            "--samples_per_composer",
            "0",
        ),
        launcher=[
            *ACCELERATE_LAUNCH,
            "--config_file",
            str(REPO / "configs" / "fsdp.yaml"),
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        result.stdout.count(
            "FSDP was asked for, but accelerate runs it on GPUs and other accelerators only: this run is MULTI_CPU "
            "over 2 process(es)"
        )
        == 1
    )
    assert (out / "model.safetensors").is_file()


def test_two_nodes_on_localhost(prepared, tmp_path):
    """The README's multi-node lines: torchrun with c10d rendezvous, started once per machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two_nodes"
    launcher = [
        *TORCHRUN,
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
    ]
    command = [
        *launcher,
        str(REPO / "train.py"),
        *train_args(
            prepared,
            out,
            "--max_steps",
            "4",
            "--eval_steps",
            "1000",
            "--save_steps",
            "1000",
            "--samples_per_composer",
            "0",
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    assert all("2 process(es)" in stdout for stdout, _ in outputs)
    code = (
        f"from transformers import AutoModelForCausalLM; m = AutoModelForCausalLM.from_pretrained({str(out)!r}); "
        "print(m.num_parameters())"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0 and int(loaded.stdout.strip()) > 0, loaded.stderr[-2000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_gpt2_preset_trains_saves_samples_and_accompanies(midi_dir, tmp_path):
    """The GPT-2 preset end to end, as the Llama one: a few real Trainer steps (train's main, tiny sizes
    through --model_overrides) on data with both tasks, a folder plain transformers loads as GPT-2,
    samples with guidance and the grammar that read back without syntax errors, and an accompaniment."""
    from conftest import TOKENIZER_SETTINGS, make_piece
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    from midilm.commands import train
    from midilm.core.tokenizer import load_tokenizer
    from midilm.data.arguments import PrepareArguments
    from midilm.data.prepare import prepare
    from midilm.sampling.accompaniment import harmonize
    from midilm.sampling.generation import prepare_generation
    from midilm.sampling.grammar import count_syntax_errors
    from midilm.sampling.grammar_processor import GrammarLogitsProcessor
    from midilm.sampling.guidance import CFGSamplingProcessor
    from midilm.sampling.settings import SamplingSettings

    data, tokenizer_dir, out = tmp_path / "data", tmp_path / "tokenizer", tmp_path / "model_output"
    prepare(
        PrepareArguments(
            midi_dir=str(midi_dir),
            composers="alpha,beta",
            max_files_per_composer=5,
            min_pieces_per_composer=2,
            output_dir=str(data),
            tokenizer_dir=str(tokenizer_dir),
            vocab_size=0,
            max_seq_len=256,
            num_proc=1,
            tasks="continuation,accompaniment",
        ),
        TOKENIZER_SETTINGS,
    )
    overrides = json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 64, "n_inner": 128})
    no_eval = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    train.main(
        [
            *train_args({"data": data, "tokenizer": tokenizer_dir}, out, "--max_steps", "12", *no_eval),
            *["--model_type", "gpt2", "--model_overrides", overrides, "--samples_per_composer", "0"],
            *["--report_to", "none"],
        ]
    )

    # Save: plain transformers, no midilm, finds a GPT-2 of the overridden size, trained (loss below chance)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(model, GPT2LMHeadModel) and model.config.n_layer == 2 and model.config.n_embd == 64
    assert json.loads((out / "all_results.json").read_text())["train_loss"] < math.log(model.config.vocab_size)

    # Sample: guidance (2 rows per sample) and the grammar, through plain generate()
    plan = prepare_generation(
        out, composer="beta", num_samples=2, settings=SamplingSettings(seed=0, guidance_scale=2.0, max_new_tokens=48)
    )
    assert {type(p) for p in plan.logits_processor} >= {CFGSamplingProcessor, GrammarLogitsProcessor}
    assert plan.input_ids.shape[0] == 4
    output = model.generate(
        plan.input_ids,
        attention_mask=plan.attention_mask,
        generation_config=plan.generation_config,
        logits_processor=plan.logits_processor,
    )
    tokenizer, _ = load_tokenizer(out)
    for ids, score in zip(plan.sample_ids(output), plan.decode(output)):
        assert count_syntax_errors(tokenizer, ids) == 0.0 and score.note_num() > 0

    # Accompany: a melody comes back unchanged under new parts, as many bars long
    melody = make_piece(7, bars=3)
    melody.tracks = melody.tracks[:1]
    melody.dump_midi(tmp_path / "melody.mid")
    (accompaniment,) = harmonize(out, tmp_path / "melody.mid", "alpha", device="cpu", settings=SamplingSettings(seed=0))
    assert accompaniment.bars == 3 and accompaniment.syntax_error_rate == 0.0
    assert [(n.time, n.pitch) for n in accompaniment.score.tracks[0].notes] == [
        (n.time, n.pitch) for n in melody.tracks[0].notes
    ]


def test_early_stopping_stops_and_the_folder_holds_the_best_checkpoint(prepared, tmp_path):
    """--early_stopping_patience 1 with load_best_model_at_end (a default): a rate far too high makes the
    validation loss stop improving, training stops there, long before --max_steps, and the saved folder
    holds the best checkpoint's weights, not the last one's (which, stopped early, is never the best)."""
    from safetensors.torch import load_file

    from midilm.commands import train

    out = tmp_path / "model_output"
    flags = ["--max_steps", "200", "--eval_steps", "2", "--save_steps", "2", "--early_stopping_patience", "1"]
    unstable = ["--learning_rate", "1.0", "--lr_scheduler_type", "constant", "--max_eval_samples", "8"]
    train.main([*train_args(prepared, out, *flags), *unstable, "--samples_per_composer", "0", "--report_to", "none"])

    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    last = checkpoints[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] < 200, "early stopping never stopped the run"
    evals = [e["eval_loss"] for e in state["log_history"] if "eval_loss" in e]
    assert evals[-1] >= min(evals[:-1]) and state["best_metric"] == min(evals)
    best = Path(state["best_model_checkpoint"])
    assert best.name != last.name and best.name == f"checkpoint-{evals.index(min(evals)) * 2 + 2}"
    final, best_weights, last_weights = (load_file(p / "model.safetensors") for p in (out, best, last))
    assert final.keys() == best_weights.keys()
    assert all(torch.equal(final[k], best_weights[k]) for k in final)
    assert not all(torch.equal(final[k], last_weights[k]) for k in final)
    # the folder's evaluation is the best checkpoint's
    assert json.loads((out / "all_results.json").read_text())["eval_loss"] == pytest.approx(state["best_metric"])
