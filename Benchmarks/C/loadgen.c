/*
 * Echo load generator that checks every byte it gets back.
 *
 *   cc -O2 -o loadgen loadgen.c
 *   loadgen --host 127.0.0.1 --port P --conns C --size S --depth D --duration SECS
 *           [--warmup SECS] [--messages N] [--hold SECS] [--idle] [--drain-timeout SECS]
 *
 * Each of C connections keeps D messages of S bytes in flight: a message is issued (stamped and
 * queued for writing) when the connection opens and again each time one fully returns. One
 * thread, one epoll instance, level-triggered, nonblocking connects (at most --connect-burst
 * pending at once, so 10,000 connections do not overflow the server's accept queue).
 *
 * What is checked. The bytes a connection sends are a window of one pseudo-random pattern of
 * PATTERN_LEN bytes (a prime, so consecutive messages differ), starting at a per-connection
 * offset; the echo must be exactly that stream again. Every received byte is compared, so a
 * wrong, lost, duplicated, reordered or extra byte is a mismatch, and a connection that closes
 * or stalls (in-flight messages still missing after --drain-timeout) is an error. Any error
 * makes the exit status 1.
 *
 * Phases: connect all, warm up (--warmup s, not measured), measure (--duration s, or until
 * --messages have returned, whichever first), drain (stop issuing, wait for all in flight).
 * Latency is per message, from issue to the last byte of its echo, for messages that return
 * while measuring; a log-linear histogram (1/64 octave) gives the percentiles.
 *
 * --hold SECS lets a script measure the server in a steady state: after the warm-up the load
 * drains, `HOLD warm` is printed and the generator waits (at most SECS) for SIGUSR1; after the
 * measured window drains it prints `HOLD done msgs=N` and waits again before closing anything.
 * --idle: every connection does one round trip, then `HOLD idle conns=C` and a wait as above.
 * --framed: every message is a frame of a length-prefixed protocol, a 4-byte big-endian length
 * (S - 4) then S - 4 pattern bytes, and streams start at message boundaries, so a server that
 * decodes frames and writes each back re-framed echoes the stream byte for byte.
 *
 * --tls: every connection speaks TLS (OpenSSL; link with -lssl -lcrypto): the handshake follows
 * the connect, then the same checked stream runs inside TLS. The server's certificate is not
 * verified (a benchmark against a throwaway certificate); session resumption is off, so every
 * connection is a full handshake.
 *
 * The last line is machine-readable:
 *   RESULT msgs_per_s=… mbps=… p50_us=… p99_us=… p999_us=… errors=0 msgs=… …
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define PATTERN_LEN 1000003u     /* prime */
#define CHUNK (64 * 1024)        /* largest single read or write */
#define HIST_BUCKETS (64 * 64)
#define MAX_ERROR_LINES 20

enum state { CONNECTING, HANDSHAKING, OPEN, CLOSED };

struct conn {
    int fd;
    SSL *ssl;              /* with --tls */
    enum state state;
    int want_out;          /* EPOLLOUT registered (1), not (0), connect-only registration (-1) */
    uint64_t base;         /* where this connection's stream starts in the pattern */
    uint64_t target;       /* stream bytes issued so far (may be written) */
    uint64_t sent;         /* stream bytes written */
    uint64_t recvd;        /* stream bytes received and verified */
    uint64_t issued, completed;
    uint64_t *stamps;      /* issue time of message k at stamps[k % depth] */
};

/* ---- configuration ---- */
static const char *host = "127.0.0.1";
static int port = 0, nconns = 1, msg_size = 64, depth = 1, idle_mode = 0, connect_burst = 256;
static double duration = 5, warmup = 1, hold_secs = 0, drain_timeout = 10, connect_timeout = 60;
static uint64_t max_messages = 0;

/* ---- state ---- */
static unsigned char *pattern;   /* pattern_len + CHUNK bytes: the tail repeats the head */
static size_t pattern_len = PATTERN_LEN;   /* a whole number of messages with --framed */
static int framed = 0;
static SSL_CTX *tls_ctx;         /* with --tls */
static struct conn *conns;
static int ep;
static int issuing = 1;          /* issue a new message when one returns */
static int measuring = 0;
static uint64_t measured;        /* messages returned while measuring */
static uint64_t window;          /* messages returned from the start of measuring to the end of the drain */
static uint64_t lifetime;          /* messages returned in the whole run, warm-up and drains included */
static uint64_t hist[HIST_BUCKETS];
static int errors, open_conns, pending_connects, next_to_connect;
static unsigned char rbuf[CHUNK];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(int ci, const char *fmt, ...) {
    errors++;
    if (errors > MAX_ERROR_LINES) return;
    va_list ap;
    va_start(ap, fmt);
    if (ci >= 0) fprintf(stderr, "loadgen: conn %d: ", ci);
    else fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* ---- latency histogram: exact below 64 ns, then 64 buckets per power of two ---- */
static int bucket_of(uint64_t ns) {
    if (ns < 64) return (int)ns;
    int msb = 63 - __builtin_clzll(ns);
    int shift = msb - 6;
    int b = (shift + 1) * 64 + (int)((ns >> shift) - 64);
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static double bucket_mid_ns(int b) {
    if (b < 64) return b;
    int shift = b / 64 - 1;
    double low = (double)((uint64_t)(b % 64 + 64) << shift);
    return low + (double)(1ull << shift) / 2;
}

static double percentile_us(double q) {
    uint64_t total = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) total += hist[b];
    if (total == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank) return bucket_mid_ns(b) / 1000.0;
    }
    return 0;
}

/* ---- connections ---- */
static void set_out(struct conn *c, int idx, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u64 = (uint64_t)idx};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) { perror("epoll_ctl MOD"); exit(1); }
    c->want_out = on;
}

static void close_conn(struct conn *c) {
    if (c->state == CLOSED) return;
    if (c->state == CONNECTING || c->state == HANDSHAKING) pending_connects--;
    if (c->state == OPEN) open_conns--;
    if (c->ssl) { SSL_free(c->ssl); c->ssl = NULL; }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = CLOSED;
}

static void issue(struct conn *c, uint64_t when) {
    c->stamps[c->issued % (uint64_t)depth] = when;
    c->issued++;
    c->target += (uint64_t)msg_size;
}

/* Writes what has been issued and not yet written. */
static void pump(struct conn *c, int idx) {
    while (c->sent < c->target) {
        uint64_t left = c->target - c->sent;
        size_t n = left < CHUNK ? (size_t)left : CHUNK;
        size_t pos = (size_t)((c->base + c->sent) % pattern_len);
        if (c->ssl) {
            int w = SSL_write(c->ssl, pattern + pos, (int)n);
            if (w > 0) { c->sent += (uint64_t)w; continue; }
            int e = SSL_get_error(c->ssl, w);
            if (e == SSL_ERROR_WANT_WRITE) { set_out(c, idx, 1); return; }
            if (e == SSL_ERROR_WANT_READ) { set_out(c, idx, 0); return; }
            fail(idx, "SSL_write: error %d", e);
            close_conn(c);
            return;
        }
        ssize_t w = write(c->fd, pattern + pos, n);
        if (w > 0) { c->sent += (uint64_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { set_out(c, idx, 1); return; }
        fail(idx, "write: %s", w < 0 ? strerror(errno) : "wrote nothing");
        close_conn(c);
        return;
    }
    set_out(c, idx, 0);
}

static void start_connect(int idx) {
    struct conn *c = &conns[idx];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { fail(idx, "socket: %s", strerror(errno)); c->state = CLOSED; return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CONNECTING;
    pending_connects++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) { perror("epoll_ctl ADD"); exit(1); }
    c->want_out = -1;  /* registered for the connect only: the first set_out() must re-register */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        fail(idx, "connect: %s", strerror(errno));
        close_conn(c);
    }
}

static void opened(struct conn *c, int idx);

/* Advances a TLS handshake; opens the connection once it is done. */
static void handshake_step(struct conn *c, int idx) {
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) { opened(c, idx); return; }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) { set_out(c, idx, 0); return; }
    if (e == SSL_ERROR_WANT_WRITE) { set_out(c, idx, 1); return; }
    char why[256];
    ERR_error_string_n(ERR_get_error(), why, sizeof why);
    fail(idx, "TLS handshake: %s", why);
    close_conn(c);
}

static void connected(struct conn *c, int idx) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) { fail(idx, "connect: %s", strerror(err)); close_conn(c); return; }
    if (tls_ctx) {
        c->ssl = SSL_new(tls_ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        SSL_set_connect_state(c->ssl);
        c->state = HANDSHAKING;
        handshake_step(c, idx);
        return;
    }
    opened(c, idx);
}

static void opened(struct conn *c, int idx) {
    c->state = OPEN;
    pending_connects--;
    open_conns++;
    uint64_t t = now_ns();
    int first = idle_mode ? 1 : depth;
    for (int k = 0; k < first; k++) issue(c, t);
    pump(c, idx);
}

static void consume(struct conn *c, int idx, size_t n);

static void readable(struct conn *c, int idx) {
    if (c->ssl) {
        /* Until OpenSSL has nothing left: it may hold decrypted records epoll cannot see. */
        while (c->state == OPEN) {
            int r = SSL_read(c->ssl, rbuf, sizeof rbuf);
            if (r > 0) { consume(c, idx, (size_t)r); continue; }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
            fail(idx, "server closed the TLS connection (SSL error %d) after %llu of %llu bytes", e,
                 (unsigned long long)c->recvd, (unsigned long long)c->sent);
            close_conn(c);
            return;
        }
        return;
    }
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        fail(idx, "server closed the connection (%s) after %llu of %llu bytes",
             r < 0 ? strerror(errno) : "EOF", (unsigned long long)c->recvd, (unsigned long long)c->sent);
        close_conn(c);
        return;
    }
    consume(c, idx, (size_t)r);
}

/* Checks `n` received bytes in rbuf against the stream, then issues what returned messages free. */
static void consume(struct conn *c, int idx, size_t n) {
    if (c->recvd + n > c->sent) {
        fail(idx, "received %llu bytes but only %llu were sent",
             (unsigned long long)(c->recvd + n), (unsigned long long)c->sent);
        close_conn(c);
        return;
    }
    size_t pos = (size_t)((c->base + c->recvd) % pattern_len);
    if (memcmp(rbuf, pattern + pos, n) != 0) {
        size_t i = 0;
        while (rbuf[i] == pattern[pos + i]) i++;
        fail(idx, "mismatch at stream byte %llu (message %llu): expected 0x%02x, got 0x%02x",
             (unsigned long long)(c->recvd + i), (unsigned long long)((c->recvd + i) / (uint64_t)msg_size),
             pattern[pos + i], rbuf[i]);
        close_conn(c);
        return;
    }
    c->recvd += n;
    uint64_t t = now_ns();
    while ((c->completed + 1) * (uint64_t)msg_size <= c->recvd) {
        uint64_t latency = t - c->stamps[c->completed % (uint64_t)depth];
        c->completed++;
        if (measuring) {
            measured++;
            hist[bucket_of(latency)]++;
        }
        window++;
        lifetime++;
        if (issuing && !idle_mode) issue(c, t);
    }
    pump(c, idx);
}

/* One round of the event loop, waiting at most `wait_ms`. */
static void poll_once(int wait_ms) {
    static struct epoll_event events[1024];
    while (pending_connects < connect_burst && next_to_connect < nconns) start_connect(next_to_connect++);
    int n = epoll_wait(ep, events, 1024, wait_ms);
    if (n < 0 && errno != EINTR) { perror("epoll_wait"); exit(1); }
    for (int i = 0; i < n; i++) {
        int idx = (int)events[i].data.u64;
        struct conn *c = &conns[idx];
        if (c->state == CLOSED) continue;
        if (c->state == CONNECTING) {
            if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected(c, idx);
            continue;
        }
        if (c->state == HANDSHAKING) {
            handshake_step(c, idx);
            continue;
        }
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c, idx);
        if (c->state == OPEN && (events[i].events & EPOLLOUT)) pump(c, idx);
    }
}

static int all_returned(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == OPEN && conns[i].completed < conns[i].issued) return 0;
    return 1;
}

/* Stops issuing and waits until every message in flight has returned (or the timeout). */
static void drain(void) {
    issuing = 0;
    uint64_t deadline = now_ns() + (uint64_t)(drain_timeout * 1e9);
    while (!all_returned() && now_ns() < deadline) poll_once(5);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state == OPEN && c->completed < c->issued)
            fail(i, "%llu messages (%llu bytes) never came back",
                 (unsigned long long)(c->issued - c->completed), (unsigned long long)(c->sent - c->recvd));
    }
}

/* Prints a HOLD line and waits for SIGUSR1 (blocked since start) for at most --hold seconds. */
static void hold(const char *what) {
    printf("HOLD %s\n", what);
    fflush(stdout);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    struct timespec ts = {(time_t)hold_secs, (long)((hold_secs - (double)(time_t)hold_secs) * 1e9)};
    if (sigtimedwait(&set, NULL, &ts) < 0) fail(-1, "no SIGUSR1 within --hold %.0f s", hold_secs);
}

static void usage(void) {
    fprintf(stderr,
        "usage: loadgen --port P [--host 127.0.0.1] [--conns 1] [--size 64] [--depth 1]\n"
        "               [--duration 5] [--warmup 1] [--messages N] [--hold SECS] [--idle] [--framed] [--tls]\n"
        "               [--drain-timeout 10] [--connect-timeout 60] [--connect-burst 256]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--idle")) { idle_mode = 1; continue; }
        if (!strcmp(a, "--framed")) { framed = 1; continue; }
        if (!strcmp(a, "--tls")) {
            tls_ctx = SSL_CTX_new(TLS_client_method());
            SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
            SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--size")) msg_size = atoi(v);
        else if (!strcmp(a, "--depth")) depth = atoi(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--messages")) max_messages = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--hold")) hold_secs = atof(v);
        else if (!strcmp(a, "--drain-timeout")) drain_timeout = atof(v);
        else if (!strcmp(a, "--connect-timeout")) connect_timeout = atof(v);
        else if (!strcmp(a, "--connect-burst")) connect_burst = atoi(v);
        else usage();
    }
    struct in_addr probe;
    if (port <= 0 || port > 65535 || nconns < 1 || msg_size < 1 || depth < 1 || duration <= 0 ||
        warmup < 0 || connect_burst < 1 || inet_pton(AF_INET, host, &probe) != 1) usage();
    if (idle_mode && hold_secs <= 0) hold_secs = 60;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Enough descriptors for every connection (root may raise the hard limit too). */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = (rlim_t)nconns + 64;
    if (rl.rlim_cur < need) {
        struct rlimit want = {need, rl.rlim_max > need ? rl.rlim_max : need};
        if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            fprintf(stderr, "loadgen: cannot raise the descriptor limit to %llu\n", (unsigned long long)need);
        }
    }

    pattern = malloc(PATTERN_LEN + CHUNK);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < PATTERN_LEN; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        pattern[i] = (unsigned char)(x >> 32);
    }
    if (framed) {
        if (msg_size < 5) { fprintf(stderr, "loadgen: --framed needs --size of at least 5\n"); return 2; }
        pattern_len = PATTERN_LEN / (size_t)msg_size * (size_t)msg_size;
        uint32_t len = (uint32_t)msg_size - 4;
        for (size_t at = 0; at < pattern_len; at += (size_t)msg_size) {
            pattern[at] = (unsigned char)(len >> 24); pattern[at + 1] = (unsigned char)(len >> 16);
            pattern[at + 2] = (unsigned char)(len >> 8); pattern[at + 3] = (unsigned char)len;
        }
    }
    memcpy(pattern + pattern_len, pattern, CHUNK);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!pattern || !conns) { perror("malloc"); return 1; }
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].state = CLOSED;
        conns[i].base = ((uint64_t)i * 7919u * 131u) % pattern_len;
        if (framed) conns[i].base -= conns[i].base % (uint64_t)msg_size;
        conns[i].stamps = calloc((size_t)depth, sizeof(uint64_t));
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("epoll_create1"); return 1; }

    /* Connect everything. */
    uint64_t t0 = now_ns();
    uint64_t deadline = t0 + (uint64_t)(connect_timeout * 1e9);
    while ((next_to_connect < nconns || pending_connects > 0) && now_ns() < deadline) poll_once(5);
    if (next_to_connect < nconns || pending_connects > 0)
        fail(-1, "only %d of %d connections established within %.0f s", open_conns, nconns, connect_timeout);
    double connect_s = (double)(now_ns() - t0) / 1e9;

    double elapsed = 0;
    if (idle_mode) {
        drain();  /* every connection's single message */
        char what[64];
        snprintf(what, sizeof what, "idle conns=%d", open_conns);
        if (errors == 0) hold(what);
    } else if (errors == 0) {
        uint64_t end = now_ns() + (uint64_t)(warmup * 1e9);
        while (now_ns() < end) poll_once(5);
        if (hold_secs > 0) {
            drain();
            hold("warm");
            issuing = 1;
            uint64_t t = now_ns();
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &conns[i];
                if (c->state != OPEN) continue;
                for (int k = 0; k < depth; k++) issue(c, t);
                pump(c, i);
            }
        }
        window = 0;
        measuring = 1;
        uint64_t start = now_ns();
        end = start + (uint64_t)(duration * 1e9);
        while (now_ns() < end && (max_messages == 0 || measured < max_messages) && open_conns > 0) poll_once(5);
        elapsed = (double)(now_ns() - start) / 1e9;
        measuring = 0;
        drain();
        if (hold_secs > 0) {
            char what[64];
            snprintf(what, sizeof what, "done msgs=%llu", (unsigned long long)window);
            hold(what);
        }
    }
    for (int i = 0; i < nconns; i++) close_conn(&conns[i]);

    double rate = elapsed > 0 ? (double)measured / elapsed : 0;
    printf("conns=%d size=%d depth=%d connect=%.2fs measured=%.2fs messages=%llu\n", nconns, msg_size, depth,
           connect_s, elapsed, (unsigned long long)measured);
    printf("%.0f msgs/s, %.2f MB/s echoed, latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us, errors %d\n",
           rate, rate * msg_size / 1e6, percentile_us(0.5), percentile_us(0.99), percentile_us(0.999), errors);
    printf("RESULT msgs_per_s=%.0f mbps=%.2f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%d msgs=%llu "
           "window_msgs=%llu total_msgs=%llu conns=%d size=%d depth=%d connect_s=%.3f\n",
           rate, rate * msg_size / 1e6, percentile_us(0.5), percentile_us(0.99), percentile_us(0.999), errors,
           (unsigned long long)measured, (unsigned long long)window, (unsigned long long)lifetime, nconns, msg_size, depth, connect_s);
    return errors ? 1 : 0;
}
