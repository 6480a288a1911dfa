#!/usr/bin/env bash
# Refresh constraints.txt (the versions the suite passes with) to today's releases, then run the suite.
#
#     bash scripts/lock.sh            # re-resolve everything to the newest releases pyproject.toml allows
#     bash scripts/lock.sh --keep     # only re-resolve what pyproject.toml changed (keep other pins)
#
# uv resolves pyproject.toml's ranges (every extra) for Python 3.11 into exact pins; the README's two
# commands and .ci/run install with `pip install -c constraints.txt`, so a fresh clone gets exactly
# these versions. Commit constraints.txt only when the suite it ran passed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q uv
upgrade=(--upgrade)
[[ "${1:-}" == "--keep" ]] && upgrade=()
.venv/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 "${upgrade[@]}" \
    --custom-compile-command "bash scripts/lock.sh" -o constraints.txt
bash .ci/run
