/* UDP echo load: N sockets, each connected to the server, each keeping `depth` datagrams in
 * flight. Every reply is checked: its size, its sequence number and every payload byte (a
 * pattern seeded by the sequence). A datagram not answered within --loss-timeout counts as lost
 * and its slot is refilled; loopback drops only when the server falls behind.
 *
 *   udpgen --port P [--host 127.0.0.1] [--socks 16] [--size 64] [--depth 16]
 *          [--duration 5] [--warmup 1] [--loss-timeout-ms 200]
 * Prints `RESULT msgs_per_s=... p50_us=... p99_us=... p999_us=... errors=E lost=L total_msgs=T`;
 * exits 1 when a reply was wrong (errors > 0). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST 4096
#define MAXDEPTH 256

struct sock {
    int fd;
    int inflight;
    uint64_t next_seq;
    uint64_t sent_at[MAXDEPTH]; /* by seq % depth */
    uint64_t last_reply;
};

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static unsigned char pattern_byte(uint64_t seq, size_t i) { return (unsigned char)((seq * 131 + i * 7 + (i >> 8)) & 0xff); }

static int size, depth;
static uint64_t hist[HIST], measured, errors, lost, total;
static int measuring;

static int bucket(uint64_t ns) {
    double us = ns / 1000.0;
    int b = us < 1 ? 0 : (int)(log(us) * 100);
    return b >= HIST ? HIST - 1 : b;
}

static double pct(double q) {
    uint64_t n = 0, seen = 0;
    for (int i = 0; i < HIST; i++) n += hist[i];
    if (!n) return 0;
    for (int i = 0; i < HIST; i++) {
        seen += hist[i];
        if (seen >= q * n) return exp(i / 100.0);
    }
    return 0;
}

static void send_one(struct sock *s) {
    unsigned char buf[65536];
    uint64_t seq = s->next_seq++;
    memcpy(buf, &seq, 8);
    for (int i = 8; i < size; i++) buf[i] = pattern_byte(seq, i);
    s->sent_at[seq % depth] = now_ns();
    if (send(s->fd, buf, size, 0) == size) s->inflight++;
    else lost++; /* the socket buffer was full: count it as lost, never as answered */
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, nsocks = 16, loss_ms = 200;
    double duration = 5, warmup = 1;
    size = 64, depth = 16;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--socks") || !strcmp(argv[i], "--conns")) nsocks = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--depth")) depth = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--loss-timeout-ms")) loss_ms = atoi(argv[i + 1]);
        else { fprintf(stderr, "udpgen: unknown option %s\n", argv[i]); return 2; }
    }
    if (!port || size < 8 || size > 65000 || depth < 1 || depth > MAXDEPTH || nsocks < 1) {
        fprintf(stderr, "usage: udpgen --port P [--socks N] [--size 8..65000] [--depth 1..256] [--duration S] [--warmup S]\n");
        return 2;
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sin.sin_addr);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct sock *socks = calloc(nsocks, sizeof *socks);
    for (int i = 0; i < nsocks; i++) {
        socks[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int big = 1 << 20;
        setsockopt(socks[i].fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (connect(socks[i].fd, (struct sockaddr *)&sin, sizeof sin) != 0) { perror("connect"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, socks[i].fd, &ev);
    }
    uint64_t start = now_ns(), measure_from = start + (uint64_t)(warmup * 1e9), end = measure_from + (uint64_t)(duration * 1e9);
    for (int i = 0; i < nsocks; i++) {
        socks[i].last_reply = start;
        for (int d = 0; d < depth; d++) send_one(&socks[i]);
    }
    unsigned char buf[65536];
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= measure_from) measuring = 1;
        if (t >= end) break;
        int n = epoll_wait(ep, evs, 256, 10);
        for (int e = 0; e < n; e++) {
            struct sock *s = &socks[evs[e].data.u32];
            for (;;) {
                ssize_t r = recv(s->fd, buf, sizeof buf, 0);
                if (r < 0) break; /* EAGAIN, or ECONNREFUSED from a gone server: the timeout counts it */
                uint64_t seq = 0;
                int bad = r != size;
                if (!bad) {
                    memcpy(&seq, buf, 8);
                    bad = seq >= s->next_seq;
                    for (int i = 8; !bad && i < size; i++) bad = buf[i] != pattern_byte(seq, i);
                }
                uint64_t at = now_ns();
                if (bad) {
                    if (errors++ < 3) fprintf(stderr, "udpgen: a wrong reply of %zd bytes (expected %d)\n", r, size);
                } else {
                    total++;
                    if (measuring && at < end) {
                        measured++;
                        hist[bucket(at - s->sent_at[seq % depth])]++;
                    }
                }
                if (s->inflight > 0) s->inflight--;
                s->last_reply = at;
                if (at < end) send_one(s);
            }
        }
        t = now_ns();
        for (int i = 0; i < nsocks; i++) {
            struct sock *s = &socks[i];
            if (s->inflight > 0 && t - s->last_reply > (uint64_t)loss_ms * 1000000ull) {
                lost += s->inflight; /* given up: refill the window */
                s->inflight = 0;
                s->last_reply = t;
                while (s->inflight < depth && t < end) send_one(s);
            }
        }
    }
    double rate = measured / duration;
    printf("%.0f msgs/s, latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us, errors %llu, lost %llu\n", rate, pct(0.5), pct(0.99),
           pct(0.999), (unsigned long long)errors, (unsigned long long)lost);
    printf("RESULT msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%llu lost=%llu total_msgs=%llu msgs=%llu\n", rate,
           pct(0.5), pct(0.99), pct(0.999), (unsigned long long)errors, (unsigned long long)lost, (unsigned long long)total,
           (unsigned long long)measured);
    return errors ? 1 : 0;
}
