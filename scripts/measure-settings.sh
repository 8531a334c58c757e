#!/usr/bin/env bash
# Rough figures behind the README's decisions on part size and concurrency: the time from
# POST /uploads to COMPLETED on a running ferry (release build) against LocalStack, and ferry's
# peak RSS. Not a benchmark against other tools; one run per setting, so read them as a shape.
#
#   scripts/measure-settings.sh            # prints a Markdown table
set -euo pipefail
cd "$(dirname "$0")/.."
S3_PORT="${LOCALSTACK_PORT:-4566}"
scripts/localstack.sh start >/dev/null 2>&1
cargo build --release --quiet
FERRY="$PWD/target/release/ferry"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/large" "$WORK/small"
head -c $((256 * 1024 * 1024)) /dev/urandom >"$WORK/large/file.bin"
for i in $(seq 1 500); do head -c 16384 /dev/urandom >"$WORK/small/f$i.bin"; done

run() { # run NAME FOLDER CHUNK CONCURRENCY
  local name="$1" folder="$2" chunk="$3" conc="$4" port bucket id start end state pid rss
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bucket="measure-$RANDOM-$RANDOM"
  curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/$bucket" >/dev/null
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" FERRY_S3_FORCE_PATH_STYLE=true \
    FERRY_LISTEN="127.0.0.1:$port" FERRY_DATABASE_URL="$WORK/$bucket.db" FERRY_LOG=warn \
    FERRY_CHUNK_SIZE="$chunk" FERRY_CONCURRENCY="$conc" "$FERRY" serve 2>"$WORK/$bucket.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  start=$(date +%s.%N)
  id=$(curl -fsS -X POST "http://127.0.0.1:$port/uploads/" \
    -d "{\"source_folder\": \"$folder\", \"destination_bucket\": \"$bucket\"}" | sed -E 's/.*"upload_id":"([^"]+)".*/\1/')
  while :; do
    state=$(curl -fsS "http://127.0.0.1:$port/uploads/$id" | grep -Eo '"state":"[A-Z_]+"' | cut -d'"' -f4)
    [[ "$state" == COMPLETED || "$state" == FAILED ]] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  printf '| %s | %s | %s | %s | %.2f s | %s MiB |\n' "$name" "$chunk" "$conc" "$state" "$(awk "BEGIN {print $end - $start}")" "$rss"
}

echo "| workload | FERRY_CHUNK_SIZE | FERRY_CONCURRENCY | state | POST to COMPLETED | ferry peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for chunk in 5MiB 8MiB 16MiB 32MiB; do run "one 256 MiB file" "$WORK/large" "$chunk" 5; done
for conc in 1 5 10 20; do run "500 files of 16 KiB" "$WORK/small" 5MiB "$conc"; done
