/*
 * The C floor for plaintext HTTP/1.1: a request is whatever ends at "\r\n\r\n" and every request
 * gets the same fixed response. All responses owed for one read leave in one write. The Date
 * header is re-rendered when the second changes. See server.h for the shared machinery.
 *
 *   cc -O2 -pthread -o c-http http.c
 *   c-http [--host 127.0.0.1] [--port 8080] [--loops 1]
 */
#include "server.h"
#include <time.h>

#define MAX_REQUEST_HEAD 8192

struct conn {
    struct outq out;
    char *partial;       /* bytes of an unfinished request, at most MAX_REQUEST_HEAD */
    size_t partial_len;
};

static struct conn *conns;  /* indexed by fd; each fd belongs to one loop thread */
static int max_fd;

/* The response, per thread, with its Date of second `rendered_at`. */
static __thread char response[256];
static __thread size_t response_len;
static __thread time_t rendered_at;

static void render_response(void) {
    time_t now = time(NULL);
    if (now == rendered_at) return;
    struct tm parts;
    char date[64];
    gmtime_r(&now, &parts);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &parts);
    response_len = (size_t)snprintf(response, sizeof response,
        "HTTP/1.1 200 OK\r\nServer: c\r\nContent-Type: text/plain\r\nDate: %s\r\n"
        "Content-Length: 13\r\n\r\nHello, World!", date);
    rendered_at = now;
}

static void on_open(int fd) { (void)fd; }

static void close_conn(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    outq_free(&conns[fd].out);
    free(conns[fd].partial);
    conns[fd].partial = NULL;
    conns[fd].partial_len = 0;
    close(fd);
}

/* Counts the requests that end in p[0..n); *consumed is one past the last one. */
static int complete_requests(const char *p, size_t n, size_t *consumed) {
    int count = 0;
    size_t end = 0;
    const char *at = p, *stop = p + n;
    while (at < stop && (at = memchr(at, '\n', (size_t)(stop - at))) != NULL) {
        size_t i = (size_t)(at - p);
        if (i >= end + 3 && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
            count++;
            end = i + 1;
        }
        at++;
    }
    *consumed = end;
    return count;
}

/* Answers the requests in p[0..n). Returns -1 to close, else what write_or_queue returned. */
static int serve(int fd, struct conn *c, const char *p, size_t n) {
    static __thread char batch[READ_BUFFER * 4];
    size_t consumed;
    int count = complete_requests(p, n, &consumed);
    size_t rest = n - consumed;
    if (rest > MAX_REQUEST_HEAD) return -1;
    char *keep = NULL;
    if (rest > 0) {  /* p may be c->partial itself: copy before freeing */
        keep = malloc(rest);
        if (!keep) die("malloc");
        memcpy(keep, p + consumed, rest);
    }
    free(c->partial);
    c->partial = keep;
    c->partial_len = rest;
    if (count == 0) return c->out.len > c->out.off;
    size_t len = 0;
    int w = 0;
    for (int i = 0; i < count; i++) {
        if (len + response_len > sizeof batch) {
            if ((w = write_or_queue(fd, &c->out, batch, len)) < 0) return -1;
            len = 0;
        }
        memcpy(batch + len, response, response_len);
        len += response_len;
    }
    return write_or_queue(fd, &c->out, batch, len);
}

static void *loop(void *arg) {
    int lfd = (int)(intptr_t)arg;
    int ep = loop_epoll(lfd);
    static __thread char buf[READ_BUFFER + MAX_REQUEST_HEAD];
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = wait_events(ep, events, 1000);
        render_response();
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            uint32_t ev = events[i].events;
            if (fd == lfd) { accept_all(ep, lfd, max_fd, on_open); continue; }
            struct conn *c = &conns[fd];
            if (ev & EPOLLOUT) {
                int r = flush_queue(fd, &c->out);
                if (r < 0) { close_conn(ep, fd); continue; }
                if (r == 0) set_interest(ep, fd, EPOLLIN);
                continue;
            }
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                /* An unfinished request goes in front of the new bytes. */
                size_t have = c->partial_len;
                if (have) memcpy(buf, c->partial, have);
                ssize_t r = read(fd, buf + have, READ_BUFFER);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (r <= 0) { close_conn(ep, fd); continue; }
                int w = serve(fd, c, buf, have + (size_t)r);
                if (w < 0) { close_conn(ep, fd); continue; }
                if (w > 0) set_interest(ep, fd, EPOLLOUT);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct options o = parse_options(argc, argv);
    max_fd = raise_nofile();
    conns = calloc((size_t)max_fd, sizeof *conns);
    if (!conns) die("calloc");
    run_loops(&o, "c-epoll", loop);
    return 0;
}
