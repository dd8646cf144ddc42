#!/usr/bin/env bash
# Sets everything up (tools/setup.sh), then runs every test: GoogleTest (runtime, scheduler) and pytest
# (backend: OpInfo comparison, training against CPU, plan cache, out-of-memory, the example).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# The machine, so that a result that depends on it (a BLAS's summation order, the thread count) can be told
# apart in a CI log from one that depends on the code.
echo "[test] $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
python3 -c 'import torch; print("[test] torch", torch.__version__, "CPU capability", torch.backends.cpu.get_cpu_capability(), "threads", torch.get_num_threads())'
ctest --test-dir build --output-on-failure
python3 -m pytest tests/python -q -p no:cacheprovider "$@"
