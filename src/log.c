#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "rng.h"
#include "rnnd/status.h"

/* Is F the stream systemd connected to the journal? ($JOURNAL_STREAM is "DEV:INODE" of it.) */
static int is_journal(FILE *f)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (!f || !js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(fileno(f), &st))
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void rnnd_log_init(rnnd_log *log, int level, FILE *f)
{
    log->level = level;
    log->f = f;
    log->journal = is_journal(f);
}

/* sd-daemon(3) priority prefixes: the journal then files each line at its level. */
static const char *journal_prefix(int level)
{
    switch (level) {
    case RNND_LOG_DEBUG: return "<7>";
    case RNND_LOG_INFO: return "<6>";
    case RNND_LOG_WARN: return "<4>";
    default: return "<3>";
    }
}

const char *rnnd_log_level_name(int level)
{
    switch (level) {
    case RNND_LOG_DEBUG: return "debug";
    case RNND_LOG_INFO: return "info";
    case RNND_LOG_WARN: return "warn";
    case RNND_LOG_ERROR: return "error";
    }
    return "unknown";
}

void rnnd_log_write(const rnnd_log *log, int level, const char *event, const char *fmt, ...)
{
    if (level < log->level || !log->f)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof line, "%sts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                 log->journal ? journal_prefix(level) : "", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 rnnd_log_level_name(level), event);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (fmt && *fmt && len + 2 < sizeof line) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + len, sizeof line - len, fmt, ap);
        va_end(ap);
        if (m > 0)
            len += (size_t)m < sizeof line - len ? (size_t)m : sizeof line - len - 1;
    }
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* one fwrite per line: stdio locks the stream per call, so lines never interleave */
    fwrite(line, 1, len, log->f);
    fflush(log->f);
}

static char *quote(char *dst, size_t n, const char *s, int ids)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    size_t j = 0;
    if (n < 3) {
        if (n)
            dst[0] = '\0';
        return dst;
    }
    dst[j++] = '"';
    for (; s && *s && j + 3 < n; s++) {
        unsigned char c = (unsigned char)*s;
        size_t run = ids && strchr(hex, c) ? strspn(s, hex) : 0;
        if (run >= RNND_ID_LEN) {
            /* the whole run or nothing of it: a cut run would still show most of an id */
            if (j + 4 + 2 > n)
                break;
            memcpy(dst + j, "{id}", 4);
            j += 4;
            s += run - 1;
            continue;
        }
        if (c == '"' || c == '\\') {
            dst[j++] = '\\';
            dst[j++] = (char)c;
        } else if (c < 0x20) {
            dst[j++] = ' ';
        } else {
            dst[j++] = (char)c;
        }
    }
    dst[j++] = '"';
    dst[j] = '\0';
    return dst;
}

char *rnnd_log_quote(char *dst, size_t n, const char *s) { return quote(dst, n, s, 0); }

char *rnnd_log_quote_ids(char *dst, size_t n, const char *s) { return quote(dst, n, s, 1); }

void rnnd_log_limit_init(rnnd_log_limit *lim)
{
    memset(lim, 0, sizeof *lim);
    pthread_mutex_init(&lim->mu, NULL);
}

void rnnd_log_limit_destroy(rnnd_log_limit *lim) { pthread_mutex_destroy(&lim->mu); }

/* KIND's slot; a free one, or failing that the one idle longest, for a new kind. */
static size_t limit_slot(const rnnd_log_limit *lim, const void *kind)
{
    size_t pick = 0;
    for (size_t i = 0; i < RNND_LOG_KINDS; i++) {
        if (lim->slot[i].kind == kind)
            return i;
        if (lim->slot[pick].kind &&
            (!lim->slot[i].kind || lim->slot[i].next < lim->slot[pick].next))
            pick = i;
    }
    return pick;
}

int rnnd_log_limit_pass(rnnd_log_limit *lim, const void *kind, unsigned long *held)
{
    double now = rnnd_mono_s();
    pthread_mutex_lock(&lim->mu);
    size_t i = limit_slot(lim, kind);
    if (lim->slot[i].kind != kind) {
        lim->slot[i].kind = kind;
        lim->slot[i].next = 0;
        lim->slot[i].held = 0;
    }
    int pass = now >= lim->slot[i].next;
    if (pass) {
        *held = lim->slot[i].held;
        lim->slot[i].held = 0;
        lim->slot[i].next = now + 1;
    } else {
        lim->slot[i].held++;
    }
    pthread_mutex_unlock(&lim->mu);
    return pass;
}
