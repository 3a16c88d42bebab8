/* Server-sent events framing (the WHATWG "text/event-stream" format) on an rnnd_stream:
 * one event per call, written whole, so a reader never sees half an event. Our JSON never
 * holds a raw newline (the encoder escapes them), so every payload is one data line. */
#ifndef RNND_SSE_H
#define RNND_SSE_H

#include <stddef.h>

#include "http.h"
#include "rnnd/buf.h"

#define RNND_SSE_TYPE "text/event-stream; charset=utf-8"

/* "event: EVENT\n" (when EVENT is not NULL) "data: JSON\n\n". Returns rnnd_stream_write's
 * result; a failed buffer writes nothing and returns -1. JSON is left as it was. */
int rnnd_sse_event(rnnd_stream *st, const char *event, const rnnd_buf *json);

/* "data: [DONE]\n\n": the end marker OpenAI-style clients wait for. */
int rnnd_sse_done(rnnd_stream *st);

#endif
