"""The wheel a newcomer gets from `pip install .`: every subpackage and data file inside, and the
`midilm` command running the whole pipeline from a fresh virtual environment that cannot see this tree."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, write_midi_folder

# What `pip wheel` reads to build: the project's metadata files and the package (no tests, no outputs).
BUILD_INPUTS = [
    "pyproject.toml",
    "README.md",
    "requirements.txt",
    "requirements-app.txt",
    "requirements-audio.txt",
    "requirements-dev.txt",
]


def build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the inputs (setuptools writes build/ and *.egg-info beside its input)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "midilm", source / "midilm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # --no-build-isolation: setuptools comes from this environment, so the build needs no index (offline CI)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = (tmp_path / "dist").glob("midilm-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def fresh_venv(root: Path, wheel: Path) -> tuple[Path, dict]:
    """A venv holding only the wheel's midilm, with this environment's dependencies visible, and the env
    to run it with.

    The venv is made without system site packages (when this interpreter is itself a venv, `venv
    --system-site-packages` would expose the base Python's packages, not this environment's torch and
    transformers). A .pth file in its site-packages lists this environment's site-packages folders
    instead: site.py appends such plain path lines to sys.path *after* the venv's own site-packages,
    and it runs the .pth files of its own site folders only, never those of a folder a .pth line names.
    So the dependencies import from here, while the development install of midilm, an editable
    install (`__editable__.midilm-*.pth`, which installs a finder pointing at the source tree, or adds
    the tree to sys.path), stays inert; a regular install of midilm here would be shadowed by the
    wheel's, which comes first on sys.path. Installing the dependencies into the venv instead would
    need an index or a wheel cache, and minutes. PYTHONPATH is dropped and every command runs in a
    folder outside the tree, so nothing else can lead back to the source.
    """
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = [
        p
        for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        if Path(p).is_dir()
    ]
    (purelib / "_dependencies_of_the_test_environment.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    return venv, env


def test_wheel_holds_every_subpackage_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(REPO)) for p in (REPO / "midilm").rglob("__init__.py"))
    assert {"midilm", "midilm/commands", "midilm/evaluation", "midilm/evaluate_modules", "midilm/tuning"} <= set(
        packages
    )
    sources = sorted(str(p.relative_to(REPO)) for p in (REPO / "midilm").rglob("*.py") if "__pycache__" not in p.parts)
    assert set(sources) <= names, sorted(
        set(sources) - names
    )  # every module, the evaluate modules' <name>/<name>.py included
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "midilm = midilm.commands:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_pipeline_through_the_midilm_command_of_an_installed_wheel(wheel, tmp_path):
    """prepare -> train (2 steps) -> generate -> evaluate, each `midilm <command>` from the wheel's venv."""
    venv, env = fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"
    write_midi_folder(work / "midi", {"alpha": 12, "beta": 12}, broken=False)

    def midilm(*args: str) -> str:
        result = subprocess.run(
            [str(venv / "bin" / "midilm"), *args],
            check=False,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, f"midilm {' '.join(args)}:\n{result.stderr[-3000:]}"
        return result.stdout

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import midilm; print(midilm.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO), where
    assert "prepare" in midilm("--help") and "tune" in midilm("--help")

    # num_proc 2: the data step's spawned workers import the console script first
    midilm(
        "prepare",
        "--midi_dir",
        "midi",
        "--output_dir",
        "data",
        "--tokenizer_dir",
        "tokenizer",
        "--vocab_size",
        "600",
        "--max_seq_len",
        "256",
        "--num_proc",
        "2",
        "--validation_ratio",
        "0.15",
        "--test_ratio",
        "0.15",
    )
    midilm(
        "train",
        "--dataset_dir",
        "data",
        "--tokenizer_dir",
        "tokenizer",
        "--output_dir",
        "model",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--samples_per_composer",
        "0",
        "--report_to",
        "none",
    )
    assert (work / "model" / "model.safetensors").is_file()
    midilm(
        "generate",
        "--model_dir",
        "model",
        "--composer",
        "alpha",
        "--max_new_tokens",
        "16",
        "--seed",
        "0",
        "--output_dir",
        "samples",
    )
    assert (work / "samples" / "alpha_0.mid").is_file()
    # The report's adherence and music metrics go through the wheel's evaluate modules (files loaded by path)
    midilm(
        "evaluate",
        "--model_dir",
        "model",
        "--dataset_dir",
        "data",
        "--output_dir",
        "eval",
        "--num_samples_per_composer",
        "1",
        "--max_new_tokens",
        "16",
        "--adherence_scales",
        "1,3",
        "--adherence_samples_per_composer",
        "1",
        "--accompaniment_pieces",
        "0",
    )
    assert (work / "eval" / "report.json").is_file() and (work / "eval" / "report.md").is_file()
