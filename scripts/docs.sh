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
# topic group makes the script exit non-zero. Then every sample on the pages that is a whole
# program (starts with an import) is type-checked against the built modules. No package
# plugin and no network.
#
# Catalogues: GNet, GNetCodec, GNetWorkerPool, GNetAsync, GNetMetrics, GNetTLS,
# GNetServiceLifecycle, Poller: every library product but GNetConformance. The example servers,
# the conformance library and the test helpers are not documented here.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

all_modules=(GNet GNetCodec GNetWorkerPool GNetAsync GNetMetrics GNetTLS GNetServiceLifecycle Poller)
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
for target in GNetCodec GNetWorkerPool GNetAsync GNetMetrics GNetTLS GNetServiceLifecycle; do
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

# The samples are code: every ```swift block of a catalogue that starts with an import is a
# whole program, type-checked against the modules just built. (Blocks that do not start with
# one are fragments of the page's earlier samples, and are not checked.)
samples="$scratch/samples"
rm -rf "$samples" && mkdir -p "$samples"
for m in "${modules[@]}"; do
    python3 - "Sources/$m/$m.docc" "$samples" <<'PY'
import pathlib, re, sys
catalogue, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for page in sorted(catalogue.glob("*.md")):
    for i, block in enumerate(re.findall(r"^```swift\n(.*?)^```", page.read_text(), re.S | re.M)):
        if block.startswith("import "):
            (out / f"{catalogue.stem}-{page.stem}-{i}.swift").write_text(block)
PY
done
modules_dir="$scratch/debug/Modules"
# The C modules the Swift ones import: system libraries' module maps, and the ones SwiftPM
# generated for C targets.
module_maps=()
for map in Sources/*/module.modulemap "$scratch"/debug/*.build/module.modulemap; do
    if [ -e "$map" ]; then module_maps+=(-Xcc "-fmodule-map-file=$map"); fi
done
checked=0
for f in "$samples"/*.swift; do
    [ -e "$f" ] || continue
    if ! swiftc -typecheck -I "$modules_dir" -module-cache-path "$scratch/sample-module-cache" \
        "${module_maps[@]}" \
        "$f" >"$f.log" 2>&1; then
        cat "$f.log" >&2
        echo "docs: the sample $f (from its catalogue page) does not compile" >&2
        failed+=("$(basename "$f" .swift)")
    fi
    checked=$((checked + 1))
done
echo "docs: $checked samples type-checked"

echo "docs: $(( $(date +%s) - started )) s"
if ((${#failed[@]})); then
    echo "docs: FAILED: ${failed[*]}" >&2
    exit 1
fi
