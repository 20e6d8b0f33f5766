#define _GNU_SOURCE 1
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <errno.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>
#include "CGNetLinux.h"

#ifdef __linux__
int cgnet_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int cgnet_iov_max(void) { return IOV_MAX; }

int cgnet_set_thread_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

int cgnet_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    return CPU_COUNT(&set);
}

_Static_assert(sizeof(struct cgnet_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");
_Static_assert(offsetof(struct cgnet_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr layout");

int cgnet_recvmmsg(int fd, struct cgnet_mmsghdr *msgs, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, count, flags, NULL);
}

int cgnet_sendmmsg(int fd, struct cgnet_mmsghdr *msgs, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, count, flags);
}

int cgnet_join_multicast(int fd, const struct sockaddr *group, unsigned int ifindex) {
    if (group->sa_family == AF_INET) {
        struct ip_mreqn m;
        memset(&m, 0, sizeof m);
        m.imr_multiaddr = ((const struct sockaddr_in *)group)->sin_addr;
        m.imr_ifindex = (int)ifindex;
        return setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m);
    }
    if (group->sa_family == AF_INET6) {
        struct ipv6_mreq m;
        memset(&m, 0, sizeof m);
        m.ipv6mr_multiaddr = ((const struct sockaddr_in6 *)group)->sin6_addr;
        m.ipv6mr_interface = ifindex;
        return setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m, sizeof m);
    }
    errno = EAFNOSUPPORT;
    return -1;
}

int cgnet_is_multicast(const struct sockaddr *addr) {
    if (addr->sa_family == AF_INET) {
        return IN_MULTICAST(ntohl(((const struct sockaddr_in *)addr)->sin_addr.s_addr));
    }
    if (addr->sa_family == AF_INET6) {
        return IN6_IS_ADDR_MULTICAST(&((const struct sockaddr_in6 *)addr)->sin6_addr);
    }
    return 0;
}
#endif
