/* Socket activation (listenfd.h): find the socket systemd passed and check it is one rnnd can
 * accept connections on, so a wrong rnnd.socket fails at start with a reason instead of
 * hanging in accept(). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "listenfd.h"
#include "rnnd/status.h"

#define FIRST_FD 3 /* SD_LISTEN_FDS_START */

#ifdef HAVE_LIBSYSTEMD
static int passed_count(char *err, size_t errlen)
{
    int n = sd_listen_fds(1); /* 1: unset the variables; sets close-on-exec on each fd */
    if (n < 0) {
        snprintf(err, errlen, "socket activation: bad LISTEN_PID or LISTEN_FDS: %s", strerror(-n));
        return RNND_ERR_INVALID;
    }
    return n;
}
#else
/* A whole decimal number in 0..MAX, or -1. */
static long parse_count(const char *s, long max)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > (unsigned long)max)
        return -1;
    return (long)v;
}

/* The protocol of sd_listen_fds(3), for builds without libsystemd, checked in its order. */
static int passed_count(char *err, size_t errlen)
{
    const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
    int rc = 0;
    long pid = pid_s ? parse_count(pid_s, LONG_MAX) : 0;
    long n = fds_s ? parse_count(fds_s, INT_MAX - FIRST_FD) : 0;
    if (!pid_s || !fds_s) {
        rc = 0;
    } else if (pid < 0) {
        snprintf(err, errlen, "socket activation: bad LISTEN_PID=\"%.20s\"", pid_s);
        rc = RNND_ERR_INVALID;
    } else if (pid != (long)getpid()) {
        rc = 0; /* the variables were meant for a parent; none is ours */
    } else if (n <= 0) {
        snprintf(err, errlen, "socket activation: bad LISTEN_FDS=\"%.20s\"", fds_s);
        rc = RNND_ERR_INVALID;
    } else {
        rc = (int)n;
        for (int fd = FIRST_FD; fd < FIRST_FD + n; fd++) {
            int flags = fcntl(fd, F_GETFD);
            if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
                snprintf(err, errlen, "socket activation: fd %d: %s", fd, strerror(errno));
                rc = RNND_ERR_INVALID;
                break;
            }
        }
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return rc;
}
#endif

/* FD is a listening stream socket of a family libmicrohttpd accepts on. */
static int check_socket(int fd, char *err, size_t errlen)
{
    struct stat st;
    int type = 0, listening = 0, domain = 0;
    socklen_t len = sizeof type;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "socket activation: fd %d is not a socket", fd);
        return RNND_ERR_INVALID;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
        snprintf(err, errlen,
                 "socket activation: fd %d is not a stream socket "
                 "(rnnd.socket needs ListenStream=)",
                 fd);
        return RNND_ERR_INVALID;
    }
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        snprintf(err, errlen,
                 "socket activation: fd %d is not listening "
                 "(rnnd.socket must not set Accept=yes)",
                 fd);
        return RNND_ERR_INVALID;
    }
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        (domain != AF_INET && domain != AF_INET6 && domain != AF_UNIX)) {
        snprintf(err, errlen,
                 "socket activation: fd %d is of address family %d, not "
                 "IPv4, IPv6 or a UNIX socket",
                 fd, domain);
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}

int rnnd_listen_fd(int *fd, char *err, size_t errlen)
{
    *fd = -1;
    int n = passed_count(err, errlen);
    if (n <= 0)
        return n;
    if (n > 1) {
        snprintf(err, errlen,
                 "socket activation: %d sockets passed (LISTEN_FDS=%d); rnnd "
                 "serves on exactly one: give rnnd.socket a single ListenStream=",
                 n, n);
        return RNND_ERR_INVALID;
    }
    int rc = check_socket(FIRST_FD, err, errlen);
    if (!rc)
        *fd = FIRST_FD;
    return rc;
}
