#!/usr/bin/env bash
# Builds the DocC documentation of the library products and fails on any warning.
#
#   scripts/docs.sh            # every catalogue
#   scripts/docs.sh GNet       # only the ones named
#
# Each catalogue is Sources/<Module>/<Module>.docc; the archives land in
# .build-docs/<Module>.doccarchive (open one with `docc preview`, or serve it as static files).
#
# How: one debug build of the documented modules in a scratch folder of its own (.build-docs,
# so it never disturbs .build), with the compiler emitting each module's symbol graph as it
# compiles; then the toolchain's `docc convert` per catalogue, with that module's graphs only,
# and --warnings-as-errors: an unresolved ``link``, a malformed parameter list or a broken
# topic group makes the script exit non-zero. No package plugin and no network.
#
# Catalogues: GNet, GNetCodec, GNetWorkerPool, GNetAsync, GNetMetrics, Poller. The example
# servers, the conformance library and the test helpers are not documented here.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

all_modules=(GNet GNetCodec GNetWorkerPool GNetAsync GNetMetrics Poller)
if (($#)); then modules=("$@"); else modules=("${all_modules[@]}"); fi
for m in "${modules[@]}"; do
    [ -d "Sources/$m/$m.docc" ] || { echo "docs: no catalogue Sources/$m/$m.docc" >&2; exit 2; }
done

scratch=.build-docs
graphs="$PWD/$scratch/symbol-graphs"
mkdir -p "$graphs"
docc=$(command -v docc || true)
if [ -z "$docc" ]; then
    docc="$(dirname "$(readlink -f "$(command -v swift)")")/docc"
fi
[ -x "$docc" ] || { echo "docs: the toolchain's docc was not found next to swift" >&2; exit 2; }

started=$(date +%s)
# The graphs are written as a side effect of compiling, so an unchanged module keeps the one
# from its last compile; the folder is therefore kept between runs. The leaf targets pull in
# GNet and Poller. (-emit-extension-block-symbols: GNetCodec's extension of GNet's Connection
# appears as such in GNetCodec's documentation.)
for target in GNetCodec GNetWorkerPool GNetAsync GNetMetrics; do
    swift build --scratch-path "$scratch" --target "$target" \
        -Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc "$graphs" \
        -Xswiftc -emit-extension-block-symbols \
        >"$scratch/build-$target.log" 2>&1 || { cat "$scratch/build-$target.log" >&2; exit 1; }
done

# A graph goes missing only if its folder was deleted while the build products stayed: build
# those modules afresh once.
for m in "${modules[@]}"; do
    [ -e "$graphs/$m.symbols.json" ] && continue
    if [ -n "${GNET_DOCS_REBUILT:-}" ]; then
        echo "docs: the build emitted no symbol graph for $m" >&2
        exit 1
    fi
    echo "docs: no symbol graph for $m; building $scratch afresh" >&2
    rm -rf "$scratch"
    GNET_DOCS_REBUILT=1 exec "$0" "${modules[@]}"
done

failed=()
for m in "${modules[@]}"; do
    # Only this module's graphs: its own and its extensions of other modules (Module@Other).
    own="$scratch/graphs-$m"
    rm -rf "$own" && mkdir -p "$own"
    cp "$graphs/$m.symbols.json" "$own/"
    for f in "$graphs/$m@"*.symbols.json; do
        if [ -e "$f" ]; then cp "$f" "$own/"; fi
    done
    out="$scratch/$m.doccarchive"
    rm -rf "$out"
    log="$scratch/docc-$m.log"
    if "$docc" convert "Sources/$m/$m.docc" \
        --additional-symbol-graph-dir "$own" \
        --output-dir "$out" \
        --fallback-display-name "$m" --fallback-bundle-identifier "gnet.$m" \
        --warnings-as-errors >"$log" 2>&1 \
        && ! grep -qE '(warning|error):' "$log"; then
        echo "docs: $m -> $out"
    else
        cat "$log" >&2
        echo "docs: $m has documentation warnings (above)" >&2
        failed+=("$m")
    fi
done

echo "docs: $(( $(date +%s) - started )) s"
if ((${#failed[@]})); then
    echo "docs: FAILED: ${failed[*]}" >&2
    exit 1
fi
