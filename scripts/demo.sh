#!/usr/bin/env bash
# Builds and runs the echo server (release build). Extra arguments go to gnet-echo, e.g.
#   scripts/demo.sh --port 9000 --loops 2 --poller epoll
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
swift build -c release --product gnet-echo >&2
exec .build/release/gnet-echo "$@"
