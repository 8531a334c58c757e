#!/usr/bin/env bash
# Runs every test: unit and property tests, integration tests that start the real `ferry serve`
# against a real LocalStack S3 (installed and started by scripts/localstack.sh on first use), and
# the compatibility scenario on moto and SeaweedFS (scripts/compat.sh), the Helm chart,
# Dockerfile and Compose checks (scripts/check-chart.sh), and a bounded
# schemathesis run against the API's OpenAPI document (scripts/fuzz-api.sh), and the dashboard in
# headless Chromium (scripts/check-ui.sh).
# Extra arguments go to cargo test and skip the last four, e.g. `scripts/test.sh --test uploads`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/localstack.sh start
cargo test --no-fail-fast "$@"
if (($# == 0)); then
  # The compatibility scenario on two more stores (LocalStack ran it above).
  scripts/compat.sh moto seaweedfs
  scripts/check-chart.sh
  scripts/fuzz-api.sh
  scripts/check-ui.sh
fi
