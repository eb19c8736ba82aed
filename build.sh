#!/usr/bin/env bash
# secretcache build entry point.
#   ./build.sh          build dist/secretcache-layer.zip
#   ./build.sh test     set up .venv and run the whole test suite
#   ./build.sh demo     run the example function on the local Lambda emulator against moto
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV="$ROOT/.venv"

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(cat requirements-dev.txt extension/requirements.txt | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "== setting up $VENV (pinned requirements)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
    | grep -v 'is ignored: it is neither a file nor a directory' >&2 || true
  "$VENV/bin/python" -c 'import aiohttp, aiobotocore, moto, pytest' \
    || { echo "build.sh: dependency install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
}

cmd=${1:-layer}
case "$cmd" in
  setup) ensure_venv ;;
  test)
    ensure_venv
    shift || true
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *) echo "usage: ./build.sh [layer|test|demo|setup]" >&2; exit 2 ;;
esac
