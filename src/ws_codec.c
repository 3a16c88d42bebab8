/* The binary frames' layout (ws_codec.h): byte by byte, so the host's order never matters. */
#include "ws_codec.h"

#include <stdio.h>
#include <string.h>

#include "rnnd/status.h"

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

int rnnd_ws_head_parse(const uint8_t *data, size_t len, rnnd_ws_head *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len < RNND_WS_HEAD || data[0] != 'R' || data[1] != 'W') {
        snprintf(err, errlen, "a binary frame must start with the 24-byte header \"RW\"...");
        return RNND_ERR_UNSUPPORTED;
    }
    if (data[2] != RNND_WS_VERSION || (data[3] != RNND_WS_F32 && data[3] != RNND_WS_I32)) {
        snprintf(err, errlen, "binary frame version %u kind %u: only version 1, kind 1 or 2",
                 data[2], data[3]);
        return RNND_ERR_UNSUPPORTED;
    }
    out->kind = data[3];
    out->seq = get_u32(data + 4);
    out->n_steps = get_u32(data + 8);
    uint32_t flags = get_u32(data + 12);
    if (flags & ~(RNND_WS_LAST | RNND_WS_IF_STEPS)) {
        snprintf(err, errlen, "binary frame flags 0x%x: only bits 0 and 1 are defined",
                 (unsigned)flags);
        return RNND_ERR_INVALID;
    }
    out->last_only = (flags & RNND_WS_LAST) != 0;
    out->if_steps = -1;
    if (flags & RNND_WS_IF_STEPS) {
        uint64_t v = get_u64(data + 16);
        if (v > (uint64_t)INT64_MAX) {
            snprintf(err, errlen, "if_steps: must be from 0 to %lld", (long long)INT64_MAX);
            return RNND_ERR_INVALID;
        }
        out->if_steps = (int64_t)v;
    }
    out->payload = data + RNND_WS_HEAD;
    out->payload_len = len - RNND_WS_HEAD;
    if (!out->n_steps) {
        snprintf(err, errlen, "n_steps: 0; give at least one step");
        return RNND_ERR_INVALID;
    }
    if (out->payload_len % ((size_t)out->n_steps * 4)) {
        snprintf(err, errlen, "%zu payload bytes are not %u steps of 4-byte values",
                 out->payload_len, (unsigned)out->n_steps);
        return RNND_ERR_INVALID;
    }
    return 0;
}

void rnnd_ws_get_f32(const uint8_t *p, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get_u32(p + 4 * i);
        memcpy(&out[i], &u, sizeof u);
    }
}

void rnnd_ws_get_i32(const uint8_t *p, size_t n, int64_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)get_u32(p + 4 * i);
}

void rnnd_ws_reply_put(rnnd_buf *b, uint64_t steps, size_t rows, size_t width, const float *out)
{
    uint8_t head[RNND_WS_HEAD] = {'R', 'W', RNND_WS_VERSION, RNND_WS_OUT_F32};
    put_u32(head + 8, (uint32_t)rows);
    put_u32(head + 12, (uint32_t)width);
    put_u64(head + 16, steps);
    if (rnnd_buf_reserve(b, RNND_WS_HEAD + rows * width * 4))
        return;
    rnnd_buf_append(b, (const char *)head, sizeof head);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    rnnd_buf_append(b, (const char *)out, rows * width * sizeof *out);
#else
    for (size_t i = 0; i < rows * width; i++) {
        uint32_t u;
        memcpy(&u, &out[i], sizeof u);
        uint8_t le[4];
        put_u32(le, u);
        rnnd_buf_append(b, (const char *)le, sizeof le);
    }
#endif
}

void rnnd_ws_reply_seq(char *reply, size_t len, uint32_t seq)
{
    if (len >= RNND_WS_HEAD)
        put_u32((uint8_t *)reply + 4, seq);
}
