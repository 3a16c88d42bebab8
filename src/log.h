/* Levelled logging in logfmt (key=value) lines on one stream, one write per line so lines of
 * different threads never interleave. The level is checked before anything is formatted. */
#ifndef RNND_LOG_H
#define RNND_LOG_H

#include <stdio.h>

enum rnnd_log_level { RNND_LOG_DEBUG = 0, RNND_LOG_INFO, RNND_LOG_WARN, RNND_LOG_ERROR };

typedef struct rnnd_log {
    int level;      /* lines below this level are dropped */
    FILE *f;        /* usually stderr */
    int journal;    /* F is systemd's journal stream: lines get <N> priority prefixes */
} rnnd_log;

void rnnd_log_init(rnnd_log *log, int level, FILE *f);

/* Write "ts=... level=LEVEL event=EVENT " followed by FMT's key=value pairs and a newline.
 * Prefer the RNND_LOG macro, which skips the call when the level is off. */
void rnnd_log_write(const rnnd_log *log, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define RNND_LOG(log, lvl, event, ...)                                  \
    do {                                                                \
        if ((lvl) >= (log)->level)                                      \
            rnnd_log_write((log), (lvl), (event), __VA_ARGS__);         \
    } while (0)

/* Copy S into DST (size N) as a logfmt value: quoted, with " and \ and control characters
 * escaped, truncated to fit. Returns DST. */
char *rnnd_log_quote(char *dst, size_t n, const char *s);

const char *rnnd_log_level_name(int level);

#endif
