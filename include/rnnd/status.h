/* One status code space for every module: 0 is success, negatives are failures. */
#ifndef RNND_STATUS_H
#define RNND_STATUS_H

#include <stddef.h>
#include <time.h>

typedef enum rnnd_status {
    RNND_OK = 0,
    RNND_ERR_NOMEM = -1,   /* allocation failed */
    RNND_ERR_IO = -2,      /* open/read/write failed */
    RNND_ERR_FORMAT = -3,  /* a model or snapshot file is malformed */
    RNND_ERR_INVALID = -4, /* a request or argument is malformed */
    RNND_ERR_UNSUPPORTED =
        -5,                /* valid, but not something rnnd can do (e.g. step a reverse layer) */
    RNND_ERR_LIMIT = -6,   /* a configured limit was exceeded */
    RNND_ERR_NUMERIC = -7, /* the computation produced NaN or Inf */
    RNND_ERR_INTERNAL = -8,
    RNND_ERR_CONFLICT = -9, /* valid, but not for this resource (a state of another model) */
    RNND_ERR_BUSY = -10,    /* would fit alone, but not now: a shared budget is spent */
    RNND_ERR_STOPPED = -11, /* given up part way because the server is stopping */
    RNND_ERR_AUTH = -12     /* a file is not authenticated by its key (a snapshot's MAC) */
} rnnd_status;

/* A short constant description of a status ("ok", "out of memory", ...). */
const char *rnnd_status_str(int status);

/* Write the message FMT into ERR (ERRLEN bytes; ERR may be NULL) and return STATUS: the one
 * way a function reports why it failed. */
int rnnd_fail(int status, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Seconds on the monotonic clock: for intervals and deadlines, never for dates. */
double rnnd_mono_s(void);

/* TS := the monotonic clock now plus US microseconds: the absolute deadline that
 * pthread_cond_timedwait takes on a condition variable set to CLOCK_MONOTONIC. */
void rnnd_mono_deadline(struct timespec *ts, long us);

#endif
