#!/usr/bin/env bash
# What durability costs: the time ferry spends recording parts in SQLite (cargo bench --bench
# durability) against the time of a real 1 GiB upload to LocalStack (release build, default
# settings, POST to COMPLETED, median of 3). The part writes sit on the upload's critical path
# (each part is recorded before the next is read), so their time is what the upload would save
# without them.
set -euo pipefail
cd "$(dirname "$0")/.."
S3_PORT="${LOCALSTACK_PORT:-4566}"
scripts/localstack.sh start >/dev/null 2>&1
cargo build --release --quiet
FERRY="$PWD/target/release/ferry"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
head -c $((1024 * 1024 * 1024)) /dev/urandom >"$WORK/src/big.bin"

upload_seconds() {
  local port bucket id start end state pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bucket="durability-$RANDOM-$RANDOM"
  curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/$bucket" >/dev/null
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" FERRY_S3_FORCE_PATH_STYLE=true \
    FERRY_LISTEN="127.0.0.1:$port" FERRY_DATABASE_URL="$WORK/$bucket.db" FERRY_LOG=warn \
    "$FERRY" serve 2>"$WORK/$bucket.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  start=$(date +%s.%N)
  id=$(curl -fsS -X POST "http://127.0.0.1:$port/uploads/" \
    -d "{\"source_folder\": \"$WORK/src\", \"destination_bucket\": \"$bucket\"}" | sed -E 's/.*"upload_id":"([^"]+)".*/\1/')
  while :; do
    state=$(curl -fsS "http://127.0.0.1:$port/uploads/$id" | grep -Eo '"state":"[A-Z_]+"' | cut -d'"' -f4)
    [[ "$state" == COMPLETED || "$state" == FAILED ]] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  [[ "$state" == COMPLETED ]] || { echo "upload $state; see $WORK/$bucket.log" >&2; exit 1; }
  awk "BEGIN {print $end - $start}"
}

runs=$(for _ in 1 2 3; do upload_seconds; done | sort -n)
median=$(echo "$runs" | sed -n 2p)
writes=$(cargo bench --quiet --bench durability 2>/dev/null | tee /dev/stderr | sed -n 's/^DURABILITY_MS=//p')
echo "1 GiB upload, POST to COMPLETED: runs $(echo $runs | tr '\n' ' ')s; median ${median} s"
awk -v w="$writes" -v t="$median" 'BEGIN {
  printf "per-part database writes: %.1f ms = %.2f %% of the upload (throughput %.1f MiB/s with them, %.1f MiB/s without)\n",
    w, 100 * w / (t * 1000), 1024 / t, 1024 / (t - w / 1000) }'
