"""`make demo`'s pipeline (prepare → train → generate → evaluate) on a tiny subset of the bundled corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import REPO


def test_demo_pipeline_on_a_tiny_subset(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is not installed; `apt-get install make`")
    env = {**os.environ, "MIDILM_CACHE": str(tmp_path / "cache")}
    tiny = ["DEMO_COMPOSERS=bach,palestrina", "DEMO_FILES=4", "DEMO_MIN_PIECES=2", "DEMO_STEPS=6", "DEMO_SAMPLES=1",
            "DEMO_TOKENS=48", "DEMO_EVAL_STEPS=3", "DEMO_AUGMENT=", "DEMO_EVAL=--num_samples_per_composer 1 --max_new_tokens 48 --guidance_scales 1,2"]
    result = subprocess.run(["make", "-f", str(REPO / "Makefile"), "pipeline", *tiny], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    for composer in ("bach", "palestrina"):
        for suffix in (".mid", ".wav", ".png", ".json"):
            assert (tmp_path / "samples" / f"{composer}_0{suffix}").is_file()
    assert (tmp_path / "samples" / "eval" / "report.md").is_file()
    assert json.loads((tmp_path / "model_output" / "config.json").read_text())["composer_to_id"].keys() == {"bach", "palestrina"}
    # a second run finds every stage done and changes nothing
    again = subprocess.run(["make", "-f", str(REPO / "Makefile"), "pipeline", *tiny], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "prepare_dataset.py" not in again.stdout
