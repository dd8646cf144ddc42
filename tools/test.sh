#!/usr/bin/env bash
# Sets everything up (tools/setup.sh), then runs every test: GoogleTest (runtime, scheduler) and pytest
# (backend: OpInfo comparison, training against CPU, plan cache, out-of-memory, the example).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ctest --test-dir build --output-on-failure
python3 -m pytest tests/python -q -p no:cacheprovider "$@"
