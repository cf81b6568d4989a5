"""The model folder as others meet it: plain transformers (no midilm, no hidden guidance), midilm's
stored guidance default, and `train.py --push_to_hub` recorded at the huggingface_hub API boundary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, load_script, run_cli

from midilm.core.errors import InputError
from midilm.core.modeling import DEFAULT_GUIDANCE_SCALE, sampling_defaults
from midilm.core.tokenizer import load_tokenizer
from midilm.sampling.settings import SamplingSettings

REPO_ID = "someone/midilm-tiny"
# The files a midilm model repository holds; checkpoints, TensorBoard runs and training_args.bin stay local.
SENT = [
    "README.md",
    "all_results.json",
    "composers.json",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "training_config.json",
]


class HubRecorder:
    """Stands in for the Hub: records create_repo and upload_folder calls, and copies what upload_folder
    would send (the library's own file selection) into `sent`."""

    def __init__(self, sent: Path):
        self.sent, self.calls = sent, []

    def install(self, patch: pytest.MonkeyPatch) -> None:
        from huggingface_hub import HfApi, RepoUrl
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

        def create_repo(api, repo_id, **kw):
            self.calls.append(("create_repo", repo_id, kw))
            return RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")

        def upload_folder(
            api, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, path_in_repo=None, **kw
        ):
            local = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
            files = sorted(
                filter_repo_objects(
                    local,
                    allow_patterns=allow_patterns,
                    ignore_patterns=[*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS],
                )
            )
            self.calls.append(("upload_folder", repo_id, {"files": files, "path_in_repo": path_in_repo, **kw}))
            for name in files:
                (self.sent / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder_path) / name, self.sent / name)

        def unexpected(name):
            def call(api, *args, **kw):
                self.calls.append((name, args, kw))
                raise AssertionError(f"HfApi.{name} called during a push")

            return call

        patch.setattr(HfApi, "create_repo", create_repo)
        patch.setattr(HfApi, "upload_folder", upload_folder)
        for name in ("upload_file", "create_commit", "whoami"):
            patch.setattr(HfApi, name, unexpected(name))


@pytest.fixture(scope="module")
def pushed(prepared, tmp_path_factory) -> dict:
    """train.py --push_to_hub, in process, on the shared tiny dataset: its folder, and what reached the "Hub"."""
    root = tmp_path_factory.mktemp("hub")
    out, sent = root / "model_output", root / "sent"
    sent.mkdir()
    recorder = HubRecorder(sent)
    argv = [
        "--dataset_dir",
        str(prepared["data"]),
        "--tokenizer_dir",
        str(prepared["tokenizer"]),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--learning_rate",
        "3e-3",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "10",
        "--max_steps",
        "20",
        "--eval_strategy",
        "no",
        "--save_steps",
        "10",
        "--load_best_model_at_end",
        "false",
        "--samples_per_composer",
        "0",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        REPO_ID,
        "--hub_private_repo",
        "true",
    ]
    with pytest.MonkeyPatch.context() as patch:
        recorder.install(patch)
        code = run_cli(load_script("train.py"), patch, *argv)
    assert code == 0
    return {"dir": out, "sent": sent, "calls": recorder.calls}


def test_push_sends_midilm_card_and_only_the_model_files(pushed):
    calls = pushed["calls"]
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"], (
        "one repository, one commit: the Trainer itself pushes nothing"
    )
    _, repo_id, kw = calls[0]
    assert repo_id == REPO_ID and kw["private"] is True and kw["exist_ok"] is True
    _, repo_id, kw = calls[1]
    assert repo_id == REPO_ID and kw["path_in_repo"] is None
    assert kw["files"] == SENT
    assert (pushed["dir"] / "checkpoint-20").is_dir() and (pushed["dir"] / "runs").is_dir()  # there locally, not sent

    card = (pushed["sent"] / "README.md").read_text()
    from huggingface_hub import ModelCard

    assert ModelCard(card).data.library_name == "transformers"  # the YAML header the Hub reads
    for composer in ("alpha", "beta", "OTHER"):
        assert f"| {composer} | `COMPOSER_" in card
    assert "## Tasks" in card and "- continuation:" in card and "- accompaniment" not in card
    assert "eval perplexity" in card and "## Data" in card
    assert f'snapshot_download("{REPO_ID}")' in card and "prepare_generation(folder" in card
    assert f'miditok.REMI.from_pretrained("{REPO_ID}")' in card and "plain sample, with no guidance" in card
    assert f"scale {DEFAULT_GUIDANCE_SCALE:g} by default" in card
    assert "Training hyperparameters" not in card  # the Trainer's generic card
    assert (pushed["dir"] / "README.md").read_text() == card  # the local card says the same
    # the saved configuration says what was asked, though the Trainer itself was told not to push
    assert json.loads((pushed["sent"] / "training_config.json").read_text())["training"]["push_to_hub"] is True


def test_the_sent_folder_loads_with_transformers_and_miditok(pushed):
    import miditok
    from transformers import AutoModelForCausalLM

    from midilm.sampling.generation import prepare_generation

    sent = pushed["sent"]
    model = AutoModelForCausalLM.from_pretrained(sent)
    tokenizer = miditok.REMI.from_pretrained(sent)
    ours, composer_map = load_tokenizer(pushed["dir"])
    assert tokenizer.vocab_model == ours.vocab_model and len(tokenizer) == model.config.vocab_size
    assert model.config.composer_to_id == dict(zip(composer_map.names, composer_map.token_ids))
    plan = prepare_generation(sent, "alpha", 1, settings=SamplingSettings(max_new_tokens=4))
    assert plan.settings["guidance_scale"] == DEFAULT_GUIDANCE_SCALE and plan.input_ids.shape[0] == 2


def test_push_refuses_an_incomplete_folder(tmp_path, monkeypatch):
    from midilm.training.hub import push_model

    recorder = HubRecorder(tmp_path)
    recorder.install(monkeypatch)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="not a complete midilm model folder"):
        push_model(tmp_path, REPO_ID)
    assert recorder.calls == []


PLAIN = """
import json, sys
import miditok, torch
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.generation import logits_process

folder = sys.argv[1]
built = []
for name in ("UnbatchedClassifierFreeGuidanceLogitsProcessor", "ClassifierFreeGuidanceLogitsProcessor"):
    cls = getattr(logits_process, name)
    def record(self, *args, _init=cls.__init__, _name=name, **kw):
        built.append(_name)
        _init(self, *args, **kw)
    cls.__init__ = record

model = AutoModelForCausalLM.from_pretrained(folder)
stored = GenerationConfig.from_pretrained(folder)
prompt = torch.tensor([[model.config.bos_token_id, model.config.composer_to_id["alpha"]]])
torch.manual_seed(0)
out = model.generate(prompt, max_new_tokens=128)
plain = list(built)
model.generate(prompt, max_new_tokens=2, guidance_scale=3.0)  # the recorder does see transformers' CFG
tokenizer = miditok.REMI(params=f"{folder}/tokenizer.json")
ids = out[0].tolist()
score = tokenizer.decode([i for i in ids if i not in tokenizer.special_tokens_ids])
print(json.dumps({"plain": plain, "guided": built[len(plain):], "stored_guidance": stored.guidance_scale,
                  "do_sample": stored.do_sample, "rows": out.shape[0], "new": len(ids) - 2, "notes": score.note_num(),
                  "midilm_loaded": "midilm" in sys.modules}))
"""


def test_plain_generate_without_midilm_samples_plainly_and_decodes(pushed):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: tiny models only spin-wait on more
    result = subprocess.run(
        [sys.executable, "-c", PLAIN, str(pushed["sent"])], capture_output=True, text=True, cwd="/", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["midilm_loaded"] is False
    assert seen["plain"] == [] and seen["guided"] == ["UnbatchedClassifierFreeGuidanceLogitsProcessor"]
    assert seen["stored_guidance"] is None and seen["do_sample"] is True
    assert seen["rows"] == 1 and seen["new"] > 0 and seen["notes"] > 0


def test_generate_py_defaults_to_the_stored_guidance(pushed, tmp_path):
    """generate.py in its own process: guidance comes from config.json's midilm_guidance_scale."""
    config = json.loads((pushed["dir"] / "config.json").read_text())
    assert config["midilm_guidance_scale"] == DEFAULT_GUIDANCE_SCALE
    assert "guidance_scale" not in json.loads((pushed["dir"] / "generation_config.json").read_text())
    model = tmp_path / "model"
    shutil.copytree(pushed["sent"], model)
    (model / "config.json").write_text(json.dumps({**config, "midilm_guidance_scale": 2.5}))
    command = [
        sys.executable,
        str(REPO / "generate.py"),
        "--model_dir",
        str(model),
        "--composer",
        "beta",
        "--max_new_tokens",
        "8",
        "--output_dir",
        str(tmp_path / "samples"),
    ]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads((tmp_path / "samples" / "beta_0.json").read_text())["settings"]
    assert settings["guidance_scale"] == 2.5 and settings["effective_guidance_scale"] == 2.5


def test_guidance_default_of_older_folders(pushed, tmp_path):
    """A folder saved before `midilm_guidance_scale` kept its default in generation_config.json."""
    old = tmp_path / "old"
    shutil.copytree(pushed["sent"], old)
    config = json.loads((old / "config.json").read_text())
    del config["midilm_guidance_scale"]
    (old / "config.json").write_text(json.dumps(config))
    generation = json.loads((old / "generation_config.json").read_text())
    (old / "generation_config.json").write_text(json.dumps({**generation, "guidance_scale": 1.5}))
    assert sampling_defaults(old)["guidance_scale"] == 1.5
    (old / "generation_config.json").write_text(json.dumps(generation))
    assert sampling_defaults(old)["guidance_scale"] == DEFAULT_GUIDANCE_SCALE
    assert sampling_defaults(pushed["sent"])["temperature"] == generation["temperature"]
