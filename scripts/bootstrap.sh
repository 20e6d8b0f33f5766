#!/usr/bin/env bash
# Installs what building swift-gnet needs beyond Swift itself, when it is missing.
# Debian/Ubuntu: libevent-dev (the libevent backend), libssl-dev (GNetTLS only; the core does not
# need it), openssl (the TLS tests make throwaway certificates with it) and pkg-config.
set -euo pipefail
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists libevent_pthreads 2>/dev/null; then need+=(libevent-dev); fi
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
    echo "bootstrap: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
