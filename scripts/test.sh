#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that start the real `ferry serve` against a
# real LocalStack S3 (installed and started by scripts/localstack.sh on first use).
# Extra arguments go to cargo test, e.g. `scripts/test.sh --test uploads`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/localstack.sh start
cargo test --no-fail-fast "$@"
