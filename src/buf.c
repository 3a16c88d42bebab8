/* A growable text buffer for JSON responses (rnnd/buf.h). */
#include "rnnd/buf.h"

#include "rnnd/fmtfloat.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rnnd_buf_init(rnnd_buf *b) { memset(b, 0, sizeof *b); }

void rnnd_buf_free(rnnd_buf *b)
{
    free(b->data);
    rnnd_buf_init(b);
}

char *rnnd_buf_steal(rnnd_buf *b, size_t *len)
{
    char *d = b->data;
    size_t n = b->len;

    if (!d) {
        /* Never hand out NULL for an empty buffer that has not failed: callers print it. */
        d = malloc(1);
        if (d)
            d[0] = '\0';
        n = 0;
    }
    rnnd_buf_init(b);
    if (len)
        *len = d ? n : 0;
    return d;
}

int rnnd_buf_failed(const rnnd_buf *b) { return b->failed; }

/* Make room for N more bytes plus the terminating NUL. Returns 0, or -1 (and marks the
 * buffer failed) when the size overflows or allocation fails. */
static int reserve(rnnd_buf *b, size_t n)
{
    if (b->failed)
        return -1;
    if (n > SIZE_MAX - b->len - 1) {
        b->failed = 1;
        return -1;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int rnnd_buf_reserve(rnnd_buf *b, size_t n)
{
    /* exactly: a caller that knows its size wants no doubling slack on top */
    if (b->failed || n > SIZE_MAX - b->len - 1) {
        b->failed = 1;
        return -1;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    char *d = realloc(b->data, need);
    if (!d) {
        b->failed = 1;
        return -1;
    }
    b->data = d;
    b->cap = need;
    return 0;
}

void rnnd_buf_append(rnnd_buf *b, const char *s, size_t n)
{
    if (reserve(b, n))
        return;
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void rnnd_buf_puts(rnnd_buf *b, const char *s) { rnnd_buf_append(b, s, strlen(s)); }

void rnnd_buf_printf(rnnd_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        rnnd_buf_append(b, small, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void rnnd_buf_float(rnnd_buf *b, float v)
{
    if (!isfinite(v)) {
        /* JSON has no NaN or Inf. Write something parseable; the buffer is failed from
         * here on, like after an allocation failure, and the caller reports the error. */
        rnnd_buf_append(b, "null", 4);
        b->nonfinite = 1;
        b->failed = 1;
        return;
    }
    /* Shortest text that reads back as V; "-0.0" for negative zero (fmtfloat.h). No printf:
     * a response carries thousands of floats, and the locale cannot put a comma in. */
    if (reserve(b, RNND_FMT_FLOAT_MAX))
        return;
    b->len += rnnd_fmt_float(v, b->data + b->len);
}

void rnnd_buf_floats(rnnd_buf *b, const float *v, size_t n)
{
    /* room for typical texts up front (most are 9-11 characters with the comma): one
     * realloc instead of doubling from 256 bytes through a 512-float reply */
    if (n <= (SIZE_MAX - 2) / 12 && reserve(b, n * 12 + 2))
        return;
    rnnd_buf_append(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        /* the common case inline: a finite float and room for a comma and its longest text
         * (rnnd_fmt_float writes the NUL); anything else goes the checked way */
        if (!b->failed && b->cap - b->len > RNND_FMT_FLOAT_MAX + 1 && isfinite(v[i])) {
            if (i)
                b->data[b->len++] = ',';
            b->len += rnnd_fmt_float(v[i], b->data + b->len);
            continue;
        }
        if (i)
            rnnd_buf_append(b, ",", 1);
        rnnd_buf_float(b, v[i]);
    }
    rnnd_buf_append(b, "]", 1);
}

/* Length of the valid UTF-8 sequence at S (at most N bytes), or 0 when it is not valid
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void rnnd_buf_json_string(rnnd_buf *b, const char *s) { rnnd_buf_json_stringn(b, s, strlen(s)); }

void rnnd_buf_json_stringn(rnnd_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    rnnd_buf_append(b, "\"", 1);
    while (i < n) {
        /* Copy the longest run that needs no escaping in one go. */
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            rnnd_buf_append(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned c = p[i];
        if (c >= 0x80) {
            size_t len = utf8_len(p + i, n - i);
            if (len) {
                rnnd_buf_append(b, s + i, len);
                i += len;
            } else {
                /* Invalid UTF-8 (e.g. a message cut mid-character): U+FFFD keeps the
                 * output valid JSON. */
                rnnd_buf_append(b, "\xef\xbf\xbd", 3);
                i++;
            }
            continue;
        }
        switch (c) {
        case '"': rnnd_buf_append(b, "\\\"", 2); break;
        case '\\': rnnd_buf_append(b, "\\\\", 2); break;
        case '\b': rnnd_buf_append(b, "\\b", 2); break;
        case '\f': rnnd_buf_append(b, "\\f", 2); break;
        case '\n': rnnd_buf_append(b, "\\n", 2); break;
        case '\r': rnnd_buf_append(b, "\\r", 2); break;
        case '\t': rnnd_buf_append(b, "\\t", 2); break;
        default: rnnd_buf_printf(b, "\\u%04x", c); break;
        }
        i++;
    }
    rnnd_buf_append(b, "\"", 1);
}
