/* A generation answered over HTTP, for both protocols that start one (api_generate.c: v1;
 * api_v2_generate.c: Triton's generate extension). It runs the generation engine
 * (generate.h) on a session, owns the temporary session of a model-level generation, and
 * either replies to the deferred request or writes a server-sent event stream (sse.h); the
 * protocol says only what an event, the end and a refusal look like.
 *
 * Lifetime: rnnd_gen_http_new() -> the caller fills P -> rnnd_gen_http_start(), after which
 * the object belongs to the engine and is freed after the end (or at once, when nothing
 * started). Callbacks run on worker threads, never two at once for one generation. */
#ifndef RNND_GEN_HTTP_H
#define RNND_GEN_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "generate.h"
#include "http.h"
#include "sse.h"

typedef struct rnnd_gen_http rnnd_gen_http;

typedef struct rnnd_gen_protocol {
    /* The data of the event that streams one token (streams only). */
    void (*token_event)(const rnnd_gen_http *q, rnnd_buf *b, int32_t id, const char *text,
                        size_t len, size_t index, uint64_t step);
    /* The end of a JSON reply: reply to R (200 or the error RES names). */
    void (*reply)(const rnnd_gen_http *q, rnnd_req *r, const rnnd_gen_result *res);
    /* The end of a stream: its last events on ST (the stream is closed after). */
    void (*stream_end)(const rnnd_gen_http *q, rnnd_stream *st, const rnnd_gen_result *res);
    /* Nothing started: reply to R why, WHY being rnnd_generate()'s (a session's fate, or -1
     * when out of memory, ERR saying so). */
    void (*refuse)(rnnd_req *r, int why, const char *err);
} rnnd_gen_protocol;

struct rnnd_gen_http {
    const rnnd_gen_protocol *proto;
    rnnd_app *app;
    const rnnd_entry *e;
    rnnd_gen_params p; /* the sampling: the caller fills it before the start */
    rnnd_req *r;       /* a JSON reply: the deferred request */
    rnnd_stream *st;   /* an event stream: the producer's reference */
    rnnd_session *tmp; /* a model's generation: its temporary session (a reference) */
    rnnd_session *own; /* a session's generation in cluster mode: written behind when done */
    int moved;         /* OWN left this node before or while it ran: no step count is told */
};

/* A new generation of E's model, answered in PROTO's words; NULL when out of memory. */
rnnd_gen_http *rnnd_gen_http_new(const rnnd_gen_protocol *proto, rnnd_app *app,
                                 const rnnd_entry *e);

/* Free Q before it started; removes its temporary session. NULL is a no-op. */
void rnnd_gen_http_free(rnnd_gen_http *q);

/* Generate on S (the caller keeps its own reference; TMP: S is a temporary session, removed
 * at the end, before the client hears it) from PROMPT (N >= 1 ids, copied), answering R as one
 * JSON reply or, with STREAM, as server-sent events. Returns 0 when started: the protocol's
 * callbacks answer. Otherwise R has been answered by PROTO's refuse(), and Q is freed. */
int rnnd_gen_http_start(rnnd_gen_http *q, rnnd_req *r, rnnd_session *s, int tmp, int stream,
                        const int32_t *prompt, size_t n);

#endif
