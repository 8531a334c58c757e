#!/usr/bin/env bash
# A local S3 without Docker: LocalStack 4.14 from PyPI, in a cached virtualenv.
#
#   scripts/localstack.sh install   create the venv (once; later calls reuse it)
#   scripts/localstack.sh start     install if needed, start on $LOCALSTACK_PORT, wait until S3 is up
#   scripts/localstack.sh stop      stop the one this script started
#   scripts/localstack.sh status    exit 0 when S3 answers on the port
#   scripts/localstack.sh pid       print the pid of the one this script started, if it runs
#   scripts/localstack.sh pins      print the pip requirements it installs (for check-docker.sh)
#   scripts/localstack.sh venv      install if needed, and print the venv's folder
#
# Settings (environment): LOCALSTACK_PORT (4566), FERRY_CACHE_DIR (~/.cache/ferry),
# LOCALSTACK_PYTHON (a python3.13, else 3.12, found on PATH or under pyenv).
set -euo pipefail

PORT="${LOCALSTACK_PORT:-4566}"
CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
VERSION="4.14.0"
PINS=("localstack-core[runtime]==${VERSION}" "cryptography<44" "pyopenssl<24.3" "service_identity<24.2" "cbor2<5.7")
VENV="$CACHE/localstack-$VERSION"
RUN="$CACHE/localstack-run-$PORT"
HEALTH="http://127.0.0.1:$PORT/_localstack/health"

log() { echo "localstack.sh: $*" >&2; }

source "$(dirname "$0")/venv.sh"

find_python() {
  if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then echo "$LOCALSTACK_PYTHON"; return; fi
  # LocalStack 4.14 imports warnings.deprecated, which Python 3.13 has (3.12 has not).
  local root="" candidate
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for candidate in ${root:+$root/versions/3.13*/bin/python3} python3.13 python3; do
    candidate="$(command -v "$candidate" 2>/dev/null || true)"
    [[ -n "$candidate" ]] || continue
    # A pyenv shim may exist and still fail to run: ask the interpreter itself.
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  log "no Python 3.13 found: install one (pyenv install 3.13) or set LOCALSTACK_PYTHON"
  exit 1
}

install() { ensure_venv "$VENV" find_python "${PINS[@]}"; }

s3_up() {
  curl -fsS --max-time 2 "$HEALTH" 2>/dev/null | grep -Eq '"s3": *"(available|running)"'
}

start() {
  if s3_up; then log "S3 already answers on port $PORT"; return; fi
  install
  mkdir -p "$RUN/volume"
  log "starting LocalStack on 127.0.0.1:$PORT (log: $RUN/localstack.log)"
  (
    cd "$RUN"
    GATEWAY_LISTEN="127.0.0.1:$PORT" SERVICES=s3 LOCALSTACK_VOLUME_DIR="$RUN/volume" \
      DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
      nohup "$VENV/bin/python" -m localstack.runtime.main >"$RUN/localstack.log" 2>&1 &
    echo $! >"$RUN/pid"
  )
  for _ in $(seq 1 120); do
    if s3_up; then
      # "available" is not loaded yet: LocalStack loads S3 on its first request, which then
      # takes seconds. One ListBuckets here, so that the tests' first requests (and a 1 s
      # readiness probe) do not pay for it.
      # (Without an S3 Authorization header the request is LocalStack's own, and loads nothing.)
      curl -fsS --max-time 60 -o /dev/null \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0" \
        "http://127.0.0.1:$PORT/" 2>/dev/null || true
      log "S3 is up on port $PORT"
      return
    fi
    if ! kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      log "LocalStack exited; its log:"; tail -n 40 "$RUN/localstack.log" >&2; exit 1
    fi
    sleep 1
  done
  log "LocalStack did not become ready in 120 s; its log:"; tail -n 40 "$RUN/localstack.log" >&2
  exit 1
}

stop() {
  if [[ -f "$RUN/pid" ]]; then
    local pid; pid="$(cat "$RUN/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/pid"
    log "stopped"
  else
    log "no LocalStack started by this script on port $PORT"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) s3_up ;;
  pins) echo "${PINS[*]}" ;;
  venv) install; echo "$VENV" ;;
  pid) [[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null && cat "$RUN/pid" ;;
  *) echo "usage: $0 install|start|stop|status|pid|pins|venv" >&2; exit 2 ;;
esac
