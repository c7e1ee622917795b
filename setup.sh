#!/usr/bin/env bash
# Set up colorize in ./.venv, then run the given command inside it.
#   ./setup.sh colorize demo                 # install, then colorize the built-in samples
#   ./setup.sh --test python -m pytest       # install with test tools, then run the tests
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; shift; fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  # System site-packages stay visible, so a CUDA torch the machine already has is used as is.
  "$py" -m venv --system-site-packages .venv
fi
export PATH="$PWD/.venv/bin:$PATH"
pipq() { python -m pip install --disable-pip-version-check -q "$@"; }

if ! python -c "import torch" 2>/dev/null; then
  # Pinned so that pip takes the CPU build where one is provided locally rather than resolving
  # a newer release and its gigabytes of CUDA wheels; on a GPU machine PyPI's 2.13.0 is CUDA.
  pipq "torch==2.13.0"
fi
stamp=".venv/.colorize-installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pipq -e ".$extras"
  touch "$stamp"
fi

[ "$#" -gt 0 ] && exec "$@"
