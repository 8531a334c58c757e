#!/usr/bin/env bash
# ferry with a local S3, in one command: starts LocalStack, builds ferry, creates a bucket and a
# sample folder, starts `ferry serve` on 127.0.0.1:8080, creates an upload job and follows it to
# COMPLETED. ferry then keeps running (Ctrl-C stops it); with --once it stops after the job.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[[ "${1:-}" == "--once" ]] && once=true
PORT="${FERRY_PORT:-8080}"
S3_PORT="${LOCALSTACK_PORT:-4566}"
CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
WORK="$CACHE/quickstart"
BUCKET="ferry-demo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting LocalStack (S3 on 127.0.0.1:$S3_PORT)"
LOCALSTACK_PORT="$S3_PORT" scripts/localstack.sh start

say "building ferry"
cargo build --release --quiet
FERRY="$PWD/target/release/ferry"

say "creating bucket $BUCKET and a sample folder $WORK/data"
# LocalStack does not check signatures, so a plain PUT creates the bucket.
curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/$BUCKET" >/dev/null || true
mkdir -p "$WORK/data/logs/2026" "$WORK/data/reports"
echo "hello from ferry" >"$WORK/data/hello.txt"
for i in 1 2 3; do echo "line $i of a log" >"$WORK/data/logs/2026/app-$i.log"; done
head -c $((12 * 1024 * 1024)) /dev/urandom >"$WORK/data/reports/big.bin" # 3 parts of 5 MiB
rm -f "$WORK"/ferry.db*

say "starting ferry serve on 127.0.0.1:$PORT (log: $WORK/ferry.log)"
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" FERRY_S3_FORCE_PATH_STYLE=true \
  FERRY_LISTEN="127.0.0.1:$PORT" FERRY_DATABASE_URL="$WORK/ferry.db" FERRY_LOG_FORMAT=text \
  "$FERRY" serve >"$WORK/ferry.log" 2>&1 &
FERRY_PID=$!
trap 'kill -TERM $FERRY_PID 2>/dev/null; wait $FERRY_PID 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

say "POST /uploads/"
echo "curl -X POST http://127.0.0.1:$PORT/uploads/ -d '{\"source_folder\": \"$WORK/data\", \"destination_bucket\": \"$BUCKET\"}'"
answer=$(curl -fsS -X POST "http://127.0.0.1:$PORT/uploads/" \
  -d "{\"source_folder\": \"$WORK/data\", \"destination_bucket\": \"$BUCKET\"}")
echo "$answer"
id=$(echo "$answer" | sed -E 's/.*"upload_id":"([^"]+)".*/\1/')

say "GET /uploads/$id until it settles"
for _ in $(seq 1 300); do
  job=$(curl -fsS "http://127.0.0.1:$PORT/uploads/$id")
  echo "$job" | grep -Eo '"(state|progress|completed_files|total_files)":[^,]+' | paste -sd' '
  echo "$job" | grep -Eq '"state":"(COMPLETED|FAILED)"' && break
  sleep 0.2
done

say "GET /uploads/$id/files"
curl -fsS "http://127.0.0.1:$PORT/uploads/$id/files" | sed 's/},{/},\n{/g'
echo
say "objects in s3://$BUCKET/$id/"
curl -fsS "http://127.0.0.1:$S3_PORT/$BUCKET?list-type=2&prefix=$id/" | grep -Eo '<Key>[^<]+</Key>|<Size>[0-9]+</Size>' | sed 's/<[^>]*>//g' | paste - - | awk '{ printf "%-70s %12s\n", $1, $2 }'

echo "$job" | grep -q '"state":"COMPLETED"' || { echo "the job did not complete; see $WORK/ferry.log"; exit 1; }
if $once; then exit 0; fi
say "ferry keeps running on http://127.0.0.1:$PORT (the dashboard: /ui/, the API: /openapi.json); Ctrl-C stops it"
wait $FERRY_PID
