#!/usr/bin/env bash
# Runs inside the LocalStack container once it is ready.
set -euo pipefail
awslocal s3 mb s3://ferry-demo
