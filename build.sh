#!/usr/bin/env bash
# secretcache build entry point.
#   ./build.sh [layer]        build dist/secretcache-layer-{x86_64,arm64}.zip, each with its own
#                             Python (quick no-op when nothing changed); see layer/build_layer.py
#   ./build.sh update-debian  re-pin the bundled Python's Debian packages to the newest (security)
#                             versions (layer/python-debs.lock, layer/test-debs.lock), then build
#   ./build.sh debian-sources build, then download the bundled interpreter's Debian source
#                             packages into dist/debian-sources/ (attach them to a release)
#   ./build.sh test [args]    set up .venv, build the layer, run the test suite (pytest args pass through)
#   ./build.sh demo [args]    build the layer and run the example function on AWS's Lambda emulator (RIE)
#   ./build.sh local-invoke --code DIR --handler M.F [--endpoint URL] [--event FILE] ...
#                             your function with the layer on AWS's RIE, against moto or URL
#   ./build.sh bench [args]   build the layer and run the benchmarks (--quick: fewer samples); see bench/README.md
#   ./build.sh fleet [args]   fleet simulator: policies side by side, plot in dist/fleet.png
#                             (--help for options; --validate: against real extension processes)
#   ./build.sh sam-validate   sam validate --lint template.yaml (aws-sam-cli in its own venv .venv-sam)
#   ./build.sh setup          set up .venv only
#   ./build.sh sam-setup      set up .venv-sam only
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV="$ROOT/.venv"
SAM_VENV="$ROOT/.venv-sam"

# pip prints one harmless warning per package for find-links folders that do not exist here.
quiet_pip_noise() { grep -v 'is ignored: it is neither a file nor a directory' >&2 || true; }

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(cat requirements-dev.txt extension/requirements.txt | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "== setting up $VENV (pinned requirements)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
    | quiet_pip_noise
  "$VENV/bin/python" -c 'import aiohttp, aiobotocore, moto, pytest' \
    || { echo "build.sh: dependency install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
}

# aws-sam-cli pins its own boto3, so it gets a venv of its own.
ensure_sam_venv() {
  local stamp="$SAM_VENV/.requirements.sha256" want
  want=$(sha256sum < requirements-sam.txt | cut -d' ' -f1)
  if [ -x "$SAM_VENV/bin/sam" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "== setting up $SAM_VENV (aws-sam-cli, pinned)" >&2
  "$PYTHON" -m venv "$SAM_VENV"
  "$SAM_VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-sam.txt 2>&1 \
    | quiet_pip_noise
  "$SAM_VENV/bin/sam" --version >/dev/null \
    || { echo "build.sh: aws-sam-cli install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
}

build_layer() {
  ensure_venv
  "$VENV/bin/python" layer/build_layer.py "$@"
}

cmd=${1:-layer}
[ $# -gt 0 ] && shift
case "$cmd" in
  layer) build_layer "$@" ;;
  update-debian) build_layer --update-debian "$@" ;;
  debian-sources) build_layer --debian-sources "$@" ;;
  setup) ensure_venv ;;
  sam-setup) ensure_sam_venv ;;
  sam-validate)
    ensure_sam_venv
    SAM_CLI_TELEMETRY=0 exec "$SAM_VENV/bin/sam" validate --lint --region us-east-1 \
      --template-file "$ROOT/template.yaml" "$@"
    ;;
  test)
    # The end-to-end tests run the real zip; build it first (a no-op when nothing changed).
    build_layer >&2
    # The RIE tier runs AWS's emulator, which comes with aws-sam-cli (a no-op once installed).
    ensure_sam_venv
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  demo)
    build_layer >&2
    # AWS's emulator (RIE) comes with aws-sam-cli; without it the demo says so and uses ours.
    ( ensure_sam_venv ) || echo "build.sh: aws-sam-cli (RIE) could not be installed" >&2
    exec "$VENV/bin/python" -m tools.demo "$@"
    ;;
  local-invoke)
    build_layer >&2
    ensure_sam_venv
    exec "$VENV/bin/python" -m tools.local_invoke "$@"
    ;;
  bench)
    build_layer >&2
    exec "$VENV/bin/python" -m bench "$@"
    ;;
  fleet)
    ensure_venv
    PYTHONPATH="$ROOT/extension:$ROOT" exec "$VENV/bin/python" -m fleet "$@"
    ;;
  *) echo "usage: ./build.sh [layer|update-debian|debian-sources|test|demo|local-invoke|bench|fleet|sam-validate|setup|sam-setup]" >&2; exit 2 ;;
esac
