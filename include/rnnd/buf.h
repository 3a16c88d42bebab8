/* A growable text buffer for building JSON responses without a DOM: the hot path writes
 * thousands of floats per response, and jansson's per-number objects cost more than the math.
 * Allocation failure is sticky: the buffer records it and later appends do nothing, so callers
 * check once at the end with rnnd_buf_failed(). */
#ifndef RNND_BUF_H
#define RNND_BUF_H

#include <stddef.h>

typedef struct rnnd_buf {
    char *data; /* NUL-terminated when len > 0 */
    size_t len, cap;
    int failed;    /* an allocation failed, or a non-finite float was appended */
    int nonfinite; /* a NaN or Inf was appended (written as null; JSON has no NaN) */
} rnnd_buf;

void rnnd_buf_init(rnnd_buf *b);
void rnnd_buf_free(rnnd_buf *b);                /* frees data, leaves an empty buffer */
char *rnnd_buf_steal(rnnd_buf *b, size_t *len); /* hands over data (caller frees) */
int rnnd_buf_failed(const rnnd_buf *b);         /* nonzero after OOM or a non-finite float */
/* Make room for N more bytes (and the NUL) now, so appends up to that size never reallocate.
 * Returns 0, or -1 with the buffer failed. */
int rnnd_buf_reserve(rnnd_buf *b, size_t n);

void rnnd_buf_append(rnnd_buf *b, const char *s, size_t n);
void rnnd_buf_puts(rnnd_buf *b, const char *s);
void rnnd_buf_printf(rnnd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A float as the shortest text that parses back to the same float32 (rnnd/fmtfloat.h). */
void rnnd_buf_float(rnnd_buf *b, float v);
/* "[v0,v1,...]" */
void rnnd_buf_floats(rnnd_buf *b, const float *v, size_t n);
/* A JSON string literal with escapes, from UTF-8 text. */
void rnnd_buf_json_string(rnnd_buf *b, const char *s);
/* The same for N bytes that may hold NUL (written as \u0000). */
void rnnd_buf_json_stringn(rnnd_buf *b, const char *s, size_t n);

#endif
