#!/bin/sh
# torch for `make install`, before requirements.txt (whose torch>=2.4,<3 it then satisfies).
#
#   PYTHON=.venv/bin/python sh scripts/install_torch.sh [extra pip flags, e.g. --dry-run]
#
# With an NVIDIA driver (nvidia-smi on PATH) it does nothing: requirements.txt's torch, from the default
# index, is the CUDA build. Without one it installs torch's CPU build (a plain `pip install torch` on Linux
# pulls the multi-GB CUDA build), asking PyTorch's own CPU wheel index first; where that index cannot be
# reached (an offline mirror, a firewall) pip gives up at once (no retries, a short timeout) and the
# default index is asked instead (on Linux it holds only CUDA builds, unless the machine's pip is
# configured to find the CPU build elsewhere, e.g. find-links).
#
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0, the release CI and the demo use),
# TORCH_CPU_INDEX (default https://download.pytorch.org/whl/cpu; the tests point it at an unreachable address),
# TORCH_INDEX_TIMEOUT (seconds per connection to it, default 15).
set -eu

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
TORCH_INDEX_TIMEOUT=${TORCH_INDEX_TIMEOUT:-15}

if command -v nvidia-smi >/dev/null 2>&1; then
    echo "install_torch: NVIDIA driver found; torch comes with requirements.txt (a CUDA build)"
    exit 0
fi
if "$PYTHON" -m pip install --quiet --timeout "$TORCH_INDEX_TIMEOUT" --retries 0 --index-url "$TORCH_CPU_INDEX" "$@" "$TORCH_SPEC"; then
    exit 0
fi
echo "install_torch: $TORCH_SPEC not installed from $TORCH_CPU_INDEX (unreachable?); trying the default index" >&2
"$PYTHON" -m pip install --quiet "$@" "$TORCH_SPEC"
