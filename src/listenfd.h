/* Socket activation: take over the listening socket systemd (rnnd.socket) or another
 * launcher passed in, per the sd_listen_fds protocol: $LISTEN_PID is this process,
 * $LISTEN_FDS counts the sockets, the first is fd 3.
 *
 * Works with or without libsystemd (the protocol is three environment variables; with
 * libsystemd its sd_listen_fds() reads them). */
#ifndef RNND_LISTENFD_H
#define RNND_LISTENFD_H

#include <stddef.h>

/* Set *FD to the one listening socket passed to this process: a bound, listening SOCK_STREAM
 * socket of family AF_INET, AF_INET6 or AF_UNIX, which is fd 3 (now close-on-exec); or to -1
 * when none was passed ($LISTEN_FDS unset, or $LISTEN_PID names another process), and
 * return 0. Return RNND_ERR_INVALID with ERR (and *FD = -1) when sockets were passed that
 * rnnd cannot serve on: more than one, or fd 3 not a listening stream socket, or malformed
 * variables. $LISTEN_PID, $LISTEN_FDS and $LISTEN_FDNAMES are removed from the environment in
 * every case, so a second call finds none and no child inherits them. Call once, before any
 * thread starts (it changes the environment). The caller owns the socket. */
int rnnd_listen_fd(int *fd, char *err, size_t errlen);

#endif
