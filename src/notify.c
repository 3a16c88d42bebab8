/* sd_notify wrappers (notify.h). With libsystemd absent they compile to no-ops: the daemon
 * must build and run without it, and the protocol is systemd's business to speak. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "notify.h"
#include "rnnd/status.h"

#define STATUS_MAX 256

#ifdef HAVE_LIBSYSTEMD
/* sd_notify: >0 sent, 0 no manager listening, <0 -errno. */
static int send_state(const char *state) { return sd_notify(0, state) < 0 ? RNND_ERR_IO : RNND_OK; }
#else
static int send_state(const char *state)
{
    (void)state;
    return RNND_OK;
}
#endif

/* A status is one line of the protocol: a newline in it would start a bogus assignment. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

int rnnd_notify_ready(const char *status)
{
    if (!status)
        return send_state("READY=1");
    char msg[sizeof "READY=1\nSTATUS=" + STATUS_MAX];
    char line[STATUS_MAX];
    snprintf(line, sizeof line, "%s", status);
    one_line(line);
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", line);
    return send_state(msg);
}

int rnnd_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec =
        (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
    char msg[64];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
    return send_state(msg);
}

int rnnd_notify_stopping(void) { return send_state("STOPPING=1"); }

int rnnd_notify_status(const char *fmt, ...)
{
    char line[STATUS_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    one_line(line);
    char msg[sizeof "STATUS=" + STATUS_MAX];
    snprintf(msg, sizeof msg, "STATUS=%s", line);
    return send_state(msg);
}

int rnnd_notify_watchdog(void) { return send_state("WATCHDOG=1"); }

uint64_t rnnd_notify_watchdog_usec(void)
{
#ifdef HAVE_LIBSYSTEMD
    uint64_t usec = 0;
    /* 0: keep $WATCHDOG_USEC, so the next call (and a re-exec) still sees it */
    if (sd_watchdog_enabled(0, &usec) > 0)
        return usec;
#endif
    return 0;
}
