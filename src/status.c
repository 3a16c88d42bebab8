#include "rnnd/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

const char *rnnd_status_str(int status)
{
    switch (status) {
    case RNND_OK: return "ok";
    case RNND_ERR_NOMEM: return "out of memory";
    case RNND_ERR_IO: return "i/o error";
    case RNND_ERR_FORMAT: return "malformed file";
    case RNND_ERR_INVALID: return "invalid input";
    case RNND_ERR_UNSUPPORTED: return "unsupported";
    case RNND_ERR_LIMIT: return "limit exceeded";
    case RNND_ERR_NUMERIC: return "non-finite result";
    case RNND_ERR_INTERNAL: return "internal error";
    case RNND_ERR_CONFLICT: return "conflict";
    case RNND_ERR_BUSY: return "busy";
    case RNND_ERR_STOPPED: return "stopped";
    case RNND_ERR_AUTH: return "not authenticated";
    }
    return "unknown status";
}

int rnnd_fail(int status, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

double rnnd_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void rnnd_mono_deadline(struct timespec *ts, long us)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_nsec += (us % 1000000) * 1000;
    ts->tv_sec += us / 1000000 + ts->tv_nsec / 1000000000;
    ts->tv_nsec %= 1000000000;
}
