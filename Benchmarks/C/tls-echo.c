/*
 * The C floor for TLS: what a single-threaded, level-triggered epoll server costs at least with
 * the system's OpenSSL 3 — the library GNetTLS uses — doing nothing but TLS. Echoes plaintext;
 * serves `openssl s_time` handshakes and `loadgen --tls`. It is configured as GNetTLS's server
 * context is by default: one SSL_CTX, partial and moving writes, buffers released when idle,
 * OpenSSL's default two TLS 1.3 tickets. A socket BIO with read-ahead (one read per batch of
 * records, not two per record).
 *
 *   cc -O2 -pthread -o c-tls-echo tls-echo.c -lssl -lcrypto
 *   c-tls-echo --tls-cert server.pem --tls-key server.key [--host 127.0.0.1] [--port 9000] [--loops 1]
 */
#include "server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

struct conn {
    SSL *ssl;
    int established;
    struct outq pending;  /* plaintext SSL_write has not taken yet */
};

static SSL_CTX *ctx;
static struct conn *conns;  /* indexed by fd; each fd belongs to one loop thread */
static int max_fd;

static void on_open(int fd) {
    struct conn *c = &conns[fd];
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) die("SSL_new");
    SSL_set_accept_state(c->ssl);
    c->established = 0;
}

static void close_conn(int ep, int fd) {
    struct conn *c = &conns[fd];
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    SSL_free(c->ssl);
    c->ssl = NULL;
    outq_free(&c->pending);
    ERR_clear_error();
    close(fd);
}

/* Hands p[0..n) to SSL_write, keeping what it does not take. 1: output pending, 0: all taken, -1: failed. */
static int ssl_write_or_queue(struct conn *c, const char *p, size_t n) {
    size_t done = 0;
    if (c->pending.len == c->pending.off) {
        while (done < n) {
            int w = SSL_write(c->ssl, p + done, (int)(n - done));
            if (w > 0) { done += (size_t)w; continue; }
            int e = SSL_get_error(c->ssl, w);
            if (e == SSL_ERROR_WANT_WRITE) break;
            return -1;
        }
    }
    if (done == n) return c->pending.len > c->pending.off;
    outq_append(&c->pending, p + done, n - done);
    return 1;
}

/* Retries pending plaintext. 1: some remains, 0: drained, -1: failed. */
static int ssl_flush(struct conn *c) {
    struct outq *q = &c->pending;
    while (q->off < q->len) {
        int w = SSL_write(c->ssl, q->data + q->off, (int)(q->len - q->off));
        if (w > 0) { q->off += (size_t)w; continue; }
        return SSL_get_error(c->ssl, w) == SSL_ERROR_WANT_WRITE ? 1 : -1;
    }
    q->off = q->len = 0;
    return 0;
}

/* Drives the handshake, then echoes every record that is in. Returns the interest to wait for, or 0 to close. */
static uint32_t serve(struct conn *c, char *buf, size_t size) {
    if (!c->established) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) return EPOLLIN;
            if (e == SSL_ERROR_WANT_WRITE) return EPOLLOUT;
            return 0;
        }
        c->established = 1;
    }
    for (;;) {
        int r = SSL_read(c->ssl, buf, (int)size);
        if (r > 0) {
            int w = ssl_write_or_queue(c, buf, (size_t)r);
            if (w < 0) return 0;
            if (w > 0) return EPOLLOUT;  /* stop reading until the peer takes our output */
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) return EPOLLIN;
        if (e == SSL_ERROR_WANT_WRITE) return EPOLLOUT;
        if (e == SSL_ERROR_ZERO_RETURN) SSL_shutdown(c->ssl);  /* their close_notify: answer it */
        return 0;
    }
}

static void *loop(void *arg) {
    int lfd = (int)(intptr_t)arg;
    int ep = loop_epoll(lfd);
    static __thread char buf[READ_BUFFER];
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = wait_events(ep, events, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) { accept_all(ep, lfd, max_fd, on_open); continue; }
            struct conn *c = &conns[fd];
            if ((events[i].events & EPOLLOUT) && c->established) {
                int r = ssl_flush(c);
                if (r < 0) { close_conn(ep, fd); continue; }
                if (r > 0) continue;
            }
            uint32_t want = serve(c, buf, sizeof buf);
            if (!want) { close_conn(ep, fd); continue; }
            set_interest(ep, fd, want);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *cert = NULL, *key = NULL;
    char *rest[16];
    int nrest = 0;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tls-cert") && i + 1 < argc) cert = argv[++i];
        else if (!strcmp(argv[i], "--tls-key") && i + 1 < argc) key = argv[++i];
        else if (nrest < 15) rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    if (!cert || !key) {
        fprintf(stderr, "usage: %s --tls-cert PEM --tls-key PEM [--host 127.0.0.1] [--port 9000] [--loops 1]\n", argv[0]);
        return 2;
    }
    struct options o = parse_options(nrest, rest);
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    max_fd = raise_nofile();
    conns = calloc((size_t)max_fd, sizeof *conns);
    if (!conns) die("calloc");
    run_loops(&o, "c-epoll+openssl", loop);
    return 0;
}
