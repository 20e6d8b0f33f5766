// C shim for Linux interfaces that Glibc does not export to Swift (epoll, eventfd, accept4 flags),
// plus a few helpers whose macros Swift cannot import. Every symbol is prefixed `cgnet_`.
#ifndef CGNET_LINUX_H
#define CGNET_LINUX_H

#ifdef __linux__
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>

static const uint32_t CGNET_EPOLLIN = EPOLLIN;
static const uint32_t CGNET_EPOLLOUT = EPOLLOUT;
static const uint32_t CGNET_EPOLLRDHUP = EPOLLRDHUP;
static const uint32_t CGNET_EPOLLHUP = EPOLLHUP;
static const uint32_t CGNET_EPOLLERR = EPOLLERR;
static const uint32_t CGNET_EPOLLET = EPOLLET;
static const int CGNET_SOCK_NONBLOCK = SOCK_NONBLOCK;
static const int CGNET_SOCK_CLOEXEC = SOCK_CLOEXEC;

// Accessors: epoll_event is packed on x86_64, which Swift cannot lay out field by field safely.
static inline uint32_t cgnet_epoll_event_events(const struct epoll_event *e) { return e->events; }
static inline uint64_t cgnet_epoll_event_data(const struct epoll_event *e) { return e->data.u64; }
static inline void cgnet_epoll_event_set(struct epoll_event *e, uint32_t events, uint64_t data) {
    e->events = events;
    e->data.u64 = data;
}

// sun_path's capacity, which Swift sees only as a tuple.
static inline int cgnet_sun_path_capacity(void) { return (int)sizeof(((struct sockaddr_un *)0)->sun_path); }

// accept4, pthread_setname_np and CPU_COUNT are GNU extensions that Glibc's module hides; they
// are wrapped in shim.c, which alone defines _GNU_SOURCE (defining it here would change system
// types under Swift's Glibc module and break builds that import both).
int cgnet_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
// IOV_MAX: the most iovecs one writev/sendmsg takes.
int cgnet_iov_max(void);
int cgnet_set_thread_name(const char *name);
int cgnet_cpu_count(void);

// Datagrams. `struct mmsghdr`, recvmmsg and sendmmsg are GNU extensions too: this is the same
// layout under our own name (shim.c asserts it matches), so Swift can allocate the arrays.
struct cgnet_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
static const int CGNET_MSG_TRUNC = MSG_TRUNC;
static const int CGNET_MSG_DONTWAIT = MSG_DONTWAIT;
int cgnet_recvmmsg(int fd, struct cgnet_mmsghdr *msgs, unsigned int count, int flags);
int cgnet_sendmmsg(int fd, struct cgnet_mmsghdr *msgs, unsigned int count, int flags);
// Joins the multicast group `group` (IPv4 or IPv6, port ignored) on the interface `ifindex`
// (0: the kernel's choice): IP_ADD_MEMBERSHIP with ip_mreqn, or IPV6_JOIN_GROUP. Returns 0 or
// -1 with errno set.
int cgnet_join_multicast(int fd, const struct sockaddr *group, unsigned int ifindex);
// Whether `addr` is a multicast address (224.0.0.0/4, ff00::/8).
int cgnet_is_multicast(const struct sockaddr *addr);

_Static_assert(sizeof(struct epoll_event) == 12 || sizeof(struct epoll_event) == 16,
               "unexpected epoll_event layout");
#endif

#endif
