#!/usr/bin/env bash
# The dashboard in a real browser: Debian's Chromium and ChromeDriver (installed when missing),
# driven by selenium (from PyPI, in a cached venv), against a real `ferry serve` (debug build,
# run as the unprivileged user nobody so that a file it may not read fails for real) with a
# token, a fresh database and LocalStack's S3 (scripts/localstack.sh).
#
#   scripts/check-ui.sh              # the tests; a screenshot goes to target/ui/
#   UI_SCREENSHOT=docs/dashboard.png scripts/check-ui.sh   # and refreshes the README's picture
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="4.50.0"
CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
VENV="$CACHE/selenium-$VERSION"

log() { echo "check-ui.sh: $*" >&2; }

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing Debian's chromium and chromium-driver"
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
source scripts/venv.sh
ensure_venv "$VENV" system_python "selenium==$VERSION"

scripts/localstack.sh start
cargo build --quiet --locked
exec "$VENV/bin/python" tests/ui/test_dashboard.py
