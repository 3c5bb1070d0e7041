#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): one GPU, under 8 minutes, prints a table.
#   benchmarks/gpu_check.sh              # on a GPU machine
#   benchmarks/gpu_check.sh --dry-run    # the same on the CPU at toy sizes (under 4 minutes)
# Extra arguments go to gpu_check.py (--sections a,b,c, --json FILE). PYTHON picks the
# interpreter (default: the repo's .venv, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
limit=480
for arg in "$@"; do
  if [[ "$arg" == "--dry-run" ]]; then limit=240; fi
done

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" TOKENIZERS_PARALLELISM=false
exec timeout --kill-after=20 "$limit" "$py" benchmarks/gpu_check.py "$@"
