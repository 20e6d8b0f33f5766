#!/usr/bin/env python3
"""Turns the samples run.sh collected into BENCHMARKS.md (Python 3 standard library only).

Inputs, all in --results:
  samples.tsv     category, scenario, server, round, status (ok|fail|skip), then key=value fields:
                  rate (per second), work (messages or requests the server handled during the run),
                  cpu_s and wall_s (the server's user+system CPU and the run's wall time),
                  p50_us, p99_us, p999_us, note
  efficiency.tsv  category, server, then key=value fields
  meta.tsv        key, value (machine, date, command, settings); `skipped` rows name dead servers
"""

import argparse
import statistics
from collections import OrderedDict, defaultdict
from pathlib import Path

CATEGORIES = OrderedDict(
    [
        ("echo", {"title": "Echo", "unit": "msgs", "refs": ["nio-echo", "c-echo"]}),
        ("udp", {"title": "UDP echo (datagrams)", "unit": "dgrams", "refs": ["nio-udp-echo", "c-udp-echo"]}),
        ("http", {"title": "HTTP/1.1 plaintext", "unit": "req", "refs": ["nio-http", "nio-http-raw", "c-http"]}),
        ("tls", {"title": "TLS echo", "unit": "msgs", "refs": ["nio-tls-echo", "c-tls-echo"]}),
        ("https", {"title": "HTTPS (TLS) and handshakes", "unit": "req", "refs": ["nio-https", "c-tls-echo"]}),
        ("redis", {"title": "Redis protocol (RESP2)", "unit": "req", "refs": ["redis-server"]}),
    ]
)


def read_kv(fields):
    out = {}
    for field in fields:
        key, _, value = field.partition("=")
        out[key] = value
    return out


def read_samples(path):
    samples = []
    if not path.exists():
        return samples
    for line in path.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 5:
            continue
        category, scenario, server, rnd, status = cols[:5]
        samples.append(
            {"category": category, "scenario": scenario, "server": server, "round": rnd,
             "status": status, **read_kv(cols[5:])}
        )
    return samples


def read_meta(path):
    meta, skipped = {}, {}
    if path.exists():
        for line in path.read_text().splitlines():
            cols = line.split("\t")
            if cols[0] == "skipped" and len(cols) >= 3:
                skipped[cols[1]] = cols[2]
            elif len(cols) >= 2:
                meta[cols[0]] = cols[1]
    return meta, skipped


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rate(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_us(v):
    if v is None:
        return "—"
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def fmt_ratio(a, b):
    if a is None or not b:
        return "—"
    return f"{a / b:.2f}"


def summarize(samples):
    """(category, scenario, server) -> medians over the rounds that succeeded."""
    groups = defaultdict(list)
    for s in samples:
        groups[(s["category"], s["scenario"], s["server"])].append(s)
    rows = {}
    for key, group in groups.items():
        ok = [s for s in group if s["status"] == "ok"]
        notes = sorted({s.get("note", "") for s in group if s.get("note")})
        row = {"rounds": len(group), "ok": len(ok), "notes": notes,
               "status": "ok" if ok else group[-1]["status"]}
        if ok:
            row["rate"] = median(num(s.get("rate")) for s in ok)
            per_cpu = []
            cpu_pct = []
            for s in ok:
                work, cpu, wall = num(s.get("work")), num(s.get("cpu_s")), num(s.get("wall_s"))
                if work and cpu:
                    per_cpu.append(work / cpu)
                if cpu is not None and wall:
                    cpu_pct.append(100 * cpu / wall)
            row["per_cpu"] = median(per_cpu)
            row["cpu_pct"] = median(cpu_pct)
            for key_us in ("p50_us", "p99_us", "p999_us"):
                row[key_us] = median(num(s.get(key_us)) for s in ok)
        rows[key] = row
    return rows


def category_table(category, spec, samples, rows, meta, skipped_meta):
    cat_samples = [s for s in samples if s["category"] == category]
    if not cat_samples:
        return []
    scenarios = list(OrderedDict.fromkeys(s["scenario"] for s in cat_samples))
    # In the order the script lists them (gnet per backend, the SwiftNIO peers, the C floor).
    declared = meta.get(f"order_{category}", "").split()
    servers = list(OrderedDict.fromkeys(declared + [s["server"] for s in cat_samples]))
    servers = [name for name in servers if any(s["server"] == name for s in cat_samples)]

    never_ok = [srv for srv in servers if not any(rows[(category, sc, srv)]["ok"]
                                                   for sc in scenarios if (category, sc, srv) in rows)]
    shown = [srv for srv in servers if srv not in never_ok]
    refs = spec["refs"]
    has_p999 = category in ("echo", "udp", "tls")
    unit = spec["unit"]

    header = ["scenario", "server", f"{unit}/s", "p50 µs", "p99 µs"]
    if has_p999:
        header.append("p99.9 µs")
    header += ["server CPU", f"{unit}/CPU-s"] + [f"vs {ref}" for ref in refs]
    lines = [f"## {spec['title']}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|")
    for scenario in scenarios:
        for server in shown:
            row = rows.get((category, scenario, server))
            if row is None:
                continue
            cells = [scenario, server]
            if not row["ok"]:
                note = "; ".join(row["notes"]) or row["status"]
                cells += [f"{row['status']}: {note}"] + [""] * (len(header) - 3)
                lines.append("| " + " | ".join(cells) + " |")
                continue
            cells += [fmt_rate(row["rate"]), fmt_us(row.get("p50_us")), fmt_us(row.get("p99_us"))]
            if has_p999:
                cells.append(fmt_us(row.get("p999_us")))
            cells.append("—" if row.get("cpu_pct") is None else f"{row['cpu_pct']:.0f}%")
            cells.append(fmt_rate(row.get("per_cpu")))
            for ref in refs:
                ref_row = rows.get((category, scenario, ref))
                if not ref_row or not ref_row["ok"]:
                    cells.append("—")
                else:
                    cells.append(f"{fmt_ratio(row['rate'], ref_row['rate'])} / "
                                 f"{fmt_ratio(row.get('per_cpu'), ref_row.get('per_cpu'))}")
            if row["ok"] < row["rounds"]:
                cells[1] += f" ({row['ok']}/{row['rounds']} rounds ok: {'; '.join(row['notes'])})"
            elif row["notes"]:
                cells[1] += f" ({'; '.join(row['notes'])})"
            lines.append("| " + " | ".join(cells) + " |")
    for server in never_ok:
        notes = set()
        for scenario in scenarios:
            row = rows.get((category, scenario, server))
            if row:
                notes.update(row["notes"])
        note = skipped_meta.get(server) or "; ".join(sorted(notes)) or "no result"
        status = "skipped" if all(rows[(category, sc, server)]["status"] == "skip"
                                  for sc in scenarios if (category, sc, server) in rows) else "failed"
        lines.append("| " + " | ".join(["all", server, f"{status}: {note}"] + [""] * (len(header) - 3)) + " |")
    lines.append("")
    return lines


def variants_section(rows):
    """The echo variants against the plain echo on the same backend, same run: the codec path
    (`gnet-echo-framed`, target >= 0.9x) and the metrics-on echo (`gnet-echo-metrics`, target 1x)."""
    echo = [(sc, srv) for (cat, sc, srv) in rows if cat == "echo"]
    lines = []
    same_backend = lambda srv: "gnet-echo/" + srv.split("/", 1)[1]
    for variant, what, baseline in (
            ("gnet-echo-framed", "length-field framed echo (GNetCodec) vs the plain echo", same_backend),
            ("gnet-echo-metrics", "echo with loop statistics, busy time and GNetMetrics on vs the plain echo", same_backend),
            ("gnet-echo-async", "async echo (GNetAsync) vs the callback echo", same_backend),
            ("gnet-echo-async", "async echo (GNetAsync) vs SwiftNIO's NIOAsyncChannel echo", lambda srv: "nio-async-echo")):
        pairs = []
        for sc, srv in echo:
            if not srv.startswith(variant + "/"):
                continue
            plain = rows.get(("echo", sc, baseline(srv)))
            row = rows[("echo", sc, srv)]
            if plain and plain["ok"] and row["ok"] and plain["rate"] and row["rate"]:
                pairs.append((sc, srv, row["rate"] / plain["rate"],
                              (row.get("per_cpu") or 0) / plain["per_cpu"] if plain.get("per_cpu") else None))
        if not pairs:
            continue
        if not lines:
            lines += ["## Echo variants", "",
                      "The same run: *rate ratio* (and per-CPU-s ratio) of each variant to its baseline in each "
                      "scenario, and their geometric mean.", ""]
        lines += [f"### {what}", "", "| scenario | server | rate ratio | per-CPU-s ratio |", "|---|---|--:|--:|"]
        for sc, srv, r, c in pairs:
            lines.append(f"| {sc} | {srv} | {r:.2f}x | {'—' if c is None else f'{c:.2f}x'} |")
        geo = 1.0
        for _, _, r, _ in pairs:
            geo *= r
        geo **= 1 / len(pairs)
        lines += [f"| geometric mean | | {geo:.3f}x | |", ""]
    return lines


def efficiency_section(path, meta):
    if not path.exists() or not path.read_text().strip():
        return []
    entries = defaultdict(dict)
    order = []
    for line in path.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 2:
            continue
        key = (cols[0], cols[1])
        if key not in entries:
            order.append(key)
        entries[key].update(read_kv(cols[2:]))
    lines = ["## Efficiency", ""]
    echo = [k for k in order if k[0] == "echo"]
    if echo:
        idle = meta.get("idle_conns", "?")
        lines += [
            f"Echo, 100 connections × 64 B, one message in flight each, measured in a steady state "
            f"(after the warm-up, between two pauses of the load): heap allocations per message "
            f"({meta.get('alloc_messages', '?')} messages, LD_PRELOAD counter of malloc, calloc, realloc, "
            f"posix_memalign, aligned_alloc, memalign, valloc), system calls per message "
            f"({meta.get('strace_messages', '?')} messages, `strace -c -f` attached to the server), and "
            f"resident memory (VmRSS) at start and with {idle} idle connections that have each echoed "
            f"one message.",
            "",
            "| server | allocations/msg | syscalls/msg | most frequent, per msg | RSS at start | "
            f"RSS, {idle} idle conns | per conn |",
            "|---|--:|--:|---|--:|--:|--:|",
        ]
        for key in echo:
            e = entries[key]
            if "note" in e:
                lines.append(f"| {key[1]} | skipped: {e['note']} | | | | | |")
                continue
            allocs = e.get("allocs_per_msg") or e.get("allocs_note", "—")
            sys_ = e.get("syscalls_per_msg") or e.get("syscalls_note", "—")
            top = e.get("syscalls_top", "")
            base, full = num(e.get("rss_base_kb")), num(e.get("rss_idle_kb"))
            conns = num(e.get("idle_conns"))
            if base is not None and full is not None:
                rss0, rss1 = f"{base / 1024:.1f} MiB", f"{full / 1024:.1f} MiB"
                per = f"{(full - base) / conns * 1024:,.0f} B" if conns else "—"
            else:
                rss0, rss1, per = e.get("rss_note", "—"), "", ""
            lines.append(f"| {key[1]} | {allocs} | {sys_} | {top} | {rss0} | {rss1} | {per} |")
        lines.append("")
    http = [k for k in order if k[0] == "http"]
    if http:
        lines += [
            f"HTTP, {meta.get('http_conns', '?')} connections, no pipelining: heap allocations per request "
            f"in a steady state (the difference between a 1 s and a longer wrk run, so that connection "
            f"setup cancels out).",
            "",
            "| server | allocations/request |",
            "|---|--:|",
        ]
        for key in http:
            e = entries[key]
            value = e.get("allocs_per_req") or (f"skipped: {e['note']}" if "note" in e else e.get("allocs_note", "—"))
            lines.append(f"| {key[1]} | {value} |")
        lines.append("")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args()

    samples = read_samples(args.results / "samples.tsv")
    meta, skipped = read_meta(args.results / "meta.tsv")
    rows = summarize(samples)
    rounds = meta.get("rounds", "?")
    quick = meta.get("quick") == "1"

    out = ["# Benchmarks", ""]
    out.append("Generated by `Benchmarks/run.sh`; do not edit by hand, run the script again. "
               "See `Benchmarks/README.md` for what each piece is.")
    out.append("")
    if quick:
        out += ["**Quick run** (`--quick`): one round of short runs, for smoke-testing only.", ""]
    out += [
        f"- Date: {meta.get('date', '?')}",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Machine: {meta.get('cpu', '?')}, nproc {meta.get('nproc', '?')}, {meta.get('memory', '?')}, "
        f"{meta.get('kernel', '?')}",
        f"- Software: {meta.get('swift', '?')}; SwiftNIO {meta.get('nio', '?')}; wrk {meta.get('wrk', '?')}; "
        f"redis {meta.get('redis', '?')}; swift-gnet commit {meta.get('commit', '?')}",
        f"- Method: every server runs one event loop, pinned to core {meta.get('server_cpu', '?')}; the "
        f"load runs on core {meta.get('load_cpu', '?')}. {rounds} round(s); within a round each scenario "
        f"runs against every server in turn (order rotated per round), each freshly started. Figures "
        f"are medians over rounds. Echo: {meta.get('echo_duration', '?')} s measured after "
        f"{meta.get('warmup', '?')} s warm-up with `loadgen`, which checks every echoed byte. UDP echo: "
        f"the same durations with `udpgen`: each socket keeps the scenario's depth of datagrams in flight, "
        f"every reply checked (size, sequence, each byte), a datagram unanswered for 200 ms counted as lost. HTTP: "
        f"`wrk -t1 -c{meta.get('http_conns', '?')} -d{meta.get('http_duration', '?')}s`, with and "
        f"without {meta.get('pipeline', '?')}-deep pipelining. Redis: `redis-benchmark "
        f"-c {meta.get('redis_conns', '?')}`, with and without `-P {meta.get('pipeline', '?')}`, each "
        f"test sized by a short probe run (also the warm-up) to last about "
        f"{meta.get('redis_seconds', '?')} s.",
        f"- The run took {meta.get('elapsed', '?')} s. Load average (1, 5, 15 min) at its start "
        f"{meta.get('loadavg_start', '?')} (at its end {meta.get('loadavg_end', '?')}, the run's own load "
        f"included): a start value well above 0 means other work shared the cores and the figures "
        f"are noisy.",
        "",
        "Columns: *server CPU* is the server's user+system CPU time over the wall time of the run "
        "(100% = one core busy); well under 100% means the load generator, on its own core, was the "
        "bottleneck, and then *per CPU-s* (messages or requests per second of server CPU, over the "
        "whole run including warm-up) compares servers more fairly than the raw rate. *vs X* is "
        "*rate ratio / per-CPU-s ratio* against server X in the same scenario (above 1 = better than X). "
        "Latency: per message from issue to full echo (echo), per request (HTTP without pipelining), "
        "per pipelined batch (HTTP with pipelining, as wrk measures it), per request (Redis).",
        "",
    ]
    for category, spec in CATEGORIES.items():
        out += category_table(category, spec, samples, rows, meta, skipped)
    out += variants_section(rows)
    out += efficiency_section(args.results / "efficiency.tsv", meta)
    args.output.write_text("\n".join(out))


if __name__ == "__main__":
    main()
