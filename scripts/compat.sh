#!/usr/bin/env bash
# The compatibility matrix: runs the scenario of tests/compat.rs (awkward names, empty files and
# files on part boundaries in every FERRY_CHECKSUM mode, a SIGKILL mid-multipart then resume, a
# change uploaded again, a deleted job's open upload aborted) against each S3 store in turn,
# each installed from the package registries and run on 127.0.0.1 by scripts/s3-stores.sh.
#
#   scripts/compat.sh                 all seven stores
#   scripts/compat.sh moto seaweedfs  these (CI runs LocalStack with the other tests, and these)
#
# Each store's log is in target/compat/STORE.log and the table of what it found in
# target/compat/matrix.md (COMPATIBILITY.md gives it with each store's quirks). Exits non-zero
# when a check failed on any store asked for.
set -euo pipefail
cd "$(dirname "$0")/.."

stores=("$@")
((${#stores[@]})) || stores=(localstack moto seaweedfs ministack rclone s3s-fs s3rver)
out=target/compat
mkdir -p "$out"
cargo test --no-run --quiet --test compat

failed=()
{
  echo "| store | check | result |"
  echo "| --- | --- | --- |"
} >"$out/matrix.md"
for store in "${stores[@]}"; do
  echo "compat.sh: $store" >&2
  if ! endpoint=$(scripts/s3-stores.sh start "$store"); then
    echo "| $store | start | FAILED: see target/compat/$store.log |" >>"$out/matrix.md"
    failed+=("$store")
    continue
  fi
  version=$(scripts/s3-stores.sh version "$store")
  read -r key secret < <(scripts/s3-stores.sh keys "$store")
  status=0
  FERRY_TEST_S3_ENDPOINT="$endpoint" FERRY_COMPAT_STORE="$store" \
    FERRY_TEST_S3_ACCESS_KEY="$key" FERRY_TEST_S3_SECRET_KEY="$secret" \
    cargo test --quiet --test compat -- --nocapture --test-threads 1 >"$out/$store.log" 2>&1 || status=$?
  scripts/s3-stores.sh stop "$store"
  grep -oE 'COMPAT .*' "$out/$store.log" | sed -E "s/^COMPAT [^|]+\\| /| $version | /; s/$/ |/" >>"$out/matrix.md" || true
  grep -E '^test .* FAILED$' "$out/$store.log" | sed -E "s/^test ([a-z_]+) .*/| $version | \\1 | FAILED (see target\\/compat\\/$store.log) |/" >>"$out/matrix.md" || true
  if ((status != 0)); then
    failed+=("$store")
  fi
done
cat "$out/matrix.md"
if ((${#failed[@]})); then
  echo "compat.sh: checks failed on: ${failed[*]}" >&2
  exit 1
fi
echo "compat.sh: every check passed on: ${stores[*]}" >&2
