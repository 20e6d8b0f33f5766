/* The C floor for UDP echo: one thread, one socket, recvmmsg a batch of up to 64 datagrams
 * (blocking for the first), sendmmsg each back to its sender. What a server written against
 * the kernel directly costs; gnet's UDP echo is measured against it.
 *
 *   udp-echo [--host 127.0.0.1] [--port 9000] [--loops 1]
 * Prints `listening on udp://HOST:PORT (poller=c, loops=1)` when ready. --loops is accepted for
 * the command line run.sh gives every server, and must be 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 65536

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 9000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--loops") && atoi(argv[i + 1]) != 1) { fprintf(stderr, "udp-echo: --loops must be 1\n"); return 2; }
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sin.sin_addr);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) { perror("bind"); return 1; }
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    printf("listening on udp://%s:%d (poller=c, loops=1)\n", host, ntohs(sin.sin_port));
    fflush(stdout);

    static unsigned char bufs[BATCH][SLOT];
    static struct sockaddr_storage from[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr in[BATCH], out[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){bufs[i], SLOT};
            in[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) {
            iov[i].iov_len = in[i].msg_len;
            out[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = in[i].msg_hdr.msg_namelen, .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        for (int sent = 0; sent < n;) {
            int k = sendmmsg(fd, out + sent, n - sent, 0);
            if (k <= 0) break; /* a refused or full send: the datagram is lost, as UDP allows */
            sent += k;
        }
    }
}
