#!/usr/bin/env bash
# Sets everything up (tools/setup.sh), then trains the example GPT on device "moreh" with its logs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
python3 examples/train_gpt.py "$@"
