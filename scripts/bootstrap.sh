#!/usr/bin/env bash
# Installs what building swift-gnet needs beyond Swift itself, when it is missing.
# Debian/Ubuntu: libevent-dev (the libevent backend) and pkg-config (to find it).
set -euo pipefail
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists libevent_pthreads 2>/dev/null; then need+=(libevent-dev); fi
if ((${#need[@]})); then
    echo "bootstrap: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
