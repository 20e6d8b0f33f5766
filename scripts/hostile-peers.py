#!/usr/bin/env python3
"""Hostile peers against the example servers: flow control, seen from outside the process.

    scripts/hostile-peers.py [BIN_DIR]        # BIN_DIR defaults to .build/debug

Starts gnet-echo, gnet-http and gnet-redis from BIN_DIR on 127.0.0.1 with --port 0 (reading the
port from the ready line), and checks:

  (a) non-reader: a client sends up to 64 MiB (random bytes to echo, pipelined GETs to HTTP,
      pipelined PINGs to Redis) and never reads. The server's RSS (VmRSS) must grow by at most
      16 MiB during the attack, and return near its baseline once the client disconnects.
      Flow control should block the client long before 64 MiB: it stops after 64 MiB, after
      STALL_S without progress, or after SEND_LIMIT_S in all, and reports how far it got.
      Runs for echo on the default poller, libevent and dispatch; HTTP and Redis on the default.
  (b) slow reader: one thread sends 12 MiB to echo, half-closes (SHUT_WR) when all is sent,
      and reads at 2 MiB/s throughout; it must get every byte back, in order, then a clean EOF.
      Over TLS too (without the half-close: a TLS peer ends its side with close_notify).
  (c) half-closed non-reader: a client sends up to 8 MiB to echo, half-closes and never reads;
      over ~2 s the server may use under 10% of one core. Then the client resets.
  (d) mixed listeners: gnet-echo --addr tcp://… --addr udp://… --addr unix://… echoes on all
      three at once; then a UDP flood (20,000 datagrams of 1,400 bytes whose echoes are never
      read) may grow its RSS by at most 16 MiB, and all three still echo after it. Then
      gnet-dial dials its udp address (20 connections × 20 round trips, every echo checked),
      and a udp port nobody serves, which must be refused at once.
  (e) graceful stop: gnet-echo with 100 clients connected, each having sent a message and read
      its echo, gets SIGTERM; every client sees EOF with nothing after its last reply, and the
      process exits 0 within 6 s (shutdownTimeout and the ServiceGroup's margin). gnet-http
      gets SIGTERM with a request half sent: it is answered with Connection: close, then EOF,
      while an idle keep-alive connection sees EOF at once.
  (f) stalled TLS handshakes: 300 peers send the first bytes of a ClientHello to gnet-echo
      --tls-cert … --tls-handshake-timeout 2 and stop. A real TLS client gets 64 KiB echoed
      within 2 s meanwhile, the server uses under 10% of one core while they stall, and every
      stalled peer is closed by the server (EOF or reset) by 5 s, its descriptor returned.

"Near the baseline" (a): within RECOVER_SLACK (1 MiB) of the RSS measured before the attack,
once the server has closed the connection (its descriptor count is back). The baseline is taken
after a warm-up exchange of a few hundred KiB on its own connection, so that what first use
costs for good (the loop's 64 KiB read buffer touched in full, code paged in, a loop thread's
malloc arena) is in the baseline rather than counted as a leak. What stays after the attack is
glibc keeping freed heap: 0.0-0.4 MiB measured, the same after one attack as after four (not a
leak), and down to 0-120 KiB with GLIBC_TUNABLES=glibc.malloc.trim_threshold=0 (the rest is
fragmentation at the top of the loop thread's arena).

Standard library only, loopback only; every wait has a deadline; it signals only the processes
it started. Prints one line per check and ends with `N passed, M failed`; exits 1 on failure.
"""

import os
import random
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
KiB = 1 << 10

ATTACK_BYTES = 64 * MiB
RSS_GROWTH_LIMIT = 16 * MiB
RECOVER_SLACK = 1 * MiB  # measured: up to 0.4 MiB stays with glibc (see the docstring)
RECOVER_WAIT_S = 4.0  # the server may linger over unread input (lingerTimeout 2 s)
SEND_LIMIT_S = 10.0
STALL_S = 1.5
HOLD_S = 1.0  # keep the stalled non-reader connected, sampling, before disconnecting

SLOW_BYTES = 12 * MiB
SLOW_RATE = 2 * MiB  # bytes per second
SLOW_LIMIT_S = 20.0

HALF_BYTES = 8 * MiB
HALF_SEND_LIMIT_S = 5.0
HALF_STALL_S = 0.5
CPU_WINDOW_S = 2.0
CPU_LIMIT = 0.10  # fraction of one core

SIGTERM_CLIENTS = 100
SIGTERM_DEADLINE_S = 6.0  # Options.shutdownTimeout (5 s) and the ServiceGroup's 1 s margin

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 8.0
SAMPLE_S = 0.05

CLK_TCK = os.sysconf("SC_CLK_TCK")
results = []  # (name, ok, detail)


def log(msg):
    print(msg, flush=True)


def check(name, ok, detail):
    results.append((name, ok, detail))
    log(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")


def mib(n):
    return f"{n / MiB:.1f} MiB"


# ---------------------------------------------------------------------------- the server process


class Server:
    """One example server started by this script, on a free port."""

    def __init__(self, bin_dir, name, poller=None, extra=(), addrs=None):
        self.name = name
        # With --tls-cert, clients speak TLS, trusting the CA that signed it (tls-certs.sh's).
        extra = list(extra)
        self.tls_ca = os.path.join(os.path.dirname(extra[extra.index("--tls-cert") + 1]), "ca.pem") if "--tls-cert" in extra else None
        self.label = f"{name} (poller={poller or 'default'}{''.join(' ' + a for a in extra)})"
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing or not executable; run `swift build` first")
        args = [path] + ([a for u in addrs for a in ("--addr", u)] if addrs else ["--host", "127.0.0.1", "--port", "0"])
        if poller:
            args += ["--poller", poller]
        args += list(extra)
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.port = self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"{self.label}: no ready line within {READY_TIMEOUT_S:.0f} s{self.stderr_tail()}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait(timeout=STOP_TIMEOUT_S)
                    raise RuntimeError(f"{self.label}: exited with status {code} before it was ready{self.stderr_tail()}")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode(errors="replace")
        # listening on tcp://127.0.0.1:PORT (poller=NAME, loops=N)
        try:
            port = int(line.split("tcp://", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
        except (IndexError, ValueError):
            self.stop()
            raise RuntimeError(f"{self.label}: cannot read the port from its ready line {line!r}")
        self.ready_line = line
        return port

    def stderr_tail(self):
        self.stderr.seek(0)
        text = self.stderr.read()[-2000:].decode(errors="replace").strip()
        return f"; its stderr ends:\n{text}" if text else ""

    def alive(self):
        return self.proc.poll() is None

    def status(self, field):
        """A size field of /proc/PID/status (VmRSS, VmHWM), in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{self.label}: no {field} in /proc/{self.pid}/status")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self):
        return self.status("VmRSS")

    def reset_peak(self):
        """Resets VmHWM to the current RSS (Linux 4.0+), so it catches a peak between samples.
        Returns False where the kernel does not allow it; then only the samples count."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def cpu(self):
        """utime + stime of the whole process (all threads), in seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15

    def stop(self):
        """SIGTERM (graceful stop), then SIGKILL if it does not exit in time. Returns the status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log(f"note  {self.label}: still running {STOP_TIMEOUT_S:.0f} s after SIGTERM; killing pid {self.pid}")
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc.stdout.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------- client helpers


# Would-block, for plain and TLS sockets alike.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def connect(port, tls_ca=None):
    """A connection to the server; over TLS (handshake done, certificate checked) with tls_ca."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_ca:
        s = ssl.create_default_context(cafile=tls_ca).wrap_socket(s, server_hostname="localhost")
    return s


def reset(s):
    """Closes with SO_LINGER 0: the server sees a reset, as from a peer that went away."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def exchange(s, request, reply_len, limit_s=5.0):
    """Sends `request` and reads `reply_len` bytes of reply, both at once without blocking
    (so a large exchange cannot deadlock on full buffers). Returns the reply; raises on a
    short reply or when limit_s runs out."""
    s.setblocking(False)
    view = memoryview(request)
    sent, got = 0, bytearray()
    deadline = time.monotonic() + limit_s
    while len(got) < reply_len:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"exchange: sent {sent:,} of {len(request):,} bytes, got {len(got):,} of "
                               f"{reply_len:,} reply bytes in {limit_s:.0f} s")
        r, w, _ = select.select([s], [s] if sent < len(request) else [], [], 0 if tls_pending(s) else left)
        if w:
            try:
                sent += s.send(view[sent:sent + 256 * KiB])
            except WOULD_BLOCK:
                pass
        if r or tls_pending(s):
            try:
                chunk = s.recv(256 * KiB)
            except WOULD_BLOCK:
                continue
            if not chunk:
                raise RuntimeError(f"exchange: EOF after {len(got):,} of {reply_len:,} reply bytes")
            got += chunk
    return bytes(got)


def tls_pending(s):
    """Decrypted bytes a TLS socket holds that select() cannot see."""
    return isinstance(s, ssl.SSLSocket) and s.pending() > 0


def repeated(unit, size):
    """A bytes object of `size` bytes that is `unit` repeated (cut at a unit boundary)."""
    count = max(1, size // len(unit))
    return unit * count


def send_bounded(s, source, total, limit_s, stall_s, on_tick=None):
    """Sends `total` bytes of `source` (cycled) without reading, non-blocking, until all are sent,
    nothing moved for stall_s, or limit_s passed. Calls on_tick() about every SAMPLE_S.
    Returns (sent, seconds, why)."""
    s.setblocking(False)
    view = memoryview(source)
    sent = 0
    start = last_progress = time.monotonic()
    why = "all sent"
    while sent < total:
        now = time.monotonic()
        if now - start >= limit_s:
            why = f"time limit {limit_s:.0f} s"
            break
        if now - last_progress >= stall_s:
            why = f"blocked: no progress for {stall_s} s"
            break
        _, w, _ = select.select([], [s], [], SAMPLE_S)
        if w:
            off = sent % len(source)
            n = min(len(source) - off, total - sent)
            try:
                k = s.send(view[off:off + n])
            except WOULD_BLOCK:
                k = 0
            if k > 0:
                sent += k
                last_progress = time.monotonic()
        if on_tick:
            on_tick()
    return sent, time.monotonic() - start, why


# ---------------------------------------------------------------------------- (a) the non-reader


def warm_up(server, kind):
    """Ordinary traffic on its own connection (a few hundred KiB, more than one read buffer and
    past the high watermark), so the baseline includes what first use costs for good: the
    loop's read buffer touched in full, code paged in, allocator arenas set up."""
    s = connect(server.port, server.tls_ca)
    if kind == "echo":
        data = random.Random(0).randbytes(256 * KiB)
        if exchange(s, data, len(data)) != data:
            raise RuntimeError("warm-up: the echo differs from what was sent")
    elif kind == "http":
        get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        # One response first, to learn its size (the same for all: Date has a fixed width).
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 4096:
            head += exchange(s, get if not head else b"", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"warm-up: unexpected HTTP reply {head[:60]!r}")
        header, _, body = head.partition(b"\r\n\r\n")
        length = int(header.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        size = len(header) + 4 + length
        head += exchange(s, b"", size - len(head)) if len(head) < size else b""
        count = 4000
        reply = exchange(s, get * count, count * size)
        if reply.count(b"HTTP/1.1 200 OK") != count:
            raise RuntimeError("warm-up: the pipelined replies are not all 200 OK")
    else:
        count = 20000
        reply = exchange(s, b"*1\r\n$4\r\nPING\r\n" * count, count * len(b"+PONG\r\n"))
        if reply != b"+PONG\r\n" * count:
            raise RuntimeError(f"warm-up: unexpected reply {reply[:40]!r}")
    s.close()


def attack_payload(kind):
    if kind == "echo":
        return random.Random(1).randbytes(1 * MiB)
    if kind == "http":
        return repeated(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1 * MiB)
    return repeated(b"*1\r\n$4\r\nPING\r\n", 1 * MiB)


def non_reader(server, kind):
    """(a): RSS while a peer sends 64 MiB and reads nothing, and after it leaves."""
    label = f"(a) non-reader, {server.label}"
    warm_up(server, kind)
    time.sleep(0.3)
    baseline = server.rss()
    anon0, file0 = server.status("RssAnon"), server.status("RssFile")
    fds = server.fd_count()
    hwm = server.reset_peak()
    payload = attack_payload(kind)
    samples = [baseline]

    def sample():
        if server.alive():
            samples.append(server.rss())

    s = connect(server.port, server.tls_ca)
    cpu0 = server.cpu()
    sent, took, why = send_bounded(s, payload, ATTACK_BYTES, SEND_LIMIT_S, STALL_S, sample)
    # Held back: the server should now be idle and small. Keep the connection open a moment.
    hold_cpu0, hold_t0 = server.cpu(), time.monotonic()
    hold_end = time.monotonic() + HOLD_S
    while time.monotonic() < hold_end:
        time.sleep(SAMPLE_S)
        sample()
    hold_cpu = (server.cpu() - hold_cpu0) / (time.monotonic() - hold_t0)
    attack_cpu = server.cpu() - cpu0
    peak = max(samples)
    if hwm:  # the kernel's high-water mark since the reset: a peak between samples too
        peak = max(peak, server.status("VmHWM"))
    reset(s)

    # After the disconnect: wait until the server has closed the connection (its descriptor
    # count is back to the baseline), then until RSS is near the baseline, or the wait runs out.
    deadline = time.monotonic() + RECOVER_WAIT_S
    while server.alive() and server.fd_count() > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    closed = server.alive() and server.fd_count() <= fds
    time.sleep(0.1)
    after = server.rss()
    while server.alive() and after > baseline + RECOVER_SLACK and time.monotonic() < deadline:
        time.sleep(0.1)
        after = server.rss()
    if not server.alive():
        check(label, False, f"the server died during the attack (status {server.proc.poll()}){server.stderr_tail()}")
        return
    log(f"      {label}: sent {sent:,} bytes ({mib(sent)}) of {mib(ATTACK_BYTES)} in {took:.1f} s ({why}); "
        f"RSS baseline {mib(baseline)}, peak {mib(peak)} (+{mib(peak - baseline)}, "
        f"{'VmHWM and ' if hwm else ''}{len(samples)} samples), "
        f"after disconnect {mib(after)} ({after - baseline:+,} bytes: "
        f"anonymous {server.status('RssAnon') - anon0:+,}, file-backed {server.status('RssFile') - file0:+,}); "
        f"server CPU {attack_cpu:.2f} s during the attack, {hold_cpu * 100:.1f}% of a core while held back")
    check(f"{label}: connection closed", closed,
          f"the server's descriptors are back to {fds}" if closed else
          f"the server still has {server.fd_count()} descriptors (baseline {fds}) {RECOVER_WAIT_S:.0f} s after the client reset")
    check(f"{label}: RSS growth", peak - baseline <= RSS_GROWTH_LIMIT,
          f"peak {mib(peak)} is {mib(peak - baseline)} over the baseline {mib(baseline)} "
          f"(limit {mib(RSS_GROWTH_LIMIT)}); the client got {mib(sent)} out ({why})")
    check(f"{label}: memory returned", after <= baseline + RECOVER_SLACK,
          f"RSS {mib(after)} after the disconnect, {(after - baseline) / MiB:+.2f} MiB from the baseline "
          f"(allowed +{mib(RECOVER_SLACK)}, waited up to {RECOVER_WAIT_S:.0f} s)")


# ---------------------------------------------------------------------------- (b) the slow reader


def first_difference(data, offset, chunk):
    """The offset of the first byte of `chunk` that is not `data` at `offset` onward (a byte
    past the end of `data` counts as different), or None when they agree."""
    if chunk == data[offset:offset + len(chunk)]:
        return None
    for i, b in enumerate(chunk):
        if offset + i >= len(data) or data[offset + i] != b:
            return offset + i
    return None


def slow_reader(server):
    """(b): send 12 MiB, half-close, read at 2 MiB/s on one thread: all bytes, then clean EOF."""
    label = f"(b) slow reader, {server.label}"
    data = random.Random(2).randbytes(SLOW_BYTES)
    view = memoryview(data)
    s = connect(server.port)
    s.setblocking(False)
    sent = received = 0
    shut = False
    outcome = None
    mismatch_at = None
    start = time.monotonic()
    first_read = None
    while outcome is None:
        now = time.monotonic()
        if now - start > SLOW_LIMIT_S:
            outcome = f"timed out after {SLOW_LIMIT_S:.0f} s"
            break
        # Token bucket: never more than SLOW_RATE bytes per second since the start.
        allowance = int((now - start) * SLOW_RATE) - received
        want_read = [s] if allowance > 0 else []
        want_write = [s] if sent < SLOW_BYTES else []
        r, w, _ = select.select(want_read, want_write, [], 0.02)
        if w:
            try:
                sent += s.send(view[sent:sent + 256 * KiB])
            except BlockingIOError:
                pass
            if sent == SLOW_BYTES and not shut:
                s.shutdown(socket.SHUT_WR)
                shut = True
        if r:
            try:
                chunk = s.recv(min(allowance, 64 * KiB))
            except BlockingIOError:
                continue
            except ConnectionResetError:
                outcome = "reset by the server"
                break
            if not chunk:
                outcome = "EOF"
                break
            if first_read is None:
                first_read = time.monotonic()
            if mismatch_at is None:
                mismatch_at = first_difference(data, received, chunk)
            received += len(chunk)
    took = time.monotonic() - start
    s.close()
    log(f"      {label}: sent {mib(sent)}, half-closed={shut}, received {received:,} of {SLOW_BYTES:,} bytes "
        f"in {took:.1f} s ({received / MiB / max(took, 1e-9):.2f} MiB/s), ended with {outcome}")
    ok = shut and received == SLOW_BYTES and mismatch_at is None and outcome == "EOF"
    detail = f"received {received:,} of {SLOW_BYTES:,} bytes, then {outcome}"
    if mismatch_at is not None:
        detail += f"; first wrong byte at offset {mismatch_at:,}"
    if not shut:
        detail += f"; only {sent:,} bytes could be sent, so it never half-closed"
    check(label, ok, detail)


def slow_reader_tls(server):
    """(b) over TLS: send 12 MiB while reading the echo at 2 MiB/s; every byte back, in order.
    (No half-close: a TLS peer ends its side with close_notify, which closes the connection.)"""
    label = f"(b) slow TLS reader, {server.label}"
    data = random.Random(7).randbytes(SLOW_BYTES)
    view = memoryview(data)
    s = connect(server.port, server.tls_ca)
    s.setblocking(False)
    sent = received = 0
    outcome = None
    mismatch_at = None
    start = time.monotonic()
    while received < SLOW_BYTES and outcome is None:
        now = time.monotonic()
        if now - start > SLOW_LIMIT_S:
            outcome = f"timed out after {SLOW_LIMIT_S:.0f} s"
            break
        allowance = int((now - start) * SLOW_RATE) - received
        want_read = allowance > 0
        r, w, _ = select.select([s] if want_read else [], [s] if sent < SLOW_BYTES else [], [],
                                0 if want_read and tls_pending(s) else 0.02)
        if w:
            try:
                sent += s.send(view[sent:sent + 64 * KiB])
            except WOULD_BLOCK:
                pass
        if want_read and (r or tls_pending(s)):
            try:
                chunk = s.recv(min(allowance, 64 * KiB))
            except WOULD_BLOCK:
                continue
            except (ConnectionResetError, ssl.SSLError) as e:
                outcome = f"{type(e).__name__}: {e}"
                break
            if not chunk:
                outcome = "EOF before the end"
                break
            if mismatch_at is None:
                mismatch_at = first_difference(data, received, chunk)
            received += len(chunk)
    took = time.monotonic() - start
    reset(s)
    log(f"      {label}: sent {mib(sent)}, received {received:,} of {SLOW_BYTES:,} bytes in {took:.1f} s "
        f"({received / MiB / max(took, 1e-9):.2f} MiB/s){'' if outcome is None else ', ended with ' + outcome}")
    detail = f"received {received:,} of {SLOW_BYTES:,} bytes" + ("" if outcome is None else f", then {outcome}")
    if mismatch_at is not None:
        detail += f"; first wrong byte at offset {mismatch_at:,}"
    check(label, received == SLOW_BYTES and mismatch_at is None and outcome is None, detail)


# ---------------------------------------------------------------------------- (c) half-closed non-reader


def half_closed_idle(server):
    """(c): a peer that sent, half-closed and reads nothing costs the server no CPU."""
    label = f"(c) half-closed non-reader, {server.label}"
    payload = random.Random(3).randbytes(1 * MiB)
    s = connect(server.port)
    sent, took, why = send_bounded(s, payload, HALF_BYTES, HALF_SEND_LIMIT_S, HALF_STALL_S)
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.1)  # let the last of the echo traffic settle
    cpu0, t0 = server.cpu(), time.monotonic()
    time.sleep(CPU_WINDOW_S)
    used = server.cpu() - cpu0
    wall = time.monotonic() - t0
    # What the server did with the connection meanwhile (closeTimeout 2 s: an abort is expected).
    s.setblocking(False)
    state = "still open"
    try:
        r, _, _ = select.select([s], [], [], 0)
        if r:
            s.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        state = "reset by the server"
    except BlockingIOError:
        pass
    reset(s)
    share = used / wall
    log(f"      {label}: sent {mib(sent)} in {took:.1f} s ({why}), half-closed; server CPU {used:.3f} s "
        f"over {wall:.2f} s = {share * 100:.1f}% of one core; connection {state} at the end")
    check(label, share < CPU_LIMIT,
          f"{share * 100:.1f}% of one core over {wall:.1f} s (limit {CPU_LIMIT * 100:.0f}%)")


# ---------------------------------------------------------------------------- (f) stalled TLS handshakes


FLOOD_PEERS = 300
FLOOD_TIMEOUT_S = 2.0  # the server's --tls-handshake-timeout
FLOOD_SERVE_LIMIT_S = 2.0


def stalled_handshakes(server):
    """(f): 300 peers each send the first bytes of a ClientHello and stop (slowloris on the
    handshake). Meanwhile a real TLS client is served at once and the server spins no CPU; at
    the handshake timeout every stalled peer is closed and its descriptor is back."""
    label = f"(f) stalled-handshake flood, {server.label}"
    base = server.fd_count()
    peers = []
    for _ in range(FLOOD_PEERS):
        p = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        p.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))  # a 512-byte record promised, 2 sent
        peers.append(p)
    started = time.monotonic()
    while server.fd_count() - base < FLOOD_PEERS and time.monotonic() - started < 2:
        time.sleep(SAMPLE_S)
    held = server.fd_count() - base
    t0 = time.monotonic()
    c = connect(server.port, server.tls_ca)
    payload = random.Random(6).randbytes(64 * KiB)
    echoed = exchange(c, payload, len(payload), FLOOD_SERVE_LIMIT_S)
    served = time.monotonic() - t0
    c.close()
    cpu0, w0 = server.cpu(), time.monotonic()
    time.sleep(min(1.0, FLOOD_TIMEOUT_S / 2))
    share = (server.cpu() - cpu0) / (time.monotonic() - w0)
    # Each stalled peer sees its connection end (EOF or reset) once the timeout passes.
    ended, deadline = 0, started + FLOOD_TIMEOUT_S + 3
    for p in peers:
        p.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if p.recv(1) == b"":
                ended += 1
        except ConnectionResetError:
            ended += 1
        except (socket.timeout, OSError):
            pass
        p.close()
    time.sleep(0.2)
    left = server.fd_count() - base
    log(f"      {label}: {held} stalled handshakes held, a real client served 64 KiB in {served * 1000:.0f} ms, "
        f"server CPU {share * 100:.1f}% of one core while they stalled, {ended}/{len(peers)} closed by the "
        f"server by {FLOOD_TIMEOUT_S + 3:.0f} s, {left} descriptors above the start")
    check(label, echoed == payload and served < FLOOD_SERVE_LIMIT_S and share < CPU_LIMIT
          and ended == len(peers) and left <= 1,
          f"served {served:.2f} s (limit {FLOOD_SERVE_LIMIT_S:.0f}), CPU {share * 100:.1f}%, "
          f"{ended}/{len(peers)} closed, {left} descriptors left")


# ---------------------------------------------------------------------------- (e) graceful stop


def read_to_end(s, limit_s):
    """Reads until EOF; returns (bytes, how it ended: 'eof', 'reset' or 'timeout')."""
    s.setblocking(False)
    got = bytearray()
    deadline = time.monotonic() + limit_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(got), "timeout"
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        try:
            chunk = s.recv(64 * KiB)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return bytes(got), "reset"
        if not chunk:
            return bytes(got), "eof"
        got += chunk


def sigterm_echo(bin_dir, count=SIGTERM_CLIENTS):
    """(e): gnet-echo with `count` clients connected, each having sent a message and read its
    echo (its last reply), gets SIGTERM: every client must then see a clean EOF with nothing
    more, and the process must exit 0 within the graceful deadline."""
    label = f"(e) SIGTERM with {count} clients connected, gnet-echo"
    server = Server(bin_dir, "gnet-echo")
    clients = []
    try:
        for i in range(count):
            s = connect(server.port)
            message = f"client {i}: my last message\n".encode()
            reply = exchange(s, message, len(message))
            if reply != message:
                raise RuntimeError(f"client {i} got {reply!r} for {message!r}")
            clients.append(s)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        ends = {}
        for s in clients:
            got, end = read_to_end(s, SIGTERM_DEADLINE_S)
            key = end if not got else f"{end} after {len(got)} unexpected bytes"
            ends[key] = ends.get(key, 0) + 1
            s.close()  # ends the server's lingering close at once
        clients = []
        try:
            code = server.proc.wait(timeout=max(0.1, SIGTERM_DEADLINE_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        server.proc.stdout.close()
        summary = ", ".join(f"{n} {k}" for k, n in sorted(ends.items()))
        ok = ends == {"eof": count} and code == 0
        check(label, ok, f"clients saw: {summary}; exit status {code} {took:.2f} s after SIGTERM "
                         f"(deadline {SIGTERM_DEADLINE_S:.0f} s){'' if ok else server.stderr_tail()}")
    finally:
        for s in clients:
            s.close()
        server.stop()


def sigterm_http_in_flight(bin_dir):
    """(e): gnet-http gets SIGTERM while one request is half sent and another connection is
    idle: the idle one sees EOF at once, the request in flight is answered with
    `Connection: close`, then EOF, and the process exits 0."""
    label = "(e) SIGTERM with a request in flight, gnet-http"
    server = Server(bin_dir, "gnet-http")
    try:
        idle, busy = connect(server.port), connect(server.port)
        request = b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"
        first = exchange(idle, request, 1)
        busy.sendall(request[:20])
        time.sleep(0.2)  # the half request has reached the server
        server.proc.send_signal(signal.SIGTERM)
        idle_rest, idle_end = read_to_end(idle, SIGTERM_DEADLINE_S)
        idle.close()
        busy.setblocking(True)
        busy.sendall(request[20:])
        answer, busy_end = read_to_end(busy, SIGTERM_DEADLINE_S)
        busy.close()
        try:
            code = server.proc.wait(timeout=SIGTERM_DEADLINE_S)
        except subprocess.TimeoutExpired:
            code = None
        server.proc.stdout.close()
        head = answer.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        ok = (first.startswith(b"H") and idle_end == "eof" and busy_end == "eof" and code == 0
              and head.startswith("HTTP/1.1 200") and "\r\nConnection: close" in head
              and answer.endswith(b"Hello, World!"))
        check(label, ok, f"idle client: {idle_end}; request in flight: {head.splitlines()[0] if head else 'nothing'}"
                         f"{' with Connection: close' if 'Connection: close' in head else ''}, then {busy_end}; "
                         f"exit status {code}{'' if ok else server.stderr_tail()}")
    finally:
        server.stop()


# ---------------------------------------------------------------------------- main


def echo_everywhere(server, udp_port, unix_path, tag):
    """One round trip on each of the three listeners; returns what failed (empty: none)."""
    failures = []
    try:
        with connect(server.port) as s:
            msg = f"tcp {tag}".encode()
            s.sendall(msg)
            if exchange_exact(s, len(msg)) != msg:
                failures.append("tcp echo differs")
    except OSError as e:
        failures.append(f"tcp: {e}")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2.0)
            msg = f"udp {tag}".encode()
            u.sendto(msg, ("127.0.0.1", udp_port))
            data, src = u.recvfrom(65536)
            if data != msg or src != ("127.0.0.1", udp_port):
                failures.append(f"udp echo {data!r} from {src}")
    except OSError as e:
        failures.append(f"udp: {e}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as x:
            x.settimeout(5.0)
            x.connect(unix_path)
            msg = f"unix {tag}".encode()
            x.sendall(msg)
            if exchange_exact(x, len(msg)) != msg:
                failures.append("unix echo differs")
    except OSError as e:
        failures.append(f"unix: {e}")
    return failures


def exchange_exact(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def mixed_listeners(bin_dir):
    """(d): tcp, udp and unix on one gnet-echo; a UDP flood bounded in memory."""
    unix_path = os.path.join(tempfile.gettempdir(), f"gnet-hostile-{os.getpid()}.sock")
    addrs = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0", f"unix://{unix_path}"]
    try:
        server = Server(bin_dir, "gnet-echo", None, addrs=addrs)
    except (RuntimeError, OSError) as e:
        check("(d) start gnet-echo with tcp, udp and unix", False, str(e))
        return
    log(f"----  {server.label}: pid {server.pid}, {server.ready_line}")
    try:
        try:
            udp_port = int(server.ready_line.split("udp://", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
        except (IndexError, ValueError):
            check("(d) mixed listeners", False, f"no udp address in the ready line {server.ready_line!r}")
            return
        failures = echo_everywhere(server, udp_port, unix_path, "before")
        check("(d) mixed listeners: tcp, udp and unix echo at once", not failures, "; ".join(failures) or "all three echoed")
        baseline = server.rss()
        peak = baseline
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its echoes overflow and drop
            payload = random.randbytes(1400)
            for i in range(20_000):
                try:
                    flood.sendto(payload, ("127.0.0.1", udp_port))
                except OSError:
                    pass  # a full send buffer: UDP drops, the flood goes on
                if i % 1000 == 0:
                    peak = max(peak, server.rss())
        time.sleep(0.2)
        peak = max(peak, server.rss())
        check("(d) udp flood: RSS growth", peak - baseline <= RSS_GROWTH_LIMIT,
              f"{mib(peak - baseline)} over the baseline {mib(baseline)} (limit {mib(RSS_GROWTH_LIMIT)})")
        failures = echo_everywhere(server, udp_port, unix_path, "after")
        check("(d) udp flood: tcp, udp and unix still echo", not failures, "; ".join(failures) or "all three echoed")
        dial_udp(bin_dir, udp_port)
    finally:
        code = server.stop()
        if code != 0:
            check(f"{server.label} stops on SIGTERM", False, f"exit status {code}{server.stderr_tail()}")
        if os.path.exists(unix_path):
            check("(d) the unix socket file is removed on stop", False, unix_path)


def dial_client(bin_dir):
    """Returns a scenario running gnet-dial (the client example) against the server."""
    def scenario(server):
        path = os.path.join(bin_dir, "gnet-dial")
        args = [path, f"tcp://127.0.0.1:{server.port}", "--connections", "50", "--rounds", "10", "--loops", "2"]
        p = subprocess.run(args, capture_output=True, timeout=60)
        out = p.stdout.decode(errors="replace").strip()
        check(f"gnet-dial, {server.label}", p.returncode == 0 and out.startswith("50 of 50 connections"),
              f"exit {p.returncode}: {out} {p.stderr.decode(errors='replace').strip()}")
        # A port nobody listens on: a typed refusal, exit status 1, at once.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        started = time.monotonic()
        p = subprocess.run([path, f"tcp://127.0.0.1:{closed}"], capture_output=True, timeout=30)
        err = p.stderr.decode(errors="replace").strip()
        took = time.monotonic() - started
        check("gnet-dial to a closed port", p.returncode == 1 and "refused" in err and took < 5,
              f"exit {p.returncode} after {took:.1f} s: {err}")
    return scenario


def dial_udp(bin_dir, udp_port):
    """gnet-dial over udp against the udp listener of (d): 20 dialled datagram connections on
    two loops, 20 round trips each, every echo checked; and a udp port nobody serves, whose
    ICMP refusal must end the client at once with a typed error."""
    path = os.path.join(bin_dir, "gnet-dial")
    args = [path, f"udp://127.0.0.1:{udp_port}", "--connections", "20", "--rounds", "20", "--loops", "2"]
    p = subprocess.run(args, capture_output=True, timeout=60)
    out = p.stdout.decode(errors="replace").strip()
    check("(d) gnet-dial over udp", p.returncode == 0 and out.startswith("20 of 20 connections"),
          f"exit {p.returncode}: {out} {p.stderr.decode(errors='replace').strip()}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    started = time.monotonic()
    p = subprocess.run([path, f"udp://127.0.0.1:{closed}", "--timeout", "10"], capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace").strip()
    took = time.monotonic() - started
    check("(d) gnet-dial over udp to a closed port", p.returncode == 1 and "refused" in err and took < 5,
          f"exit {p.returncode} after {took:.1f} s: {err}")


def run(bin_dir, name, poller, scenarios, extra=()):
    """Starts one server, runs (label, function) scenarios against it in turn, stops it."""
    try:
        server = Server(bin_dir, name, poller, extra)
    except (RuntimeError, OSError) as e:
        check(f"start {name} (poller={poller or 'default'})", False, str(e))
        return
    log(f"----  {server.label}: pid {server.pid}, {server.ready_line}")
    try:
        for label, scenario in scenarios:
            if not server.alive():
                check(server.label, False, f"exited with status {server.proc.poll()}{server.stderr_tail()}")
                break
            try:
                scenario(server)
            except (OSError, RuntimeError) as e:
                check(f"{label}, {server.label}", False, f"{type(e).__name__}: {e}")
    finally:
        code = server.stop()
        if code != 0:
            check(f"{server.label} stops on SIGTERM", False, f"exit status {code}{server.stderr_tail()}")


def main():
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args) or len(args) > 1:
        print(__doc__)
        return 2
    bin_dir = args[0] if args else ".build/debug"
    started = time.monotonic()
    run(bin_dir, "gnet-echo", None, [
        ("(a) non-reader", lambda s: non_reader(s, "echo")),
        ("(b) slow reader", slow_reader),
        ("(c) half-closed non-reader", half_closed_idle),
    ])
    mixed_listeners(bin_dir)
    for poller in ("libevent", "dispatch"):
        run(bin_dir, "gnet-echo", poller, [("(a) non-reader", lambda s: non_reader(s, "echo"))])
    # Edge-triggered, on two loops balanced by connection count: the same guarantees.
    run(bin_dir, "gnet-echo", None, [
        ("(a) non-reader", lambda s: non_reader(s, "echo")),
        ("(b) slow reader", slow_reader),
        ("(c) half-closed non-reader", half_closed_idle),
        ("gnet-dial", dial_client(bin_dir)),
    ], extra=("--edge-triggered", "--loops", "2", "--lb", "least-connections"))
    # TLS (GNetTLS): a non-reading peer holds the server's memory bounded as without TLS.
    certs = tempfile.mkdtemp(prefix="gnet-hostile-tls-")
    if subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "tls-certs.sh"), certs],
                      capture_output=True).returncode == 0:
        run(bin_dir, "gnet-echo", None, [
            ("(a) non-reader", lambda s: non_reader(s, "echo")),
            ("(b) slow TLS reader", slow_reader_tls),
            ("(f) stalled-handshake flood", stalled_handshakes),
        ], extra=("--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server.key",
                  "--tls-handshake-timeout", f"{FLOOD_TIMEOUT_S:g}"))
    else:
        check("TLS certificates (scripts/tls-certs.sh)", False, "could not make them; is openssl installed?")
    # The async layer: a task per connection, backpressure through its chunk buffer and writes.
    run(bin_dir, "gnet-echo-async", None, [
        ("(a) non-reader", lambda s: non_reader(s, "echo")),
        ("(b) slow reader", slow_reader),
    ])
    run(bin_dir, "gnet-http", None, [("(a) non-reader", lambda s: non_reader(s, "http"))])
    run(bin_dir, "gnet-redis", None, [("(a) non-reader", lambda s: non_reader(s, "redis"))])
    for name, scenario in (("gnet-echo", sigterm_echo), ("gnet-http", sigterm_http_in_flight)):
        try:
            scenario(bin_dir)
        except (OSError, RuntimeError) as e:
            check(f"(e) SIGTERM, {name}", False, f"{type(e).__name__}: {e}")
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    log(f"(took {time.monotonic() - started:.0f} s)")
    for name, ok, detail in results:
        if not ok:
            log(f"failed: {name}: {detail}")
    log(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
