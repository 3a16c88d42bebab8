/* Telling the service manager how the daemon is doing (systemd's sd_notify protocol): ready,
 * reloading, stopping, a one-line status, and watchdog pings.
 *
 * Each call sends one datagram to $NOTIFY_SOCKET through libsystemd when configure found it
 * (HAVE_LIBSYSTEMD); without libsystemd, or when $NOTIFY_SOCKET is unset (not started by
 * systemd, or Type= is not notify), every call does nothing and returns 0. No state is kept:
 * the environment is read on each call, so these are safe from any thread. A failure to send
 * is returned (RNND_ERR_IO) for the caller to log; it never stops the daemon.
 *
 * Order the daemon follows (docs/ops.md):
 *   start:   models loaded, sessions restored, socket listening -> rnnd_notify_ready()
 *   SIGHUP:  rnnd_notify_reloading(), reload, rnnd_notify_ready()
 *   SIGTERM: rnnd_notify_stopping() before draining
 *   while serving: rnnd_notify_watchdog() every rnnd_notify_watchdog_usec() / 2 */
#ifndef RNND_NOTIFY_H
#define RNND_NOTIFY_H

#include <stdint.h>

/* READY=1, with STATUS=STATUS when STATUS is not NULL. */
int rnnd_notify_ready(const char *status);

/* RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC now, which systemd 253 and later expect
 * to match a reload to its READY=1; older versions ignore it). Follow with
 * rnnd_notify_ready() once the reload is over, whether it succeeded or not. */
int rnnd_notify_reloading(void);

/* STOPPING=1: the daemon has begun shutting down. */
int rnnd_notify_stopping(void);

/* STATUS=..., printf-style; at most 255 bytes are sent, newlines become spaces. */
int rnnd_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1: the main loop is alive. */
int rnnd_notify_watchdog(void);

/* The watchdog interval systemd expects pings within (WatchdogSec=, from $WATCHDOG_USEC when
 * $WATCHDOG_PID is unset or this process), in microseconds; 0 when no watchdog is asked
 * for or libsystemd is absent. Ping at half this interval. */
uint64_t rnnd_notify_watchdog_usec(void);

#endif
