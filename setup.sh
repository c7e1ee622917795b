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

# The survey's browser test drives Debian's Chromium through Playwright (never `playwright install`).
if [ -n "$extras" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup.sh: installing Debian's chromium for the survey's browser test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null \
      || echo "setup.sh: warning: installing chromium failed; the survey's browser test cannot run" >&2
  else
    echo "setup.sh: note: /usr/bin/chromium is missing, so the survey's browser test will be skipped (apt-get install chromium)" >&2
  fi
fi

if [ "$#" -gt 0 ]; then exec "$@"; fi
