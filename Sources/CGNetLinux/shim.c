#define _GNU_SOURCE 1
#include <limits.h>
#include <pthread.h>
#include <sched.h>
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
#endif
