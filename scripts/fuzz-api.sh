#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis (from PyPI, in a cached
# venv): every operation, every check (no 5xx, status codes, content types, bodies matching the
# document, schema-valid requests accepted, invalid ones refused, the token required). The run
# is bounded: FUZZ_MAX_EXAMPLES cases per operation (default 100) and FUZZ_MAX_TIME seconds.
#
# It starts its own `ferry serve` (debug build) with a fresh database, a token, and
# FERRY_ALLOWED_ROOTS set to a scratch folder, so that fuzzed jobs cannot read the machine;
# S3 is the LocalStack of scripts/localstack.sh. Exits non-zero on any failure, and when ferry
# did not survive the run.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="4.32.5"
CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
VENV="$CACHE/schemathesis-$VERSION"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
MAX_TIME="${FUZZ_MAX_TIME:-120}"

log() { echo "fuzz-api.sh: $*" >&2; }

source scripts/python.sh

source scripts/venv.sh
ensure_venv "$VENV" find_python "schemathesis==$VERSION"

scripts/localstack.sh start
cargo build --quiet --locked

work="$(mktemp -d)"
ferry_pid=""
cleanup() {
  [[ -n "$ferry_pid" ]] && kill "$ferry_pid" 2>/dev/null && wait "$ferry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/root/data/nested"
echo "one" > "$work/root/data/one.txt"
echo "two" > "$work/root/data/nested/two.log"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="fuzz-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

env -u FERRY_MANIFESTS_DIR \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="${FERRY_TEST_S3_ENDPOINT:-http://127.0.0.1:4566}" AWS_EC2_METADATA_DISABLED=true \
  FERRY_S3_FORCE_PATH_STYLE=true FERRY_LISTEN="127.0.0.1:$port" \
  DATABASE_URL="sqlite://$work/ferry.db" FERRY_API_TOKEN="$token" \
  FERRY_ALLOWED_ROOTS="$work/root" FERRY_SETTLE_TIME=0s FERRY_LOG=warn \
  target/debug/ferry serve > "$work/ferry.log" 2>&1 &
ferry_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# A job with files, so that GET /uploads answers with a real job to check against the document.
curl -fsS -X PUT "$base/uploads/fuzz-job" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' \
  -d "{\"source_folder\": \"$work/root/data\", \"destination_bucket\": \"fuzz-bucket\"}" >/dev/null

log "fuzzing $base/openapi.json: at most $MAX_EXAMPLES cases per operation, ${MAX_TIME}s"
status=0
"$VENV/bin/st" --config-file tests/fuzz/schemathesis.toml run "$base/openapi.json" \
  -H "Authorization: Bearer $token" \
  --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" --workers 2 --seed "${FUZZ_SEED:-20261128}" \
  --report junit --report-dir "${FUZZ_REPORT_DIR:-target/fuzz-api}" || status=$?

if ! kill -0 "$ferry_pid" 2>/dev/null; then
  log "ferry died during the run; its log:"
  cat "$work/ferry.log" >&2
  exit 1
fi
if grep -q '"level":"ERROR"\|panicked' "$work/ferry.log"; then
  log "ferry logged errors during the run:"
  grep '"level":"ERROR"\|panicked' "$work/ferry.log" | head -20 >&2
  status=1
fi
exit "$status"
