/* Triton's binary tensor data extension (docs/v2.md, "Binary tensors"): the bytes of a tensor
 * after the JSON header of an infer request or reply, little-endian whatever the host. These
 * are the conversions alone; api_v2.c checks the sizes against the shape and the body before
 * it calls them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api.h"

int rnnd_v2_header_length(const char *v, size_t *out)
{
    size_t n = 0;
    if (!v || !*v)
        return -1;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || n > (SIZE_MAX - 9) / 10)
            return -1;
        n = n * 10 + (size_t)(*p - '0');
    }
    *out = n;
    return 0;
}

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t rnnd_v2_json_end(const char *s, size_t len)
{
    size_t i = 0, depth = 0;
    while (i < len && blank(s[i]))
        i++;
    if (i == len || s[i] != '{')
        return 0;
    for (int str = 0; i < len; i++) {
        char c = s[i];
        if (str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                str = 0;
        } else if (c == '"') {
            str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            for (i++; i < len && blank(s[i]);)
                i++;
            return i;
        }
    }
    return 0;
}

static uint64_t le(const unsigned char *p, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = bytes; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

int rnnd_v2_binary_floats(const char *src, size_t n, float *out, size_t *bad)
{
    const unsigned char *p = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)le(p + 4 * i, 4);
        memcpy(&out[i], &u, sizeof u);
        /* JSON input cannot carry them either: the same steps must be possible both ways */
        if (!isfinite(out[i])) {
            *bad = i;
            return -1;
        }
    }
    return 0;
}

int rnnd_v2_binary_tokens(const char *src, size_t n, int wide, int vocab, int32_t *out, size_t *bad,
                          int64_t *badval)
{
    const unsigned char *p = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        int64_t v = wide ? (int64_t)le(p + 8 * i, 8) : (int64_t)(int32_t)(uint32_t)le(p + 4 * i, 4);
        if (v < 0 || v >= vocab) {
            *bad = i;
            *badval = v;
            return -1;
        }
        out[i] = (int32_t)v;
    }
    return 0;
}

void rnnd_v2_binary_append(rnnd_buf *b, const float *x, size_t n)
{
    unsigned char w[4];
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        for (int k = 0; k < 4; k++)
            w[k] = (unsigned char)(u >> (8 * k));
        rnnd_buf_append(b, (const char *)w, sizeof w);
    }
}
