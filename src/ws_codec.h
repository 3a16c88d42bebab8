/* The binary frames of a WebSocket session (docs/websocket.md, "Binary frames"): a step
 * request as raw little-endian numbers behind a 24-byte header, and its reply likewise.
 *
 * Request (client to server):
 *   0  2  magic "RW"
 *   2  1  version, 1
 *   3  1  kind: 1 = float32 input vectors, 2 = int32 token ids
 *   4  4  seq (u32), echoed in the reply
 *   8  4  n_steps (u32), at least 1
 *  12  4  flags (u32): bit 0 = outputs "last" (one row), bit 1 = if_steps is set; others 0
 *  16  8  if_steps (i64), read when flag bit 1 is set
 *  24     the steps: n_steps x width float32 (width = the model's input_dim) or n_steps int32
 *
 * Reply (server to client) to a request that succeeded (an error is a text frame):
 *   0  2  magic "RW"
 *   2  1  version, 1
 *   3  1  kind: 3 = float32 outputs
 *   4  4  seq (u32)
 *   8  4  rows (u32): n_steps, or 1 for outputs "last"
 *  12  4  width (u32): the model's output_dim
 *  16  8  steps (u64): the session's step count after the request
 *  24     rows x width float32
 *
 * Every field little-endian, whatever the host. */
#ifndef RNND_WS_CODEC_H
#define RNND_WS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "rnnd/buf.h"

#define RNND_WS_HEAD 24
#define RNND_WS_VERSION 1
enum { RNND_WS_F32 = 1, RNND_WS_I32 = 2, RNND_WS_OUT_F32 = 3 };
enum { RNND_WS_LAST = 1u, RNND_WS_IF_STEPS = 2u };

typedef struct rnnd_ws_head {
    unsigned kind; /* RNND_WS_F32 or RNND_WS_I32 */
    uint32_t seq;
    uint32_t n_steps;
    int last_only;
    int64_t if_steps; /* -1: none */
    const uint8_t *payload;
    size_t payload_len;
} rnnd_ws_head;

/* Read the header of the LEN bytes at DATA into *OUT. Returns 0; RNND_ERR_UNSUPPORTED for a
 * frame that is not this layout (magic, version or kind), which closes the socket (1003);
 * RNND_ERR_INVALID for a bad field or a payload whose length does not fit n_steps. ERR says
 * which. The payload's width is checked against the model by the caller. */
int rnnd_ws_head_parse(const uint8_t *data, size_t len, rnnd_ws_head *out, char *err,
                       size_t errlen);

/* The payload's N values at P as host floats (float32) or int64 ids (int32) into OUT. */
void rnnd_ws_get_f32(const uint8_t *p, size_t n, float *out);
void rnnd_ws_get_i32(const uint8_t *p, size_t n, int64_t *out);

/* Append a reply of ROWS x WIDTH floats OUT after STEPS steps to B (its seq 0: rnnd_ws_reply_seq
 * sets it once the request's seq is known). */
void rnnd_ws_reply_put(rnnd_buf *b, uint64_t steps, size_t rows, size_t width, const float *out);
/* Set the seq field of an encoded reply (LEN >= RNND_WS_HEAD). */
void rnnd_ws_reply_seq(char *reply, size_t len, uint32_t seq);

#endif
