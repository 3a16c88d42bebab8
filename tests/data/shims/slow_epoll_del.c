/* LD_PRELOAD shim for tests/test_shutdown_race.py: the first EPOLL_CTL_DEL that the process's
 * main thread makes waits 300 ms before it runs. That is the call libmicrohttpd's
 * MHD_quiesce_daemon() makes for each pool thread of an epoll daemon, after it has marked the
 * thread quiesced: a request thread that wakes in that window removes the same descriptor
 * itself, and the late call then fails with ENOENT, on which libmicrohttpd 0.9.75 aborts
 * the process (MHD_PANIC). The shim widens a window of microseconds, which CI met once under
 * AddressSanitizer, into one every run meets. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*epoll_ctl_fn)(int, int, int, struct epoll_event *);

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
    static int delayed;
    epoll_ctl_fn real = (epoll_ctl_fn)dlsym(RTLD_NEXT, "epoll_ctl");
    if (op == EPOLL_CTL_DEL && syscall(SYS_gettid) == getpid() &&
        !__atomic_exchange_n(&delayed, 1, __ATOMIC_SEQ_CST)) {
        struct timespec t = {0, 300 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return real(epfd, op, fd, event);
}
