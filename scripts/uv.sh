#!/usr/bin/env bash
# Runs the pinned uv (scripts/uv-requirements.txt, hashes checked) from .tools/uv, installing it first.
# uv is what installs uv.lock into .venv; it never downloads a Python of its own here: it uses $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' scripts/uv-requirements.txt)
have=$(.tools/uv/bin/uv --version 2>/dev/null | cut -d' ' -f2 || true)
if [ "$have" != "$want" ]; then
  echo "setup: installing uv $want into .tools/uv" >&2
  rm -rf .tools/uv
  "$PY" -m venv .tools/uv
  .tools/uv/bin/pip install -q --disable-pip-version-check --require-hashes -r scripts/uv-requirements.txt
fi
export UV_PYTHON_DOWNLOADS=never UV_PYTHON="$PY" UV_PROJECT_ENVIRONMENT=.venv
exec .tools/uv/bin/uv "$@"
