#!/usr/bin/env bash
# What durability costs: the time ferry spends recording parts in SQLite (cargo bench --bench
# durability) against the time of a real 1 GiB upload to LocalStack (release build, default
# settings, POST to COMPLETED, median of 3). The part writes sit on the upload's critical path
# (each part is recorded before the next is read), so their time is what the upload would save
# without them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
mkdir -p "$WORK/src"
head -c $((1024 * 1024 * 1024)) /dev/urandom >"$WORK/src/big.bin"

upload_seconds() {
  local seconds state rss
  read -r seconds state rss < <(time_job "$WORK/src")
  [[ "$state" == COMPLETED ]] || { echo "upload $state; see the logs in $WORK" >&2; exit 1; }
  echo "$seconds"
}

runs=$(for _ in 1 2 3; do upload_seconds; done | sort -n)
median=$(echo "$runs" | sed -n 2p)
writes=$(cargo bench --quiet --bench durability 2>/dev/null | tee /dev/stderr | sed -n 's/^DURABILITY_MS=//p')
echo "1 GiB upload, POST to COMPLETED: runs $(echo $runs | tr '\n' ' ')s; median ${median} s"
awk -v w="$writes" -v t="$median" 'BEGIN {
  printf "per-part database writes: %.1f ms = %.2f %% of the upload (throughput %.1f MiB/s with them, %.1f MiB/s without)\n",
    w, 100 * w / (t * 1000), 1024 / t, 1024 / (t - w / 1000) }'
