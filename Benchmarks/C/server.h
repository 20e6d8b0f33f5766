/*
 * What the C floor servers (echo.c, http.c) share: the command line, the listener, the
 * per-connection output queue and the loop threads. Header-only so each server is one `cc` call.
 *
 * The servers are deliberately minimal: level-triggered epoll, nonblocking sockets, one 64 KiB
 * read buffer per loop, and a write queue only for what the kernel refused (EAGAIN). While a
 * connection has queued output it is not read from, which bounds its memory.
 * With --loops N, N threads each own an epoll instance and a SO_REUSEPORT listener.
 */
#ifndef BENCH_SERVER_H
#define BENCH_SERVER_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUFFER (64 * 1024)
#define MAX_EVENTS 512

struct options {
    const char *host;
    int port;
    int loops;
};

/* Bytes the kernel did not take yet. [off, len) is unsent. */
struct outq {
    char *data;
    size_t off, len, cap;
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void usage(const char *prog) {
    fprintf(stderr, "usage: %s [--host 127.0.0.1] [--port 9000] [--loops 1]\n", prog);
    exit(2);
}

static struct options parse_options(int argc, char **argv) {
    struct options o = {"127.0.0.1", 9000, 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage(argv[0]);
        if (!strcmp(a, "--host")) o.host = argv[++i];
        else if (!strcmp(a, "--port")) o.port = atoi(argv[++i]);
        else if (!strcmp(a, "--loops")) o.loops = atoi(argv[++i]);
        else usage(argv[0]);
    }
    if (o.loops < 1 || o.port < 0 || o.port > 65535) usage(argv[0]);
    return o;
}

/* As many descriptors as the hard limit allows: 10,000 idle connections must fit. */
static int raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    return (int)rl.rlim_cur;
}

static int make_listener(const struct options *o, int reuseport) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad IPv4 address: %s\n", o->host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) die("SO_REUSEPORT");
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

static int bound_port(int fd) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) die("getsockname");
    return ntohs(sa.sin_port);
}

static void outq_append(struct outq *q, const char *p, size_t n) {
    if (q->off > 0 && q->off == q->len) q->off = q->len = 0;
    if (q->len + n > q->cap) {
        if (q->off > 0) {  /* slide the unsent part to the front first */
            memmove(q->data, q->data + q->off, q->len - q->off);
            q->len -= q->off;
            q->off = 0;
        }
        if (q->len + n > q->cap) {
            size_t cap = q->cap ? q->cap : 4096;
            while (cap < q->len + n) cap *= 2;
            q->data = realloc(q->data, cap);
            if (!q->data) die("realloc");
            q->cap = cap;
        }
    }
    memcpy(q->data + q->len, p, n);
    q->len += n;
}

static void outq_free(struct outq *q) {
    free(q->data);
    memset(q, 0, sizeof *q);
}

/*
 * Writes p[0..n) now, queues what the kernel refuses. Returns 1 if output is now queued,
 * 0 if all was written, -1 if the connection failed.
 */
static inline int write_or_queue(int fd, struct outq *q, const char *p, size_t n) {
    size_t done = 0;
    if (q->len == q->off) {
        while (done < n) {
            ssize_t w = write(fd, p + done, n - done);
            if (w > 0) { done += (size_t)w; continue; }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && errno == EAGAIN) break;
            return -1;
        }
    }
    if (done == n) return q->len > q->off;
    outq_append(q, p + done, n - done);
    return 1;
}

/* Writes queued output. Returns 1 if some remains, 0 if the queue is empty, -1 on failure. */
static inline int flush_queue(int fd, struct outq *q) {
    while (q->off < q->len) {
        ssize_t w = write(fd, q->data + q->off, q->len - q->off);
        if (w > 0) { q->off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) return 1;
        return -1;
    }
    q->off = q->len = 0;
    return 0;
}

static void set_interest(int ep, int fd, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl MOD");
}

/* An epoll instance for one loop thread, watching its listener `lfd`. */
static int loop_epoll(int lfd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl listener");
    return ep;
}

/* epoll_wait for up to MAX_EVENTS, retrying an interrupted wait. */
static int wait_events(int ep, struct epoll_event *events, int timeout_ms) {
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, timeout_ms);
        if (n >= 0) return n;
        if (errno != EINTR) die("epoll_wait");
    }
}

/* Accepts everything pending on `lfd` and registers it for reading. */
static void accept_all(int ep, int lfd, int maxfd, void (*on_open)(int fd)) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN) perror("accept4");  /* EMFILE and friends: try again next wake-up */
            return;
        }
        if (fd >= maxfd) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        on_open(fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl ADD");
    }
}

/* Runs `loop(listener)` on `o->loops` threads, the first on the calling thread; prints the line. */
static void run_loops(const struct options *o, const char *poller, void *(*loop)(void *)) {
    signal(SIGPIPE, SIG_IGN);
    int reuseport = o->loops > 1;
    int first = make_listener(o, reuseport);
    struct options bound = *o;
    bound.port = bound_port(first);
    for (int i = 1; i < o->loops; i++) {
        pthread_t t;
        int lfd = make_listener(&bound, reuseport);
        if (pthread_create(&t, NULL, loop, (void *)(intptr_t)lfd) != 0) die("pthread_create");
    }
    printf("listening on tcp://%s:%d (poller=%s, loops=%d)\n", o->host, bound.port, poller, o->loops);
    fflush(stdout);
    loop((void *)(intptr_t)first);
}

#endif
