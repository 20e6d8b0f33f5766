#!/usr/bin/env bash
# Runs every test: unit tests and the conformance suite on every backend.
# Serial (--no-parallel): conformance scenarios count the process's open descriptors and
# threads, which tests running beside them would disturb.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
swift build --build-tests
swift test --skip-build --no-parallel "$@"
