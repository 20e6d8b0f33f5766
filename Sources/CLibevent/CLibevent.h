// libevent 2.1 for the PollerLibevent backend: the event base and events, plus pthreads
// locking so that event_active() may be called from any thread (the waker).
#ifndef C_LIBEVENT_H
#define C_LIBEVENT_H

// System headers first: event2/event-config.h defines _GNU_SOURCE, which would otherwise give
// this module a definition of fd_set (and friends) different from the one Glibc's module has.
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netdb.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#endif
