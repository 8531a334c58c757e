#!/usr/bin/env bash
# The container, run for real: builds ferry's Dockerfile as it is, runs the image the way the
# chart and Compose do (uid 10001, a read-only root filesystem) against LocalStack, and runs
# docker-compose.yml, on a Docker engine this script starts for itself.
#
#   scripts/check-docker.sh           the whole check (root; about 10 min the first time, when it
#                                     builds the base images, and less once they are cached)
#   scripts/check-docker.sh --clean   stop here and delete the engine's cached images and state
#
# What it does, in order:
#   1. installs Debian's docker.io, docker-compose and debootstrap if they are missing;
#   2. starts dockerd on a socket of its own with --bridge=none --iptables=false, so that
#      containers only ever use the host's network (every container runs with --network host);
#   3. builds local stand-ins for the base images, which cannot be pulled here, tagged as the
#      Dockerfile and docker-compose.yml name them (users with a registry pull the real ones):
#      debian:bookworm-slim from debootstrap; rust:1.95-slim-bookworm from it plus this machine's
#      Rust toolchain; localstack/localstack:4.14 from it plus LocalStack 4.14 from PyPI;
#   4. `docker build` of the Dockerfile (the classic builder: BuildKit would fetch the syntax
#      frontend from a registry);
#   5. runs the image as uid 10001 with --read-only on the host's network against LocalStack
#      (scripts/localstack.sh, on loopback): the image's HEALTHCHECK must turn healthy, a job must
#      reach COMPLETED with its objects in the bucket, and SIGTERM must stop it with exit 0;
#   6. validates docker-compose.yml with docker-compose (Debian's), then runs it with
#      scripts/docker/compose.host-network.yml over it, with the image of step 4 as ferry's: the
#      stand-in LocalStack must create the bucket from its init hook, ferry must turn healthy,
#      the demo job must reach COMPLETED, and ferry must stop with exit 0;
#   7. stops every container and the engine it started.
# Each step prints its time. Settings: FERRY_CACHE_DIR (~/.cache/ferry) holds the engine's state.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}/docker"
RUN_DIR=/run/ferry-check-docker
export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
DOCKER=/usr/bin/docker # Debian's client, of the same release as its engine
PROJECT=ferrycheck
S3_PORT="${LOCALSTACK_PORT:-4566}"
S3="http://127.0.0.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

STARTED=$(date +%s)
step() { echo "check-docker: [$(($(date +%s) - STARTED)) s] $*" >&2; }
die() { echo "check-docker: FAILED: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "dockerd needs root"

# The container's HEALTHCHECK says healthy.
healthy() { [[ $($DOCKER inspect -f '{{.State.Health.Status}}' "$1") == healthy ]]; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for the command in the remaining arguments to succeed.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what: not within $seconds s"
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    step "installing ${missing[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
}

start_engine() {
  mkdir -p "$RUN_DIR" "$CACHE"
  if $DOCKER info >/dev/null 2>&1; then step "dockerd already runs on $DOCKER_HOST"; return; fi
  step "starting dockerd (--bridge=none --iptables=false; log: $CACHE/dockerd.log)"
  dockerd --bridge=none --iptables=false --ip6tables=false \
    --data-root "$CACHE/root" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
    --host "$DOCKER_HOST" >"$CACHE/dockerd.log" 2>&1 &
  echo $! >"$RUN_DIR/ours"
  wait_for "dockerd answers" 60 $DOCKER info
}

stop_engine() {
  if [[ -f "$RUN_DIR/ours" ]]; then
    local pid; pid=$(cat "$RUN_DIR/ours")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    rm -f "$RUN_DIR/ours"
  fi
}

cleanup() {
  local rc=$?
  if $DOCKER info >/dev/null 2>&1; then
    $DOCKER rm -f ferry-check >/dev/null 2>&1 || true
    if [[ -f "${WORK:-}/merged.yml" ]]; then
      docker-compose -p "$PROJECT" -f "$WORK/merged.yml" down -v >/dev/null 2>&1 || true
    fi
    $DOCKER volume rm ferry-check-data >/dev/null 2>&1 || true
  fi
  stop_engine
  rm -rf "${WORK:-}"
  if ((rc == 0)); then step "passed"; else step "failed (rc $rc)"; fi
}

if [[ "${1:-}" == "--clean" ]]; then
  stop_engine
  rm -rf "$CACHE"
  echo "check-docker: removed $CACHE"
  exit 0
fi

install_packages
WORK=$(mktemp -d)
trap cleanup EXIT
start_engine

# --- 3. the base images -------------------------------------------------------------------------
# The machine's CA bundle: it reaches the registries through a proxy with a CA of its own.
cp /etc/ssl/certs/ca-certificates.crt "$WORK/host-ca-certificates.crt"

if ! $DOCKER image inspect debian:bookworm-slim >/dev/null 2>&1; then
  step "debootstrap bookworm (minbase) for debian:bookworm-slim"
  rootfs="$CACHE/rootfs-bookworm"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap"; }
  # Sources and cleanliness as in the real image: updates and security, no package lists kept.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | $DOCKER import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
fi

if ! $DOCKER image inspect rust:1.95-slim-bookworm >/dev/null 2>&1; then
  sysroot=$(rustc --print sysroot)
  step "rust:1.95-slim-bookworm from debian:bookworm-slim and $sysroot ($(rustc --version))"
  ctx="$WORK/rust-builder"
  mkdir -p "$ctx"
  cp "$WORK/host-ca-certificates.crt" "$ctx/"
  # A hard-linked copy where the file system allows it: the toolchain is over a GiB.
  cp -al "$sysroot" "$ctx/toolchain" 2>/dev/null || cp -a "$sysroot" "$ctx/toolchain"
  rm -rf "$ctx/toolchain/share/doc"
  $DOCKER build -q --network host -t rust:1.95-slim-bookworm -f scripts/docker/rust-builder.Dockerfile "$ctx" >/dev/null
  rm -rf "$ctx"
fi

if ! $DOCKER image inspect localstack/localstack:4.14 >/dev/null 2>&1; then
  venv=$(scripts/localstack.sh venv)
  python_home=$("$venv/bin/python3" -c 'import sys; print(sys.base_prefix)')
  step "localstack/localstack:4.14 from debian:bookworm-slim, Python at $python_home and LocalStack from PyPI"
  ctx="$WORK/localstack"
  mkdir -p "$ctx"
  cp "$WORK/host-ca-certificates.crt" "$ctx/"
  cp -al "$python_home" "$ctx/python" 2>/dev/null || cp -a "$python_home" "$ctx/python"
  $DOCKER build -q --network host -t localstack/localstack:4.14 \
    --build-arg PYTHON_HOME="$python_home" --build-arg LOCALSTACK_PINS="$(scripts/localstack.sh pins)" \
    -f scripts/docker/localstack.Dockerfile "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# --- 4. the Dockerfile, as it is ---------------------------------------------------------------
step "docker build -t ferry:check . (the Dockerfile as it is)"
$DOCKER build --network host -t ferry:check . >"$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log" >&2; die "docker build"; }
step "built: $($DOCKER image inspect -f '{{.Size}}' ferry:check | awk '{printf "%.1f MiB", $1/1048576}')"
user=$($DOCKER image inspect -f '{{.Config.User}}' ferry:check)
[[ "$user" == 10001 ]] || die "the image runs as '$user', not 10001"

# --- 5. the image, run as the chart runs it ----------------------------------------------------
scripts/localstack.sh start >/dev/null 2>&1 || die "LocalStack did not start"
[[ -z "$(ss -ltnH 'sport = :8080')" ]] || die "127.0.0.1:8080 is taken: the image's HEALTHCHECK asks that port"
bucket="ferry-check-$RANDOM$RANDOM"
aws --endpoint-url "$S3" s3 mb "s3://$bucket" >/dev/null
step "docker run --user 10001 --read-only --network host, against LocalStack on $S3"
$DOCKER run -d --name ferry-check --network host --user 10001 --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges \
  -v ferry-check-data:/data -v "$PWD/examples/data:/srv/data:ro" \
  -e FERRY_LISTEN=127.0.0.1:8080 -e FERRY_ALLOWED_ROOTS=/srv/data \
  -e AWS_ENDPOINT_URL="$S3" -e AWS_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
  -e FERRY_S3_FORCE_PATH_STYLE=true \
  ferry:check >/dev/null
wait_for "the HEALTHCHECK turns healthy" 60 healthy ferry-check
step "healthy"
code=$(curl -sS -o "$WORK/put.json" -w '%{http_code}' -X PUT http://127.0.0.1:8080/uploads/check \
  -d "{\"source_folder\": \"/srv/data\", \"destination_bucket\": \"$bucket\"}")
[[ "$code" == 201 ]] || die "PUT /uploads/check answered $code: $(cat "$WORK/put.json")"
completed() { curl -fsS http://127.0.0.1:8080/uploads/check | grep -q '"state":"COMPLETED"'; }
wait_for "the job reaches COMPLETED" 60 completed
want=$(find examples/data -type f | wc -l)
have=$(aws --endpoint-url "$S3" s3 ls --recursive "s3://$bucket" | wc -l)
[[ "$have" == "$want" ]] || die "$have objects in the bucket, $want files in examples/data"
step "COMPLETED: $have objects in s3://$bucket"
# The root file system refuses writes even from root: all ferry wrote went to /data (and /tmp).
refused=$($DOCKER exec -u 0 ferry-check touch /probe 2>&1 || true)
[[ "$refused" == *"Read-only file system"* ]] || die "the root file system took a write: '$refused'"
$DOCKER stop -t 30 ferry-check >/dev/null
exit_code=$($DOCKER inspect -f '{{.State.ExitCode}}' ferry-check)
[[ "$exit_code" == 0 ]] || { $DOCKER logs --tail 20 ferry-check >&2; die "SIGTERM: exit $exit_code"; }
# (The log is read whole first: grep -q ends early, and pipefail would count the writer's SIGPIPE.)
logged=$($DOCKER logs ferry-check 2>&1)
[[ "$logged" == *"stopping: no new work is taken"* ]] \
  || { $DOCKER logs --tail 20 ferry-check >&2; die "SIGTERM: exit 0, but its log does not say it stopped"; }
step "SIGTERM: it logged its orderly stop and exited 0"
$DOCKER rm ferry-check >/dev/null

# --- 6. docker-compose.yml ---------------------------------------------------------------------
step "docker-compose config ($(docker-compose version --short))"
docker-compose -f docker-compose.yml config -q || die "docker-compose.yml does not validate"
export CHECK_LOCALSTACK_PORT CHECK_FERRY_PORT
CHECK_LOCALSTACK_PORT=$(free_port)
CHECK_FERRY_PORT=$(free_port)
# The file with the override merged, less ferry's published port: docker-compose 1.29 refuses a
# port binding beside host networking, and an override can only add to a list, not empty it.
docker-compose -f docker-compose.yml -f scripts/docker/compose.host-network.yml config >"$WORK/merged.yml" \
  || die "the host-network override does not validate"
/usr/bin/python3 - "$WORK/merged.yml" <<'PY'
import sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
doc["services"]["ferry"].pop("ports", None)
yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
PY
compose=(docker-compose -p "$PROJECT" -f "$WORK/merged.yml")
step "docker-compose up (LocalStack on :$CHECK_LOCALSTACK_PORT, ferry on :$CHECK_FERRY_PORT)"
"${compose[@]}" up -d >"$WORK/compose.log" 2>&1 || { tail -n 40 "$WORK/compose.log" >&2; die "docker-compose up"; }
token="compose-demo-token-change-me"
demo() {
  curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$CHECK_FERRY_PORT/uploads/demo" \
    | grep -q '"state":"COMPLETED"'
}
if ! (wait_for "the demo job reaches COMPLETED" 180 demo); then
  "${compose[@]}" logs --tail 30 >&2
  die "compose: the demo job"
fi
have=$(aws --endpoint-url "http://127.0.0.1:$CHECK_LOCALSTACK_PORT" s3 ls --recursive s3://ferry-demo | wc -l)
[[ "$have" == "$want" ]] || die "compose: $have objects in ferry-demo, $want files in examples/data"
step "compose: demo COMPLETED, $have objects in s3://ferry-demo"
wait_for "compose: ferry healthy" 60 healthy "${PROJECT}_ferry_1"
"${compose[@]}" stop -t 30 ferry >/dev/null 2>&1
exit_code=$($DOCKER inspect -f '{{.State.ExitCode}}' "${PROJECT}_ferry_1")
[[ "$exit_code" == 0 ]] || die "compose: ferry stopped with exit $exit_code"
step "compose: ferry healthy, stopped with exit 0"
"${compose[@]}" down -v >/dev/null 2>&1
