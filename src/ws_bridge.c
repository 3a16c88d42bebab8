/* A WebSocket's messages as requests (docs/websocket.md): each message becomes a request of
 * its own (an rnnd_req with no connection) that the HTTP route's handler runs, so a step over
 * the socket takes the same checks, the same session queue, the same batcher and gives the
 * same reply and errors as POST /v1/sessions/{id}/step; only the envelope differs.
 *
 * Text frames: {"op": OP, "seq": N, ...the route's body...}; the reply is {"op": OP, "seq": N,
 * "status": HTTP_STATUS, ...the route's reply body...}. Binary frames: ws_codec.h. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "api.h"
#include "membudget.h"
#include "rnnd/json_depth.h"
#include "rnnd/state_json.h"
#include "rnnd/step_scan.h"
#include "rnnd/status.h"
#include "ws_internal.h"
#include "ws_codec.h"

/* The operations of a text frame, each the session route (and method) it runs. */
static const struct op {
    const char *name;
    const char *pattern;
    int method;
} ops[] = {
    {"step", "/v1/sessions/*/step", RNND_POST},
    {"generate", "/v1/sessions/*/generate", RNND_POST},
    {"state", "/v1/sessions/*/state", RNND_GET},
    {"put_state", "/v1/sessions/*/state", RNND_PUT},
    {"reset", "/v1/sessions/*/reset", RNND_POST},
};

static const rnnd_route *route_of(const rnnd_http *h, const char *pattern)
{
    for (size_t i = 0; i < h->n_routes; i++)
        if (!strcmp(h->routes[i].pattern, pattern))
            return &h->routes[i];
    return NULL;
}

/* The request is answered: its reply may go (by the socket's loop, in order). Any thread.
 * Once the lock is released the socket's loop may free the request and, its last request
 * gone, end: a reference keeps W for the wake-up, written after the unlock so that the
 * woken thread does not find the lock still held (measured: a contended lock on every
 * reply). */
static void req_done(rnnd_req *r)
{
    struct ws_pending *p = r->varg;
    rnnd_ws *w = p->w;
    atomic_fetch_add(&w->refs, 1);
    pthread_mutex_lock(&w->mu);
    p->done = 1;
    pthread_mutex_unlock(&w->mu);
    ws_conn_wake(w);
    ws_unref(w);
}

/* A request of W on its session's route PATTERN, as if it came over HTTP with W's key. */
static rnnd_req *new_req(rnnd_ws *w, struct ws_pending *p, const char *pattern, int method)
{
    rnnd_http *h = w->h;
    rnnd_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_fetch_add(&h->active, 1); /* freed by http_req_free, as every request */
    r->http = h;
    r->route = route_of(h, pattern);
    r->method = method;
    snprintf(r->method_name, sizeof r->method_name, "%s",
             method == RNND_GET       ? "GET"
                 : method == RNND_PUT ? "PUT"
                                      : "POST");
    snprintf(r->params[0], sizeof r->params[0], "%s", w->id);
    snprintf(r->path, sizeof r->path, "/v1/sessions/{id}/ws");
    r->mem.mb = &h->app->mem;
    atomic_init(&r->flags, 0);
    r->t0 = rnnd_mono_s();
    r->key = w->key;
    r->vdone = req_done;
    r->varg = p;
    if (r->route) {
        const rnnd_route *rt = r->route;
        r->handler = method == RNND_GET ? rt->get : method == RNND_PUT ? rt->put : rt->post;
    }
    return r;
}

static void stream_wake(void *arg) { ws_conn_wake(arg); }

/* Run R's handler, as http.c's dispatch does; a reply set at once is done at once, and a
 * stream the handler attached is read as it fills (ws_bridge_flush). */
static void run_handler(rnnd_req *r)
{
    struct ws_pending *p = r->varg;
    if (!r->handler)
        rnnd_reply_error(r, RNND_E_INTERNAL, "no handler for this operation");
    else
        r->handler(r);
    if (r->stream && !r->replied) {
        pthread_mutex_lock(&r->stream->mu);
        r->stream->wake = stream_wake;
        r->stream->wake_arg = p->w;
        pthread_mutex_unlock(&r->stream->mu);
        /* rnnd_req_stream() took a reference for the MHD response that sends a stream over
         * HTTP; here the socket's loop reads it, under the request's own reference */
        rnnd_stream_unref(r->stream);
        pthread_mutex_lock(&p->w->mu);
        p->streaming = 1;
        /* the socket closed before a worker of the slow path started it (ws_bridge_cancel
         * found it not streaming yet): it stops at its first token */
        int gone = atomic_load(&r->flags) & F_GONE;
        ws_conn_wake(p->w); /* what was written before the hook */
        pthread_mutex_unlock(&p->w->mu);
        if (gone) {
            pthread_mutex_lock(&r->stream->mu);
            r->stream->gone = 1;
            pthread_mutex_unlock(&r->stream->mu);
        }
        return;
    }
    if (!r->deferred && !r->replied)
        rnnd_reply_error(r, RNND_E_INTERNAL, "the handler gave no reply");
    if (!r->deferred)
        req_done(r);
}

static size_t skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Whether the key KEY (with its quotes) and its colon are at S[*I]; moves *I past them. */
static int key_at(const char *s, size_t *i, size_t len, const char *key)
{
    size_t n = strlen(key);
    if (len - *i < n || memcmp(s + *i, key, n))
        return 0;
    size_t j = skip_ws(s, *i + n, len);
    if (j == len || s[j] != ':')
        return 0;
    *i = skip_ws(s, j + 1, len);
    return 1;
}

/* A step frame of the common shape, {"op":"step","seq":N,...a step body...} with "op" and
 * "seq" (optional) first in either order, through the step scanner as the HTTP route's body:
 * the rest of the object, its fields then as over HTTP, is scanned without a JSON DOM (a
 * jansson decode costs ~150 us for a 512-float step). Returns 0 when the step was queued or
 * answered, 1 when the frame is not of that shape or the scanner declines it: the generic
 * path then decodes it, with the same result and any error (rnnd/step_scan.h). */
static int text_step_fast(rnnd_ws *w, struct ws_pending *p, const char *s, size_t len)
{
    size_t i = skip_ws(s, 0, len);
    int has_op = 0, has_seq = 0;
    int64_t seq = 0;
    if (i == len || s[i] != '{')
        return 1;
    i = skip_ws(s, i + 1, len);
    while (!(has_op && has_seq)) {
        if (!has_op && key_at(s, &i, len, "\"op\"")) {
            if (len - i < 6 || memcmp(s + i, "\"step\"", 6))
                return 1;
            i += 6;
            has_op = 1;
        } else if (!has_seq && key_at(s, &i, len, "\"seq\"")) {
            /* a JSON integer from 0 that fits int64 surely: what jansson reads the same */
            size_t d = i;
            while (i < len && s[i] >= '0' && s[i] <= '9' && i - d < 18)
                seq = seq * 10 + (s[i++] - '0');
            if (i == d || (s[d] == '0' && i - d > 1) ||
                (i < len &&
                 (s[i] == '.' || s[i] == 'e' || s[i] == 'E' || (s[i] >= '0' && s[i] <= '9'))))
                return 1;
            has_seq = 1;
        } else {
            break;
        }
        i = skip_ws(s, i, len);
        if (i == len || s[i] != ',')
            return 1;
        i = skip_ws(s, i + 1, len);
    }
    if (!has_op || i == len || s[i] != '"')
        return 1;
    /* the body: "{" and the rest of the object */
    size_t blen = len - i + 1;
    char *body = malloc(blen);
    if (!body)
        return 1;
    body[0] = '{';
    memcpy(body + 1, s + i, len - i);
    rnnd_req *r = p->r;
    r->route = route_of(w->h, "/v1/sessions/*/step");
    r->method = RNND_POST;
    r->handler = r->route->post;
    p->has_seq = has_seq;
    p->seq = seq;
    snprintf(p->op, sizeof p->op, "step");
    /* the request's body while the handler runs, as over HTTP: when the scanned inputs do not
     * fit the model, the handler decodes it to word the error as HTTP does (api_sessions.c) */
    r->body = body;
    r->len = blen;
    int rc = rnnd_api_session_step_text(r, body, blen);
    free(r->body); /* decoded or not, not needed past the handler's first part */
    r->body = NULL;
    r->len = 0;
    if (rc) { /* as it was: the generic path sets them */
        p->has_seq = 0;
        p->seq = 0;
        p->op[0] = 0;
        return 1;
    }
    if (!r->deferred && !r->replied)
        rnnd_reply_error(r, RNND_E_INTERNAL, "the handler gave no reply");
    if (!r->deferred)
        req_done(r);
    return 0;
}

/* A text frame: decode the envelope, take "op" and "seq" out, run the rest as the body. */
static void text_request(rnnd_ws *w, struct ws_pending *p, const uint8_t *data, size_t len)
{
    rnnd_req *r = p->r;
    const rnnd_config *cfg = w->app->cfg;
    char err[256];
    json_t *body = NULL;
    if (!text_step_fast(w, p, (const char *)data, len))
        return;
    if (skip_ws((const char *)data, 0, len) == len) { /* jansson's words: "wrong arguments" */
        rnnd_reply_error(r, RNND_E_INVALID_JSON, "an empty text frame: a request is a JSON object");
        goto done;
    }
    /* checked with the decoding cost on the loop (ws_slow_wanted), else here */
    if (p->depth < 0 ||
        (!p->depth && rnnd_json_depth_check((const char *)data, len, cfg->max_json_depth))) {
        rnnd_reply_error(r, RNND_E_INVALID_JSON, "JSON nested deeper than max_json_depth (%lld)",
                         (long long)cfg->max_json_depth);
        goto done;
    }
    int rc = rnnd_mem_json_load(&r->mem, (const char *)data, len, &body, err, sizeof err);
    if (rc) {
        rnnd_reply_error(r, rc == RNND_ERR_INVALID ? RNND_E_INVALID_JSON : rnnd_errcode_of(rc),
                         "%s", err);
        goto done;
    }
    if (!json_is_object(body)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "a text frame must be a JSON object, got %s",
                         rnnd_json_type_desc(body));
        goto done;
    }
    /* the op first: a bad seq's error still names the op it was for (docs/websocket.md) */
    const char *op = json_string_value(json_object_get(body, "op"));
    const struct op *o = NULL;
    for (size_t i = 0; op && i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(ops[i].name, op))
            o = &ops[i];
    if (op)
        snprintf(p->op, sizeof p->op, "%s", o ? o->name : "");
    json_t *seq = json_object_get(body, "seq");
    if (seq) {
        if (!json_is_integer(seq) || json_integer_value(seq) < 0) {
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "seq: expected an integer >= 0");
            goto done;
        }
        p->has_seq = 1;
        p->seq = json_integer_value(seq);
    }
    if (!o) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "op: expected \"step\", \"generate\", \"state\", \"put_state\" or "
                         "\"reset\"");
        goto done;
    }
    json_object_del(body, "op");
    json_object_del(body, "seq");
    if (o->method == RNND_GET && json_object_size(body)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s takes no fields besides op and seq",
                         o->name);
        goto done;
    }
    r->route = route_of(w->h, o->pattern);
    r->method = o->method;
    r->handler = o->method == RNND_GET ? r->route->get
        : o->method == RNND_PUT        ? r->route->put
                                       : r->route->post;
    /* an empty object is an empty body, as over HTTP */
    if (json_object_size(body))
        r->json = body;
    else
        json_decref(body);
    run_handler(r);
    return;
done:
    json_decref(body);
    req_done(r);
}

/* A binary frame's steps into SC, checked against the session's model. Replies on error. */
static int binary_steps(rnnd_ws *w, rnnd_req *r, const rnnd_ws_head *hd, rnnd_step_scan *sc)
{
    const rnnd_entry *e = rnnd_session_model(w->s);
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    size_t n = hd->n_steps;
    int64_t max = w->app->cfg->max_steps_per_request;
    memset(sc, 0, sizeof *sc);
    sc->n_steps = n;
    sc->last_only = hd->last_only;
    sc->if_steps = hd->if_steps;
    if ((int64_t)n > max) {
        rnnd_reply_error(r, RNND_E_LIMIT_EXCEEDED,
                         "%zu steps, more than max_steps_per_request (%lld)", n, (long long)max);
        return -1;
    }
    /* the payload's size against the model's, in bytes: what the client can count */
    int tokens = spec->input_kind == RNND_INPUT_TOKENS;
    size_t width = tokens ? 1 : (size_t)spec->input_dim, want = n * width * 4;
    if (hd->kind != (tokens ? RNND_WS_I32 : RNND_WS_F32) || hd->payload_len != want) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "model %s takes %zu %s per step (kind %d): %zu steps need %zu payload "
                         "bytes; the frame is kind %u and has %zu",
                         e->name, width, tokens ? "int32 token id" : "float32 values",
                         tokens ? RNND_WS_I32 : RNND_WS_F32, n, want, hd->kind, hd->payload_len);
        return -1;
    }
    if (tokens) {
        if (!(sc->ids = malloc(n * sizeof *sc->ids)))
            goto oom;
        rnnd_ws_get_i32(hd->payload, n, sc->ids);
        for (size_t i = 0; i < n; i++) {
            if (sc->ids[i] < 0 || sc->ids[i] >= spec->vocab_size) {
                /* HTTP's words (state_json.c), as docs/api.md promises */
                rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                                 "inputs[%zu]: token id %" PRId64 " out of range [0, %d)", i,
                                 sc->ids[i], spec->vocab_size);
                return -1;
            }
        }
        return 0;
    }
    if (!(sc->vectors = malloc(n * width * sizeof *sc->vectors)))
        goto oom;
    sc->width = width;
    rnnd_ws_get_f32(hd->payload, n * width, sc->vectors);
    for (size_t i = 0; i < n * width; i++) {
        if (!isfinite(sc->vectors[i])) {
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "inputs[%zu][%zu]: NaN or infinite",
                             i / width, i % width);
            return -1;
        }
    }
    return 0;
oom:
    rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu steps", n);
    return -1;
}

/* Whether a binary frame is not our layout (magic, version, kind): the socket closes (1003). */
static int binary_unsupported(const uint8_t *data, size_t len)
{
    rnnd_ws_head hd;
    char err[160];
    return rnnd_ws_head_parse(data, len, &hd, err, sizeof err) == RNND_ERR_UNSUPPORTED;
}

/* A binary frame of our layout: a step (binary_unsupported refused the others). */
static void binary_request(rnnd_ws *w, struct ws_pending *p, const uint8_t *data, size_t len)
{
    rnnd_req *r = p->r;
    rnnd_ws_head hd;
    char err[160];
    p->binary = 1;
    snprintf(p->op, sizeof p->op, "step");
    int rc = rnnd_ws_head_parse(data, len, &hd, err, sizeof err);
    p->has_seq = 1;
    p->seq = hd.seq;
    rnnd_step_scan sc = {0};
    /* a payload that is not whole 4-byte values of its steps: worded against the model's
     * width in binary_steps, which needs the session's model (the codec does not know it) */
    int size_only =
        rc == RNND_ERR_INVALID && hd.n_steps && hd.payload_len % ((size_t)hd.n_steps * 4);
    if (rc && !size_only) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", err);
    } else if (!binary_steps(w, r, &hd, &sc)) {
        r->binary = 1;
        rnnd_api_session_step_scanned(r, &sc);
        if (!r->deferred && !r->replied)
            rnnd_reply_error(r, RNND_E_INTERNAL, "the handler gave no reply");
        if (r->deferred)
            return;
    }
    rnnd_step_scan_clear(&sc);
    req_done(r);
}

struct ws_pending *ws_bridge_begin(rnnd_ws *w, int binary, const uint8_t *data, size_t len,
                                   int *code)
{
    *code = WSLAY_CODE_INTERNAL_SERVER_ERROR;
    struct ws_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->w = w;
    snprintf(p->op, sizeof p->op, "%s", binary ? "step" : "");
    p->r = new_req(w, p, "/v1/sessions/*/step", RNND_POST);
    if (!p->r) {
        free(p);
        return NULL;
    }
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = p;
    else
        w->head = p;
    w->tail = p;
    w->in_flight++;
    w->requests++;
    pthread_mutex_unlock(&w->mu);
    if (binary && binary_unsupported(data, len)) {
        /* nothing runs: the request goes without a reply, the socket closes */
        p->silent = 1;
        req_done(p->r);
        *code = WSLAY_CODE_UNSUPPORTED_DATA;
        return NULL;
    }
    *code = 0;
    return p;
}

void ws_bridge_refuse(rnnd_ws *w, struct ws_pending *p)
{
    (void)w;
    if (atomic_load(&p->r->flags) & F_GONE)
        rnnd_reply_error(p->r, RNND_E_UNAVAILABLE,
                         "the socket closed before this request started: nothing ran");
    else
        rnnd_reply_error(p->r, RNND_E_UNAVAILABLE,
                         "the server is shutting down: this request did not start");
    req_done(p->r);
}

void ws_bridge_start(rnnd_ws *w, struct ws_pending *p, int binary, const uint8_t *data, size_t len)
{
    if (binary)
        binary_request(w, p, data, len);
    else
        text_request(w, p, data, len);
}

/* The reply of P's finished request R as a message: a binary step's result as a binary
 * frame, everything else as the text envelope. Returns -1 out of memory. */
static int make_message(struct ws_pending *p, rnnd_req *r)
{
    int octets = 0;
    for (int i = 0; i < r->nheaders; i++)
        octets |= !strcmp(r->hname[i], "Content-Type") &&
            !strcmp(r->hvalue[i], "application/octet-stream");
    if (p->binary && octets && r->status == 200 && r->data) {
        rnnd_ws_reply_seq(r->data, r->dlen, (uint32_t)p->seq);
        p->msg_binary = 1;
        if (r->dlen > WS_REPLY_INPLACE_BYTES) {
            p->body = r->data;
            p->body_len = r->dlen;
        } else {
            p->msg = r->data;
            p->msg_len = r->dlen;
            r->data = NULL;
        }
        return 0;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    unsigned status = r->data ? r->status : 503;
    rnnd_buf_printf(&b, "{\"status\":%u", status);
    if (p->op[0]) { /* not for a frame whose op was not understood */
        rnnd_buf_puts(&b, ",\"op\":");
        rnnd_buf_json_string(&b, p->op);
    }
    if (p->has_seq)
        rnnd_buf_printf(&b, ",\"seq\":%" PRId64, p->seq);
    const char *body = r->data;
    size_t blen = r->dlen;
    char oom[RNND_ERRCODE_OOM_CAP];
    if (!body) {
        body = oom;
        blen = rnnd_errcode_oom_json(oom, sizeof oom);
    }
    if (blen > 2 && body[0] == '{') {
        rnnd_buf_puts(&b, ",");
        if (b.len + blen - 1 > WS_REPLY_INPLACE_BYTES && body == r->data) { /* the whole */
            p->body = body + 1;
            p->body_len = blen - 1;
        } else {
            rnnd_buf_append(&b, body + 1, blen - 1);
        }
    } else {
        rnnd_buf_puts(&b, "}");
    }
    if (rnnd_buf_failed(&b)) {
        rnnd_buf_free(&b);
        return -1;
    }
    p->msg = rnnd_buf_steal(&b, &p->msg_len);
    return p->msg ? 0 : -1;
}

/* One server-sent event of P's stream (its lines, without the blank line) as a message:
 * {"status":200,"op":"generate","seq":N, "event":NAME (when named), "data":JSON} or, for
 * "data: [DONE]", "done":true. Comment lines (": ping") make none. */
static void stream_event(rnnd_ws *w, struct ws_pending *p, const char *ev, size_t len,
                         void (*send)(rnnd_ws *w, int binary, const char *data, size_t len))
{
    const char *name = NULL, *data = NULL;
    size_t name_len = 0, data_len = 0;
    for (const char *line = ev; line < ev + len;) {
        const char *end = memchr(line, '\n', (size_t)(ev + len - line));
        size_t n = end ? (size_t)(end - line) : (size_t)(ev + len - line);
        if (n > 7 && !memcmp(line, "event: ", 7)) {
            name = line + 7;
            name_len = n - 7;
        } else if (n > 6 && !memcmp(line, "data: ", 6)) {
            data = line + 6;
            data_len = n - 6;
        }
        line += n + 1;
    }
    if (!data)
        return;
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"status\":200,\"op\":\"generate\"");
    if (p->has_seq)
        rnnd_buf_printf(&b, ",\"seq\":%" PRId64, p->seq);
    if (data_len == 6 && !memcmp(data, "[DONE]", 6)) {
        rnnd_buf_puts(&b, ",\"done\":true}");
    } else {
        if (name) {
            rnnd_buf_puts(&b, ",\"event\":");
            rnnd_buf_json_stringn(&b, name, name_len);
        }
        rnnd_buf_puts(&b, ",\"data\":");
        rnnd_buf_append(&b, data, data_len);
        rnnd_buf_puts(&b, "}");
    }
    if (!rnnd_buf_failed(&b))
        send(w, 0, b.data, b.len);
    rnnd_buf_free(&b);
}

/* Read what P's stream holds and send its whole events. Returns 1 once the stream has ended
 * and everything in it was sent, 0 while more may come, -1 out of memory. */
static int stream_flush(rnnd_ws *w, struct ws_pending *p,
                        void (*send)(rnnd_ws *w, int binary, const char *data, size_t len))
{
    rnnd_stream *st = p->r->stream;
    pthread_mutex_lock(&st->mu);
    size_t n = st->len - st->off;
    char *g = n ? realloc(p->sbuf, p->slen + n) : p->sbuf;
    if (n && g) {
        memcpy(g + p->slen, st->buf + st->off, n);
        p->sbuf = g;
        p->slen += n;
        st->off = st->len;
    }
    int closed = st->closed; /* read with the bytes: nothing is written after the close */
    pthread_mutex_unlock(&st->mu);
    if (n && !g)
        return -1;
    size_t used = 0;
    for (;;) {
        const char *end =
            p->slen - used >= 2 ? memmem(p->sbuf + used, p->slen - used, "\n\n", 2) : NULL;
        if (!end)
            break;
        stream_event(w, p, p->sbuf + used, (size_t)(end - (p->sbuf + used)), send);
        used = (size_t)(end - p->sbuf) + 2;
    }
    if (used) {
        memmove(p->sbuf, p->sbuf + used, p->slen - used);
        p->slen -= used;
    }
    return closed;
}

void ws_bridge_cancel(rnnd_ws *w)
{
    pthread_mutex_lock(&w->mu);
    for (struct ws_pending *p = w->head; p; p = p->next) {
        /* a plain generate asks rnnd_req_gone() before each token, as over HTTP */
        atomic_fetch_or(&p->r->flags, F_GONE);
        if (p->streaming) {
            pthread_mutex_lock(&p->r->stream->mu);
            p->r->stream->gone = 1;
            pthread_mutex_unlock(&p->r->stream->mu);
        }
    }
    pthread_mutex_unlock(&w->mu);
}

void ws_bridge_free_pending(struct ws_pending *p)
{
    http_req_free(p->r->http, p->r);
    free(p->msg);
    free(p->sbuf);
    free(p);
}

size_t ws_bridge_flush(rnnd_ws *w,
                       void (*send)(rnnd_ws *w, int binary, const char *data, size_t len),
                       void (*done)(rnnd_ws *w, struct ws_pending *p))
{
    size_t sent = 0;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        struct ws_pending *p = w->head;
        int streaming = p && p->streaming && !p->starting;
        pthread_mutex_unlock(&w->mu);
        if (streaming) {
            int end = stream_flush(w, p, send);
            if (end < 0)
                w->failed = 1;
            if (end <= 0)
                return sent;
        }
        pthread_mutex_lock(&w->mu);
        if (!p || !(p->done || p->streaming) || p->starting) {
            /* not answered yet; or answered while a worker of the slow path still runs its
             * start, which reads the request after its job may have completed it */
            pthread_mutex_unlock(&w->mu);
            return sent;
        }
        w->head = p->next;
        if (!w->head)
            w->tail = NULL;
        w->in_flight--;
        pthread_mutex_unlock(&w->mu);
        rnnd_req *r = p->r;
        p->next = NULL;
        if (!p->silent && !p->streaming && !make_message(p, r)) {
            p->has_msg = 1;
            sent++;
        }
        if (r->status == 404 || r->status == 410)
            w->session_gone = 1;
        done(w, p);
    }
}

int ws_bridge_idle(rnnd_ws *w)
{
    pthread_mutex_lock(&w->mu);
    int idle = w->head == NULL;
    pthread_mutex_unlock(&w->mu);
    return idle;
}
