#!/usr/bin/env bash
# Rough figures behind the decisions (docs/decisions.md) on part size and concurrency: the time from
# POST /uploads to COMPLETED on a running ferry (release build) against LocalStack, and ferry's
# peak RSS. Not a benchmark against other tools; one run per setting, so read them as a shape.
#
#   scripts/measure-settings.sh            # prints a Markdown table
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p "$WORK/large" "$WORK/small"
head -c $((256 * 1024 * 1024)) /dev/urandom >"$WORK/large/file.bin"
for i in $(seq 1 500); do head -c 16384 /dev/urandom >"$WORK/small/f$i.bin"; done

source scripts/lib.sh

run() { # run NAME FOLDER CHUNK CONCURRENCY
  local seconds state rss
  read -r seconds state rss < <(time_job "$2" FERRY_CHUNK_SIZE="$3" FERRY_CONCURRENCY="$4")
  printf '| %s | %s | %s | %s | %.2f s | %s MiB |\n' "$1" "$3" "$4" "$state" "$seconds" "$rss"
}

echo "| workload | FERRY_CHUNK_SIZE | FERRY_CONCURRENCY | state | POST to COMPLETED | ferry peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for chunk in 5MiB 8MiB 16MiB 32MiB; do run "one 256 MiB file" "$WORK/large" "$chunk" 5; done
for conc in 1 5 10 20; do run "500 files of 16 KiB" "$WORK/small" 5MiB "$conc"; done
