#!/usr/bin/env bash
# Builds gnet-echo with the package's default traits off (no Libevent) in a scratch directory
# of its own, then checks that the binary links no libevent and that asking for the libevent
# poller fails with the list of the pollers that remain.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=.build-nolibevent
swift build --disable-default-traits --product gnet-echo --scratch-path "$scratch" >/dev/null
bin=$(swift build --disable-default-traits --scratch-path "$scratch" --show-bin-path)/gnet-echo
if ldd "$bin" | grep -q libevent; then
    echo "check-no-libevent: gnet-echo built without the Libevent trait still links libevent" >&2
    exit 1
fi
out=$("$bin" --port 0 --poller libevent 2>&1 || true)
case $out in
    *"valid names: epoll, dispatch"*) echo "check-no-libevent: ok (no libevent linked; '--poller libevent' refused: $out)" ;;
    *) echo "check-no-libevent: unexpected answer to --poller libevent: $out" >&2; exit 1 ;;
esac
