#!/usr/bin/env bash
# The cost of a resync (drift repair) of a job of many objects: ferry (release) uploads N tiny
# files to LocalStack, then POST /uploads/{id}/resync lists the job's prefix and compares it with
# the records. Prints the ListObjectsV2 requests (pages) and the time of the resync, on loopback
# and through a proxy that adds a round trip of RTT_MS, as a Markdown table.
#
#   scripts/bench-resync.sh [FILES] [RTT_MS ...]     # default: 100000 files, 0 and 50 ms
set -euo pipefail
cd "$(dirname "$0")/.."
FILES="${1:-100000}"
shift || true
RTTS=("${@:-0 50}")
source scripts/lib.sh

python3 - "$WORK/src" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06}.txt"), "w") as f:
        f.write(f"{i}\n")
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bucket="resync-$RANDOM-$RANDOM"
curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/$bucket" >/dev/null
start_ferry() { # start_ferry ENDPOINT
  env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="$1" FERRY_S3_FORCE_PATH_STYLE=true FERRY_SETTLE_TIME=0s \
    FERRY_LISTEN="127.0.0.1:$port" FERRY_DATABASE_URL="$WORK/ferry.db" FERRY_RESYNC_INTERVAL=off \
    FERRY_CONCURRENCY=32 FERRY_LOG=info FERRY_LOG_FORMAT=text "$FERRY" serve 2>>"$WORK/ferry.log" &
  FERRY_PID=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "ferry did not start" >&2; exit 1
}
start_ferry "http://127.0.0.1:$S3_PORT"
id=$(curl -fsS -X POST "http://127.0.0.1:$port/uploads/" \
  -d "{\"source_folder\": \"$WORK/src\", \"destination_bucket\": \"$bucket\"}" | sed -E 's/.*"upload_id":"([^"]+)".*/\1/')
until curl -fsS "http://127.0.0.1:$port/uploads/$id" | grep -q '"state":"COMPLETED"'; do sleep 1; done
kill -TERM "$FERRY_PID"; wait "$FERRY_PID" || true

echo "| objects | round trip | ListObjectsV2 requests | resync time | ferry peak RSS |"
echo "| --- | --- | --- | --- | --- |"
for rtt in ${RTTS[*]}; do
  endpoint="http://127.0.0.1:$S3_PORT"
  proxy=""
  if [[ "$rtt" != 0 ]]; then
    pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    python3 scripts/bench/latency_proxy.py --listen "127.0.0.1:$pport" --upstream "127.0.0.1:$S3_PORT" --rtt-ms "$rtt" &
    proxy=$!
    sleep 0.5
    endpoint="http://127.0.0.1:$pport"
  fi
  : >"$WORK/ferry.log"
  start_ferry "$endpoint"
  curl -fsS -X POST "http://127.0.0.1:$port/uploads/$id/resync" >/dev/null
  until grep -q "resync done" "$WORK/ferry.log"; do sleep 0.2; done
  line=$(grep "resync done" "$WORK/ferry.log" | tail -1)
  pages=$(sed -E 's/.*pages=([0-9]+).*/\1/' <<<"$line")
  ms=$(sed -E 's/.*elapsed_ms=([0-9]+).*/\1/' <<<"$line")
  listed=$(sed -E 's/.*listed=([0-9]+).*/\1/' <<<"$line")
  grep -q "missing=0 changed=0" <<<"$line" || { echo "drift found where there is none: $line" >&2; exit 1; }
  rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$FERRY_PID/status")
  printf '| %s | %s ms | %s | %.1f s | %s MiB |\n' "$listed" "$rtt" "$pages" "$(awk "BEGIN {print $ms / 1000}")" "$rss"
  kill -TERM "$FERRY_PID"; wait "$FERRY_PID" || true
  [[ -n "$proxy" ]] && kill "$proxy" 2>/dev/null || true
done
