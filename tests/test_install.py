"""scripts/install_torch.sh: torch's CPU build from PyTorch's CPU index where no NVIDIA driver is found,
else from the default index; nothing with a driver. No network: pip is a stand-in, or real pip with
--dry-run against an unreachable address and a local index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "install_torch.sh"
UNREACHABLE = "http://127.0.0.1:9/simple"  # the discard port: nothing listens, the connection is refused at once


def run_script(tmp_path, python, *args, nvidia=False, env=None):
    """The script with PATH holding only a folder of our own (no nvidia-smi unless `nvidia`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    environment = {"PATH": str(bin_dir), "PYTHON": str(python), "TORCH_CPU_INDEX": UNREACHABLE, **(env or {})}
    return subprocess.run(["/bin/sh", str(SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=120)


def stand_in_python(tmp_path, fails_with_index_url: bool, fails_without: bool = False):
    """A `python` whose `-m pip install ...` appends its arguments to calls.txt and fails as told."""
    log = tmp_path / "calls.txt"
    path = tmp_path / "python"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in\n'
        f"  *--index-url*) exit {int(fails_with_index_url)} ;;\n"
        f"  *) exit {int(fails_without)} ;;\n"
        "esac\n"
    )
    path.chmod(0o755)
    return path, log


def calls(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_cpu_index_is_asked_first_without_retries(tmp_path):
    python, log = stand_in_python(tmp_path, fails_with_index_url=False)
    result = run_script(tmp_path, python, env={"TORCH_INDEX_TIMEOUT": "7"})
    assert result.returncode == 0, result.stderr
    assert calls(log) == [f"-m pip install --quiet --timeout 7 --retries 0 --index-url {UNREACHABLE} torch==2.13.0"]


def test_an_unreachable_cpu_index_falls_back_to_the_default_index(tmp_path):
    python, log = stand_in_python(tmp_path, fails_with_index_url=True)
    result = run_script(tmp_path, python, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        f"-m pip install --quiet --timeout 15 --retries 0 --index-url {UNREACHABLE} --dry-run torch==2.13.0",
        "-m pip install --quiet --dry-run torch==2.13.0",
    ]
    assert "trying the default index" in result.stderr


def test_no_torch_from_either_index_fails(tmp_path):
    python, log = stand_in_python(tmp_path, fails_with_index_url=True, fails_without=True)
    assert run_script(tmp_path, python).returncode != 0
    assert len(calls(log)) == 2


def test_with_an_nvidia_driver_requirements_txt_brings_torch(tmp_path):
    python, log = stand_in_python(tmp_path, fails_with_index_url=False)
    result = run_script(tmp_path, python, nvidia=True)
    assert result.returncode == 0 and calls(log) == []
    assert "NVIDIA driver found" in result.stdout


def fake_torch_wheel(folder) -> None:
    """A local simple index (a folder per project, its index.html) holding a torch 2.13.0 wheel with only its
    metadata."""
    project = folder / "torch"
    project.mkdir(parents=True)
    dist_info = "torch-2.13.0.dist-info"
    files = {
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist_info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{dist_info}/RECORD"])
    with zipfile.ZipFile(project / "torch-2.13.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    (project / "index.html").write_text('<a href="torch-2.13.0-py3-none-any.whl">torch-2.13.0-py3-none-any.whl</a>\n')


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell script")
def test_real_pip_gives_up_on_an_unreachable_index_at_once_and_falls_back(tmp_path):
    """Real pip, --dry-run: the unreachable CPU index fails within seconds (no retries), then the default
    index (here a local folder, through PIP_INDEX_URL, which --index-url overrides) would install torch."""
    fake_torch_wheel(tmp_path / "simple")
    env = {
        "PIP_CONFIG_FILE": os.devnull,  # none of this machine's pip settings (find-links, extra indexes)
        "PIP_INDEX_URL": (tmp_path / "simple").as_uri(),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "HOME": str(tmp_path),
    }
    report = tmp_path / "report.json"  # what pip would install (written by the call that succeeds)
    flags = ["--dry-run", "--ignore-installed", "--no-deps", "--no-cache-dir", "--report", str(report)]
    start = time.monotonic()
    result = run_script(tmp_path, sys.executable, *flags, env=env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 60
    assert "trying the default index" in result.stderr
    (install,) = json.loads(report.read_text())["install"]
    assert install["metadata"]["version"] == "2.13.0" and install["download_info"]["url"].startswith(
        env["PIP_INDEX_URL"]
    )
