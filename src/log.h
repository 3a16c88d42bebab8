/* Levelled logging in logfmt (key=value) lines on one stream, one write per line so lines of
 * different threads never interleave. The level is checked before anything is formatted. */
#ifndef RNND_LOG_H
#define RNND_LOG_H

#include <pthread.h>
#include <stdio.h>

enum rnnd_log_level { RNND_LOG_DEBUG = 0, RNND_LOG_INFO, RNND_LOG_WARN, RNND_LOG_ERROR };

typedef struct rnnd_log {
    int level;   /* lines below this level are dropped */
    FILE *f;     /* usually stderr */
    int journal; /* F is systemd's journal stream: lines get <N> priority prefixes */
} rnnd_log;

void rnnd_log_init(rnnd_log *log, int level, FILE *f);

/* Write "ts=... level=LEVEL event=EVENT " followed by FMT's key=value pairs and a newline.
 * Prefer the RNND_LOG macro, which skips the call when the level is off. */
void rnnd_log_write(const rnnd_log *log, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define RNND_LOG(log, lvl, event, ...) \
    do { \
        if ((lvl) >= (log)->level) \
            rnnd_log_write((log), (lvl), (event), __VA_ARGS__); \
    } while (0)

/* Copy S into DST (size N) as a logfmt value: quoted, with " and \ and control characters
 * escaped, truncated to fit. Returns DST. */
char *rnnd_log_quote(char *dst, size_t n, const char *s);

/* rnnd_log_quote() for text a client chose (a path, a model name): a session id is a
 * capability, so every run of RNND_ID_LEN or more hex digits (either case) becomes {id},
 * wherever it stands, whether or not it names a session. */
char *rnnd_log_quote_ids(char *dst, size_t n, const char *s);

const char *rnnd_log_level_name(int level);

/* Warnings that can repeat as fast as clients connect (libmicrohttpd's, a full lingering
 * close) go out at most once a second per kind; the others are counted, and the next line
 * of that kind says how many were held back. 25,643 lines in 3 s drowned the audit's log. */
#define RNND_LOG_KINDS 16

typedef struct rnnd_log_limit {
    pthread_mutex_t mu;
    struct {
        const void *kind;   /* NULL: a free slot */
        double next;        /* monotonic seconds: the next line may go out then */
        unsigned long held; /* lines held back since the last one */
    } slot[RNND_LOG_KINDS];
} rnnd_log_limit;

void rnnd_log_limit_init(rnnd_log_limit *lim);
void rnnd_log_limit_destroy(rnnd_log_limit *lim);

/* 1 when a line of KIND (a pointer that stays the same for the kind, e.g. its format
 * string) may go out now, with *HELD set to the lines of KIND held back since the last one
 * that went out; 0 when it is to be held back (and is counted). Any thread. */
int rnnd_log_limit_pass(rnnd_log_limit *lim, const void *kind, unsigned long *held);

#endif
