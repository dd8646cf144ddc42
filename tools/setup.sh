#!/usr/bin/env bash
# Sets up this machine for moreh and builds it: Debian packages (C++ dependencies), PyTorch and the test
# tools from pip, the CMake build (runtime, scheduler, backend, GoogleTest), and the torch_moreh package
# installed editable from this checkout. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
export TORCH_DEVICE_BACKEND_AUTOLOAD=0   # never load a (possibly stale) torch_moreh while setting up

# libgloo-dev: collectives between workers (host devices); libssl-dev: the control plane's HMAC (OpenSSL).
apt_packages="cmake ninja-build g++ ccache libspdlog-dev libfmt-dev libboost-dev libgtest-dev libgloo-dev libssl-dev"
missing=""
for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if ! $PY - <<'PY' 2>/dev/null
import torch, sys
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 5) else 1)
PY
then
  echo "[setup] pip install torch==2.13.0"
  $PY -m pip install -q torch==2.13.0
fi
$PY -c "import pytest, expecttest, hypothesis, numpy" 2>/dev/null || {
  echo "[setup] pip install pytest expecttest hypothesis numpy"
  $PY -m pip install -q pytest expecttest hypothesis numpy
}
# moreh-log plot draws with matplotlib (the tool says so, and exits, where it is missing).
$PY -c "import matplotlib" 2>/dev/null || {
  echo "[setup] pip install matplotlib"
  $PY -m pip install -q matplotlib
}
# Hugging Face models for the real-script tests (built from configs; nothing is downloaded from a hub).
$PY -c "import transformers, sys; sys.exit(transformers.__version__ != '5.23.0')" 2>/dev/null || {
  echo "[setup] pip install transformers==5.23.0"
  $PY -m pip install -q transformers==5.23.0
}

# NVRTC (the runtime compiler of moreh's generated CUDA kernels): its header for the build, and the library
# for the tests that compile every generated kernel (no GPU needed for that).
$PY -m pip show nvidia-cuda-nvrtc >/dev/null 2>&1 || {
  echo "[setup] pip install nvidia-cuda-nvrtc==13.5.37"
  $PY -m pip install -q nvidia-cuda-nvrtc==13.5.37
}

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$(command -v $PY)" >/dev/null
cmake --build build

# The package must be this checkout's (another clone may have installed its own copy before).
where=$($PY -c "import importlib.util as u; s = u.find_spec('torch_moreh'); print(s.origin if s else '')" 2>/dev/null || true)
# Reinstall too when the console scripts are missing (an install from before they existed).
if [ "$where" != "$ROOT/backend/torch_moreh/__init__.py" ] || ! command -v moreh-smi >/dev/null \
   || ! command -v moreh-switch-model >/dev/null || ! command -v moreh-log >/dev/null \
   || ! command -v moreh-worker >/dev/null || ! command -v moreh-launch >/dev/null; then
  echo "[setup] pip install -e . (torch_moreh from $ROOT)"
  $PY -m pip install -q --no-build-isolation --no-deps -e .
fi
echo "[setup] ready: $($PY -c 'import torch; print("torch", torch.__version__)')"
