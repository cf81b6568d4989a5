"""Building on a trained model: prepare_dataset.py --base_model (the base's tokenizer, new composers
appended), train.py --init_from (grown and tied embeddings, full or LoRA, resume after kill -9), the
folder it saves (plain transformers, generate.py by name), and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    REPO,
    TOKENIZER_SETTINGS,
    assert_refused,
    load_script,
    run_cli,
    train_until_killed,
    write_midi_folder,
)
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

from midilm.core.modeling import BASE_KEY
from midilm.core.tokenizer import load_tokenizer
from midilm.training.finetune import BASE_FILE, FinetuneArguments, grow_embeddings, trainable_parameters, wrap_lora
from midilm.training.hub import model_files
from midilm.training.trainer import last_complete_checkpoint

NEW = ["Bach, Johann Sebastian", "Dvořák"]
QUICK = [
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
    "--samples_per_composer",
    "0",
]
NO_EVAL = ["--eval_strategy", "no", "--load_best_model_at_end", "false"]


def run_train(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=REPO, capture_output=True, text=True, **kwargs
    )


@pytest.fixture(scope="module")
def base_dir(tiny_model) -> Path:
    """A tiny model trained from scratch on alpha, beta and OTHER (conftest): the base everything here builds on."""
    return tiny_model


@pytest.fixture(scope="module")
def ft_prepared(base_dir, tmp_path_factory) -> dict:
    """Two composers the base never saw (a comma, an accent) and one it knows, plus unusable files,
    prepared with the base's tokenizer (config.json's tokenizer section given, and ignored)."""
    from midilm.data.arguments import PrepareArguments
    from midilm.data.prepare import prepare

    midi = write_midi_folder(tmp_path_factory.mktemp("ft_midi"), {NEW[0]: 6, NEW[1]: 6, "alpha": 4})
    out = tmp_path_factory.mktemp("ft_prepared")
    args = PrepareArguments(
        midi_dir=str(midi),
        base_model=str(base_dir),
        output_dir=str(out / "data"),
        tokenizer_dir=str(out / "tokenizer"),
        max_seq_len=256,
        num_proc=2,
        min_pieces_per_composer=2,
        validation_ratio=0.25,
        test_ratio=0.1,
    )
    report = prepare(args, {**TOKENIZER_SETTINGS, "num_velocities": 8})
    return {"data": out / "data", "tokenizer": out / "tokenizer", "report": report, "root": out}


def ft_args(ft_prepared, base_dir, out: Path, *extra: str) -> list[str]:
    return [
        "--init_from",
        str(base_dir),
        "--dataset_dir",
        str(ft_prepared["data"]),
        "--tokenizer_dir",
        str(ft_prepared["tokenizer"]),
        "--output_dir",
        str(out),
        *QUICK,
        *extra,
    ]


@pytest.fixture(scope="module")
def full_ft(ft_prepared, base_dir, tmp_path_factory) -> dict:
    """Full fine-tuning killed with SIGKILL after its first checkpoints, then run again to the end."""
    out = tmp_path_factory.mktemp("ft_full") / "model_ft"
    args = ft_args(ft_prepared, base_dir, out, "--eval_steps", "5", "--save_steps", "5")
    train_until_killed([*args, "--max_steps", "400"], out)
    killed_at = int(last_complete_checkpoint(out).name.split("-")[1])
    resumed = run_train(*args, "--max_steps", str(killed_at + 5))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"dir": out, "stdout": resumed.stdout, "killed_at": killed_at}


def test_prepare_keeps_the_base_vocabulary_and_appends_new_composers(base_dir, ft_prepared):
    base_json = json.loads((base_dir / "tokenizer.json").read_text())
    new_json = json.loads((ft_prepared["tokenizer"] / "tokenizer.json").read_text())
    base_bpe, new_bpe = json.loads(base_json["_model"])["model"], json.loads(new_json["_model"])["model"]
    assert new_bpe["vocab"] == base_bpe["vocab"] and new_bpe["merges"] == base_bpe["merges"]  # byte for byte
    assert (
        new_json["config"]["num_velocities"] == base_json["config"]["num_velocities"]
    )  # the base's settings, not config.json's
    assert all(new_json["_vocab_base"][token] == i for token, i in base_json["_vocab_base"].items())

    base_tok, base_map = load_tokenizer(base_dir)
    tok, composer_map = load_tokenizer(ft_prepared["tokenizer"])
    assert composer_map.names == base_map.names + NEW
    assert composer_map.token_ids[: len(base_map.names)] == base_map.token_ids  # alpha, beta, OTHER keep their ids
    assert composer_map.token_ids[len(base_map.names) :] == [
        len(base_tok),
        len(base_tok) + 1,
    ]  # new ones after the last id
    assert composer_map.none_id == base_map.none_id and len(tok) == len(base_tok) + 2

    report = ft_prepared["report"]
    assert report["files"]["skipped"] == 4  # the usual bad-file handling
    assert report["base_model"]["model"] == str(base_dir) and report["base_model"]["revision"].startswith("sha256:")
    assert report["base_model"]["new_composers"] == NEW
    for folder in (ft_prepared["tokenizer"], ft_prepared["data"]):
        recorded = json.loads((folder / BASE_FILE).read_text())
        assert recorded["model"] == str(base_dir) and recorded["new_composers"] == NEW
    pieces = {c["composer"]: c["pieces"] for c in report["composers"]["composers"]}
    assert pieces["alpha"] == 4 and pieces["beta"] == 0 and pieces[NEW[0]] == 6


def test_resume_after_kill_continues_the_fine_tuning(full_ft):
    assert full_ft["killed_at"] >= 10
    checkpoint = full_ft["dir"] / f"checkpoint-{full_ft['killed_at']}"
    assert f"resuming from {checkpoint}" in full_ft["stdout"]
    state = json.loads((full_ft["dir"] / f"checkpoint-{full_ft['killed_at'] + 5}" / "trainer_state.json").read_text())
    assert state["global_step"] == full_ft["killed_at"] + 5
    assert [e["step"] for e in state["log_history"] if "loss" in e][0] == 5


def test_fine_tuned_folder_grows_ties_and_records_its_base(full_ft, base_dir, ft_prepared):
    out = full_ft["dir"]
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers
    tok, composer_map = load_tokenizer(ft_prepared["tokenizer"])
    assert model.config.vocab_size == len(tok) == base.config.vocab_size + 2
    assert (
        model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    )  # still tied
    assert model.config.num_hidden_layers == base.config.num_hidden_layers  # the architecture is kept
    assert model.config.composer_to_id[NEW[1]] == len(tok) - 1
    new_rows = model.get_input_embeddings().weight[-2:]
    assert not torch.allclose(new_rows[0], new_rows[1])  # both started as COMPOSER_NONE's row, and trained apart

    config = json.loads((out / "config.json").read_text())
    lineage = config[BASE_KEY]
    assert lineage["model"] == str(base_dir) and lineage["new_composers"] == NEW and lineage["method"] == "full"
    assert lineage["steps"] == full_ft["killed_at"] + 5 and lineage["dataset"] == str(ft_prepared["data"])
    assert json.loads((out / "training_config.json").read_text())["base_model"] == lineage
    card = (out / "README.md").read_text()
    assert "## Built on" in card and str(base_dir) in card and "Dvořák" in card
    assert "eval_composer_information" in json.loads(
        (out / "all_results.json").read_text()
    )  # evaluation ran as for any run
    assert list((out / "runs").glob("*/events.out.tfevents.*"))  # TensorBoard
    pushed = model_files(out)  # what push_model would upload
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "composers.json",
        "training_config.json",
    } <= set(pushed)

    prompt = torch.tensor([[model.config.bos_token_id, model.config.composer_to_id[NEW[0]]]])
    assert model.generate(prompt, max_new_tokens=8, do_sample=True).shape[1] > 2


@pytest.mark.parametrize("composer", [NEW[0], NEW[1], "alpha"])
def test_generate_samples_new_and_old_composers_by_name(composer, full_ft, tmp_path, monkeypatch):
    script = load_script("generate.py")
    code = run_cli(
        script,
        monkeypatch,
        "--model_dir",
        str(full_ft["dir"]),
        "--composer",
        composer,
        "--num_samples",
        "1",
        "--max_new_tokens",
        "24",
        "--output_dir",
        str(tmp_path),
    )
    assert code == 0
    record = json.loads(next(tmp_path.glob("*_0.json")).read_text())
    assert record["composer"] == composer


def test_lora_trains_adapters_and_new_rows_only(base_dir, ft_prepared):
    base_tok, base_map = load_tokenizer(base_dir)
    _, composer_map = load_tokenizer(ft_prepared["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    new_ids = grow_embeddings(model, base_map, composer_map, "none")
    assert torch.equal(
        model.get_input_embeddings().weight[new_ids[0]], model.get_input_embeddings().weight[base_map.none_id]
    )
    wrapped = wrap_lora(model, FinetuneArguments(init_from=str(base_dir), lora_r=4), new_ids)
    trained = {name: p.numel() for name, p in wrapped.named_parameters() if p.requires_grad}
    lora = sum(n for name, n in trained.items() if ".lora_A." in name or ".lora_B." in name)
    rows = sum(n for name, n in trained.items() if "trainable_tokens_delta" in name)
    assert rows == len(new_ids) * model.config.hidden_size  # the new composers' rows, not the whole embedding
    assert lora + rows == trainable_parameters(wrapped) == sum(trained.values())
    # rank 4 on every linear layer of the blocks: q, k, v, o, gate, up, down in each of the 4 layers
    hidden, ffn, layers = model.config.hidden_size, model.config.intermediate_size, model.config.num_hidden_layers
    assert lora == layers * 4 * (4 * (hidden + hidden) + 3 * (hidden + ffn))


def test_lora_run_saves_a_merged_folder_with_the_adapters_logits(base_dir, ft_prepared, prepared, tmp_path):
    from peft import PeftModel

    out = tmp_path / "model_lora"
    result = run_train(
        *ft_args(
            ft_prepared,
            base_dir,
            out,
            "--max_steps",
            "10",
            "--lora_r",
            "4",
            "--learning_rate",
            "2e-2",
            "--save_adapter",
            "--replay_dataset",
            str(prepared["data"]),
            "--replay_share",
            "0.25",
            *NO_EVAL,
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    new_rows = len(load_from_disk(str(ft_prepared["data"]))["train"])
    assert (
        f"replay: {round(new_rows / 3)} rows of {prepared['data']} mixed into {new_rows + round(new_rows / 3)} "
        "training rows"
    ) in result.stdout
    assert not (out / "adapter_config.json").exists()  # a plain model folder: transformers would look for a base model
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size < (out / "model.safetensors").stat().st_size
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert json.loads((out / "config.json").read_text())[BASE_KEY]["method"].startswith("lora r=4")

    base_tok, base_map = load_tokenizer(base_dir)
    _, composer_map = load_tokenizer(ft_prepared["tokenizer"])
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    grow_embeddings(base, base_map, composer_map, "none")
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = torch.tensor([[base.config.bos_token_id, composer_map.token_ids[-1], *range(10, 40)]])
    old = torch.tensor([[base.config.bos_token_id, base_map.token_ids[0], *range(10, 40)]])
    plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
        assert not torch.allclose(
            merged(old).logits[..., : len(base_tok)], plain(old).logits, atol=1e-3
        )  # the adapters changed it


def test_evaluation_judges_old_and_new_composers_and_names_the_new(full_ft, ft_prepared, prepared, tmp_path):
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "evaluate_samples.py"),
            "--model_dir",
            str(full_ft["dir"]),
            "--dataset_dir",
            str(ft_prepared["data"]),
            "--base_dataset_dir",
            str(prepared["data"]),
            "--output_dir",
            str(out),
            "--num_samples_per_composer",
            "1",
            "--max_new_tokens",
            "32",
            "--adherence_scales",
            "2",
            "--adherence_samples_per_composer",
            "2",
            "--accompaniment_pieces",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    evaluated = report["settings"]["composers_evaluated"]
    assert set(NEW) <= set(evaluated) and {"alpha", "beta"} <= set(
        evaluated
    )  # the base's composers too, from --base_dataset_dir
    assert report["settings"]["new_composers"] == [c for c in evaluated if c in NEW]
    classifier = report["adherence"]["classifier"]
    assert set(evaluated) <= set(classifier["composers"]) | set(classifier["not_measurable"])
    assert {"alpha", "beta"} <= set(classifier["composers"])  # the classifier learnt the base's composers from its data
    assert "Dvořák (new)" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "case, message",
    [
        ("other_tokenizer", "was prepared with another tokenizer than"),
        ("long_context", "is longer than --init_from"),
        ("not_midilm", "not a midilm model"),
        ("hub_offline", "not loadable from the Hub"),
        ("overrides", "--model_overrides does not apply with --init_from"),
    ],
)
def test_train_refusals(case, message, base_dir, ft_prepared, named_prepared, tmp_path, monkeypatch, capsys):
    data, init = ft_prepared, str(base_dir)
    extra = []
    if case == "other_tokenizer":
        data = named_prepared
    elif case == "long_context":
        extra = ["--max_seq_len", "300"]
    elif case == "overrides":
        extra = ["--model_overrides", '{"num_hidden_layers": 2}']
    elif case == "not_midilm":
        init = str(tmp_path / "plain")
        AutoModelForCausalLM.from_pretrained(base_dir).save_pretrained(init)  # weights and config, no tokenizer
        capsys.readouterr()
    else:
        init = "midilm-tests/never-cached"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [
        "--init_from",
        init,
        "--dataset_dir",
        str(data["data"]),
        "--tokenizer_dir",
        str(data["tokenizer"]),
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "2",
        *extra,
    ]
    assert_refused(load_script("train.py"), monkeypatch, capsys, tmp_path, argv, message)


@pytest.mark.parametrize(
    "case, message", [("not_midilm", "--base_model"), ("hub_offline", "not loadable from the Hub")]
)
def test_prepare_refusals(case, message, midi_dir, tmp_path):
    (tmp_path / "empty_model").mkdir()
    base = str(tmp_path / "empty_model") if case == "not_midilm" else "midilm-tests/never-cached"
    before = sorted(tmp_path.rglob("*"))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "prepare_dataset.py"),
            "--midi_dir",
            str(midi_dir),
            "--base_model",
            base,
            "--output_dir",
            str(tmp_path / "data"),
            "--tokenizer_dir",
            str(tmp_path / "tok"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and err and err[-1].startswith("error: ") and message in err[-1], result.stderr[
        -2000:
    ]
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_a_cached_hub_model_is_a_base_offline(base_dir, midi_dir, tmp_path):
    """--base_model with a Hub repo id resolves through the Hub cache (offline: the cache alone) and records the
    commit."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--midilm-tests--tiny"
    shutil.copytree(base_dir, repo / "snapshots" / commit, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "prepare_dataset.py"),
            "--midi_dir",
            str(midi_dir),
            "--base_model",
            "midilm-tests/tiny",
            "--output_dir",
            str(tmp_path / "data"),
            "--tokenizer_dir",
            str(tmp_path / "tok"),
            "--max_seq_len",
            "256",
            "--num_proc",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "tok" / BASE_FILE).read_text())["revision"] == commit
    assert (
        json.loads((tmp_path / "data" / "prepare_report.json").read_text())["base_model"]["model"]
        == "midilm-tests/tiny"
    )


def test_new_composers_need_a_bpe_base(midi_dir, tmp_path):
    """miditok rebuilds a vocabulary without BPE from its settings, so appended composers would not keep their ids."""
    from conftest import save_random_model

    from midilm.core.errors import InputError
    from midilm.core.tokenizer import build_tokenizer
    from midilm.data.arguments import PrepareArguments
    from midilm.data.prepare import prepare

    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["zeta"])
    base = save_random_model(tmp_path / "no_bpe", tokenizer, composer_map, 256)
    args = PrepareArguments(
        midi_dir=str(midi_dir),
        base_model=str(base),
        output_dir=str(tmp_path / "data"),
        tokenizer_dir=str(tmp_path / "tok"),
        max_seq_len=256,
        num_proc=2,
    )
    with pytest.raises(InputError, match="has no BPE vocabulary"):
        prepare(args)
    assert not (tmp_path / "data").exists() and not (tmp_path / "tok").exists()
