"""train.py: a real tiny run, TensorBoard, resume after SIGKILL, the Hub-ready folder, bad input, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from midilm.training import MidiCollator, last_complete_checkpoint

TINY = ["--max_seq_len", "256", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--learning_rate", "3e-3", "--warmup_steps", "0", "--logging_steps", "5", "--dataloader_num_workers", "0"]


def train_args(prepared, output_dir: Path, *extra: str) -> list[str]:
    return ["--dataset_dir", str(prepared["data"]), "--tokenizer_dir", str(prepared["tokenizer"]), "--output_dir", str(output_dir), *TINY, *extra]


def run_train(args: list[str], launcher: list[str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + [str(REPO / "train.py"), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "model_output"
    result = run_train(train_args(prepared, out, "--max_steps", "60", "--eval_steps", "30", "--save_steps", "30",
                                  "--samples_per_composer", "1", "--sample_max_new_tokens", "48"))
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
    assert {"train/loss", "eval/loss", "eval/perplexity", "train/learning_rate", "train/train_tokens_per_second"} <= scalars
    assert {"samples/alpha_0/piano_roll", "samples/beta_0/piano_roll", "samples/OTHER_0/piano_roll"} <= images
    assert "samples/alpha_0/audio" in audio
    assert (trained / "samples" / "step-30" / "alpha_0.mid").is_file()


def test_output_is_hub_ready_and_loads_without_midilm(trained):
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "composers.json",
                 "training_config.json", "README.md"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert set(config["composer_to_id"]) == {"alpha", "beta", "OTHER"} and "composer_none_id" in config
    assert json.loads((trained / "generation_config.json").read_text())["guidance_scale"] == 3.0
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


def test_sigkill_then_resume_continues_from_last_checkpoint(prepared, tmp_path):
    out = tmp_path / "run"
    no_eval = ["--eval_strategy", "no", "--load_best_model_at_end", "false", "--samples_per_composer", "0"]
    args = train_args(prepared, out, "--max_steps", "400", "--save_steps", "5", *no_eval)
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "checkpoint-10" / "trainer_state.json").exists():
        assert process.poll() is None, "training ended before its first checkpoints"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
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

    from midilm.tokenizer import build_tokenizer, save_tokenizer

    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["x", "y"])
    save_tokenizer(tokenizer, composer_map, other)
    extra = [e.format(other_tokenizer=other) for e in extra]
    result = run_train(train_args(prepared, tmp_path / "out", "--max_steps", "2") + extra)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines and message in lines[-1] and lines[-1].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_accelerate_two_cpu_processes(prepared, tmp_path):
    if shutil.which("accelerate") is None:
        pytest.fail("accelerate CLI not installed")
    result = run_train(
        train_args(prepared, tmp_path / "ddp", "--max_steps", "4", "--eval_steps", "1000", "--save_steps", "1000", "--samples_per_composer", "0"),
        launcher=["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
