/*
 * The C floor for echo: what a single-threaded, level-triggered epoll server costs at least.
 * Reads up to 64 KiB and writes it straight back; see server.h for the shared machinery.
 *
 *   cc -O2 -pthread -o c-echo echo.c
 *   c-echo [--host 127.0.0.1] [--port 9000] [--loops 1]
 */
#include "server.h"

static struct outq *queues;  /* indexed by fd; each fd belongs to one loop thread */
static int max_fd;

static void on_open(int fd) { (void)fd; }

static void close_conn(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    outq_free(&queues[fd]);
    close(fd);
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
            uint32_t ev = events[i].events;
            if (fd == lfd) { accept_all(ep, lfd, max_fd, on_open); continue; }
            struct outq *q = &queues[fd];
            if (ev & EPOLLOUT) {
                int r = flush_queue(fd, q);
                if (r < 0) { close_conn(ep, fd); continue; }
                if (r == 0) set_interest(ep, fd, EPOLLIN);  /* drained: read again */
                continue;
            }
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (r <= 0) { close_conn(ep, fd); continue; }
                int w = write_or_queue(fd, q, buf, (size_t)r);
                if (w < 0) { close_conn(ep, fd); continue; }
                if (w > 0) set_interest(ep, fd, EPOLLOUT);  /* stop reading until drained */
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct options o = parse_options(argc, argv);
    max_fd = raise_nofile();
    queues = calloc((size_t)max_fd, sizeof *queues);
    if (!queues) die("calloc");
    run_loops(&o, "c-epoll", loop);
    return 0;
}
