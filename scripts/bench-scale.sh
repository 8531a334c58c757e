#!/usr/bin/env bash
# ferry at scale, one command: one job of a million files against s5cmd cp and rclone copy, and
# ten thousand jobs beside one large one (scripts/bench/scale.py says what is measured).
#
#   scripts/bench-scale.sh --files 1000000                 # a million files; s5cmd and rclone too
#   scripts/bench-scale.sh --files 100000 --peers ''       # ferry alone
#   scripts/bench-scale.sh --jobs 10000 --big-files 100000 # ten thousand jobs of ten files
#   scripts/bench-scale.sh --files 1000000 --peers rclone --peers-only   # one peer, no ferry
#
# The trees are made once under /tmp/ferry-bench/data and kept; objects go to rclone serve s3
# on /dev/shm. Results: a summary on stdout, JSON and Markdown under target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench/tools.sh
exec python3 scripts/bench/scale.py --tools "$VENV/bin" "$@"
