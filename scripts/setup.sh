#!/usr/bin/env bash
# Create .venv and install agecheck's dependencies. Idempotent: a second run only checks.
#   bash scripts/setup.sh          runtime (app, train.py, CLI)
#   bash scripts/setup.sh --dev    + test and benchmark tools, and Debian's Chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
req=requirements.txt
[[ $dev == 1 ]] && req=requirements-dev.txt
echo "==> installing $req (torch is pinned to the CPU wheel; see README for GPUs)"
.venv/bin/python -m pip install --disable-pip-version-check -q -r "$req"

if [[ $dev == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "!! could not install chromium: browser tests will be skipped"
  else
    echo "!! chromium not found and cannot apt-get install it here: browser tests will be skipped"
  fi
fi
echo "==> ready: .venv/bin/python app.py | .venv/bin/python -m pytest"
