/* The HTTP layer on libmicrohttpd: its own thread pool on poll(), a route table, per-request
 * state, the body size limit (413 as soon as it is exceeded, the rest of the body dropped
 * within the bounds of linger.h), JSON decoding with a nesting limit, and suspend/resume so
 * request threads never wait on computation.
 *
 * A handler runs on a request thread with the body already decoded. It either replies at
 * once (rnnd_reply_*), or calls rnnd_req_defer(), hands the work on, and returns; whoever
 * finishes the work sets the reply and calls rnnd_req_complete() from any thread, which
 * resumes the (suspended) connection. After rnnd_req_complete() the request must not be
 * touched: it may already be freed. */
#ifndef RNND_HTTP_H
#define RNND_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rnnd/buf.h"
#include "rnnd/errcode.h"

/* app.h's (a repeated typedef is C11): handlers that use its fields include app.h */
typedef struct rnnd_app rnnd_app;
typedef struct rnnd_http rnnd_http;
typedef struct rnnd_req rnnd_req;

enum rnnd_method { RNND_GET = 1, RNND_HEAD = 2, RNND_POST = 4, RNND_PUT = 8, RNND_DELETE = 16 };

typedef void (*rnnd_handler)(rnnd_req *r);

/* What a route is, beside its handlers: who may call it, when, and how its body and errors
 * are shaped. Adding a route is one line of RNND_ROUTE_LIST (route_list.h) plus its handler
 * (an src/api_*.c file, declared in src/api.h); routes.c's table and the metrics' route count
 * are expanded from that list. */
enum rnnd_route_flags {
    RT_OPEN = 1 << 0,     /* answered without an API key (health probes, the web page's files) */
    RT_DRAIN = 1 << 1,    /* still answered while the server drains (liveness) */
    RT_RAW_BODY = 1 << 2, /* the handler reads the body (rnnd_req_raw_body, rnnd_req_decode),
                           * if it wants one: the web page's files ignore it */
    RT_V2 = 1 << 3,       /* KServe v2: its error shape, and any Content-Type */
    RT_MODEL = 1 << 4,    /* the first path parameter is a model name (the access log) */
    RT_ADMIN = 1 << 5,    /* a key of scope admin only, when keys are on (403 otherwise) */
};

typedef struct rnnd_route {
    const char *pattern; /* '*' matches one path segment */
    rnnd_handler get, post, put, del;
    unsigned flags; /* enum rnnd_route_flags */
} rnnd_route;

/* Bind and start serving APP with the N_ROUTES routes of ROUTES (kept; routes.c's table).
 * Logs "event=listening addr=A port=P". */
int rnnd_http_start(rnnd_app *app, const rnnd_route *routes, size_t n_routes, rnnd_http **out,
                    char *err, size_t errlen);
uint16_t rnnd_http_port(const rnnd_http *h);
/* Stop accepting connections (open ones are still served). */
void rnnd_http_quiesce(rnnd_http *h);
/* Requests received and not yet fully answered. */
size_t rnnd_http_active(rnnd_http *h);
/* Close everything and free. No request may be deferred any more. NULL is a no-op. */
void rnnd_http_stop(rnnd_http *h);

/* ---- for handlers ---- */
int rnnd_req_method(const rnnd_req *r);
/* The caller's API key (auth.h): its owner id (0 when keys are off), whether it may see
 * everything (admin scope, or keys off), its name for logs ("" when keys are off). */
uint64_t rnnd_req_owner(const rnnd_req *r);
int rnnd_req_admin(const rnnd_req *r);
const char *rnnd_req_key_name(const rnnd_req *r);
/* The I-th '*' segment of the route ("/v1/sessions/{id}/step": 0 is the id). */
const char *rnnd_req_param(const rnnd_req *r, int i);
/* A query argument (request thread only), or NULL. */
const char *rnnd_req_query(rnnd_req *r, const char *key);
/* The decoded body (an object), or NULL when the body was empty. Owned by the request. */
json_t *rnnd_req_body(const rnnd_req *r);
/* Free R's decoded body once its handler has run (handlers read it before they queue their
 * work): the thread that decoded a long body frees its tree, not the one that sends the
 * reply. rnnd_req_body is NULL afterwards. */
void rnnd_req_drop_body(rnnd_req *r);
/* Routes whose handler decodes the body itself (RT_RAW_BODY in routes.c's table) get it
 * undecoded: rnnd_req_raw_body gives its bytes (not NUL-terminated; NULL and *LEN 0 when
 * empty or once decoded), rnnd_req_decode decodes it exactly as for every other route
 * (nesting limit, JSON, an object) for rnnd_req_body, or replies the error and returns -1. */
const char *rnnd_req_raw_body(const rnnd_req *r, size_t *len);
int rnnd_req_decode(rnnd_req *r);
/* The same for a body whose first N bytes are JSON and the rest binary (Triton's binary
 * tensor data): decodes the N bytes, and *TAIL (*TAIL_LEN bytes) is the rest, valid until the
 * request is freed. Replies the error and returns -1 (N of 0 or past the body, bad JSON). */
int rnnd_req_decode_head(rnnd_req *r, size_t n, const char **tail, size_t *tail_len);
/* A request header's value (request thread only), or NULL. */
const char *rnnd_req_header(rnnd_req *r, const char *name);
rnnd_app *rnnd_req_app(const rnnd_req *r);
/* The request's share of the memory budget (membudget.h): a handler charges it before it
 * allocates; it is given back when the request is freed. */
struct rnnd_memhold *rnnd_req_mem(rnnd_req *r);

/* Nonzero when R came over a WebSocket in a binary frame and its reply is to be binary too
 * (ws_codec.h's layout); such a reply sets Content-Type application/octet-stream. */
int rnnd_req_binary(const rnnd_req *r);

/* Reply STATUS with BODY (JSON; its data is taken over, BODY is left empty). A failed buffer
 * becomes a 503 out_of_memory error. */
void rnnd_reply(rnnd_req *r, unsigned status, rnnd_buf *body);
/* Reply STATUS with no body (204). */
void rnnd_reply_empty(rnnd_req *r, unsigned status);
/* Reply {"error":{"code":CODE,"message":...}} with the status docs/api.md gives CODE; on a /v2
 * path the body is Triton's {"error": MESSAGE} (same status: refusals before a v2 handler). */
void rnnd_reply_error(rnnd_req *r, enum rnnd_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* For the KServe v2 routes' handlers: Triton's {"error": MESSAGE} with the v2 status of
 * CODE (errcode.h), and Retry-After where that status is 503. */
void rnnd_v2_error(rnnd_req *r, enum rnnd_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Add a response header (copied). At most a few per request. */
void rnnd_reply_header(rnnd_req *r, const char *name, const char *value);

/* The reply will come later from another thread. Call before handing the work on. */
void rnnd_req_defer(rnnd_req *r);
/* The deferred reply is set: send it. Any thread; R must not be used afterwards. */
void rnnd_req_complete(rnnd_req *r);
/* Nonzero when the client of a deferred request has closed its connection (its socket reads
 * end-of-file), or its WebSocket closed. Only between rnnd_req_defer() and
 * rnnd_req_complete(). */
int rnnd_req_gone(rnnd_req *r);
/* Run FN(ARG) when the request is freed (after its reply was sent or the client left). */
void rnnd_req_on_free(rnnd_req *r, void (*fn)(void *), void *arg);
/* Keep OBJ until the request is freed, then RELEASE(OBJ) (after on_free's function): for
 * references the whole request needs, such as its model's. At most two per request;
 * a third is released at once (callers hold at most one). */
void rnnd_req_hold(rnnd_req *r, void (*release)(void *), void *obj);

/* ---- streamed replies (server-sent events) ----
 * A stream is a reply body written piece by piece from any thread while it is being sent.
 * The handler makes one (rnnd_stream_new: one reference), gives the producer a reference of
 * its own (rnnd_stream_ref), starts the work, and then either attaches the stream to the
 * request (rnnd_req_stream, which takes over the handler's reference: the reply is then 200
 * with CONTENT_TYPE, chunked) or, when the work could not start, drops both references and
 * replies as usual. The producer may write before the attach; the body ends when the
 * producer calls rnnd_stream_close(). */
typedef struct rnnd_stream rnnd_stream;

rnnd_stream *rnnd_stream_new(void); /* NULL when out of memory */
rnnd_stream *rnnd_stream_ref(rnnd_stream *st);
void rnnd_stream_unref(rnnd_stream *st);
/* Request thread, in the handler: the reply is ST (the caller's reference is taken over). */
void rnnd_req_stream(rnnd_req *r, rnnd_stream *st, const char *content_type);
/* Queue LEN bytes. Returns 0, or -1 when the client is gone or memory ran out (dropped). */
int rnnd_stream_write(rnnd_stream *st, const char *data, size_t len);
/* Nonzero once the client has gone: its connection closed, or its socket reads end-of-file
 * (checked on each call, so a producer polling this notices a disconnect while the
 * connection is parked and nothing is being written). */
int rnnd_stream_gone(rnnd_stream *st);
/* End the body and drop the producer's reference. ST must not be used afterwards. */
void rnnd_stream_close(rnnd_stream *st);

#endif
