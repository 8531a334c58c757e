# Shared by the measuring scripts: a release ferry, LocalStack, a scratch folder, and timing one
# job on a fresh `ferry serve`. Sourced from the repository's root.

S3_PORT="${LOCALSTACK_PORT:-4566}"
scripts/localstack.sh start >/dev/null 2>&1
cargo build --release --quiet
FERRY="$PWD/target/release/ferry"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# time_job FOLDER [VAR=VALUE ...]: creates a bucket, starts ferry with the extra settings,
# creates a job over FOLDER, waits for it to settle, and prints "SECONDS STATE PEAK_RSS_MIB".
time_job() {
  local folder="$1" port bucket id start end state pid rss
  shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bucket="measure-$RANDOM-$RANDOM"
  curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/$bucket" >/dev/null
  env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" FERRY_S3_FORCE_PATH_STYLE=true \
    FERRY_LISTEN="127.0.0.1:$port" FERRY_DATABASE_URL="$WORK/$bucket.db" FERRY_LOG=warn \
    "$@" "$FERRY" serve 2>"$WORK/$bucket.log" &
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
  echo "$(awk "BEGIN {print $end - $start}") $state $rss"
}
