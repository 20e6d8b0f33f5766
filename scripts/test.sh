#!/usr/bin/env bash
# Runs every test: unit tests and the conformance suite on every backend, then the hostile-peer
# checks of the example servers (scripts/hostile-peers.py, about 30 s).
# Serial (--no-parallel): conformance scenarios count the process's open descriptors and
# threads, which tests running beside them would disturb. The hostile-peer checks run after
# for the same reason: they measure the servers' memory and CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
swift build --build-tests  # builds every product too: the example servers the last step runs
swift test --skip-build --no-parallel "$@"
python3 scripts/hostile-peers.py "$(swift build --show-bin-path)"
# The Libevent trait off: gnet-echo builds without libevent, and refuses libevent names.
scripts/check-no-libevent.sh
