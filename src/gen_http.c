/* A generation answered over HTTP (gen_http.h). */
#include "config.h"
#include "gen_http.h"

#include <stdlib.h>

#include "cluster.h"

rnnd_gen_http *rnnd_gen_http_new(const rnnd_gen_protocol *proto, rnnd_app *app, const rnnd_entry *e)
{
    rnnd_gen_http *q = calloc(1, sizeof *q);
    if (q) {
        q->proto = proto;
        q->app = app;
        q->e = e;
    }
    return q;
}

void rnnd_gen_http_free(rnnd_gen_http *q)
{
    if (!q)
        return;
    if (q->tmp) {
        rnnd_session_remove(q->app->sessions, rnnd_session_id(q->tmp));
        rnnd_session_unref(q->tmp);
    }
    rnnd_session_unref(q->own);
    free(q);
}

static void on_token(void *arg, int32_t id, const char *text, size_t len, size_t index,
                     uint64_t step)
{
    rnnd_gen_http *q = arg;
    if (!q->st)
        return; /* a JSON reply takes the tokens from the result */
    rnnd_buf b;
    rnnd_buf_init(&b);
    q->proto->token_event(q, &b, id, text, len, index, step);
    rnnd_sse_event(q->st, NULL, &b);
    rnnd_buf_free(&b);
}

static int on_cancelled(void *arg)
{
    rnnd_gen_http *q = arg;
    return q->st ? rnnd_stream_gone(q->st) : rnnd_req_gone(q->r);
}

/* A session's generation in cluster mode: whether the session left this node. */
static int on_gone(void *arg)
{
    rnnd_gen_http *q = arg;
    if (q->own && rnnd_sync_gone(q->app->cluster, q->own))
        q->moved = 1;
    return q->moved;
}

static void on_done(void *arg, const rnnd_gen_result *res)
{
    rnnd_gen_http *q = arg;
    if (q->own && !q->moved) /* its steps go to the store within store_sync_ms */
        rnnd_sync_dirty(q->app->cluster, q->own);
    if (q->tmp) /* gone before the client hears the end */
        rnnd_session_remove(q->app->sessions, rnnd_session_id(q->tmp));
    if (q->st) {
        q->proto->stream_end(q, q->st, res);
        rnnd_stream_close(q->st); /* drops the producer's reference */
    } else {
        q->proto->reply(q, q->r, res);
        rnnd_req_complete(q->r);
    }
    rnnd_gen_http_free(q);
}

int rnnd_gen_http_start(rnnd_gen_http *q, rnnd_req *r, rnnd_session *s, int tmp, int stream,
                        const int32_t *prompt, size_t n)
{
    if (tmp)
        q->tmp = rnnd_session_ref(s);
    else if (q->app->cluster)
        q->own = rnnd_session_ref(s);
    rnnd_stream *st = NULL;
    if (stream) {
        if (!(st = rnnd_stream_new())) {
            q->proto->refuse(r, -1, "out of memory");
            rnnd_gen_http_free(q);
            return -1;
        }
        q->st = rnnd_stream_ref(st);
    } else {
        q->r = r;
        rnnd_req_defer(r);
    }
    rnnd_gen_sink sink = {on_token, on_cancelled, on_done, q, on_gone};
    char err[256] = "";
    int why = rnnd_generate(&q->app->metrics, s, prompt, n, &q->p, &sink, err, sizeof err);
    if (why == RNND_SESSION_FOUND) {
        if (st)
            rnnd_req_stream(r, st, RNND_SSE_TYPE);
        return 0;
    }
    /* not started: no callback comes */
    if (st) {
        rnnd_stream_unref(q->st);
        rnnd_stream_unref(st);
    }
    q->proto->refuse(r, why, err);
    if (!st)
        rnnd_req_complete(r);
    rnnd_gen_http_free(q);
    return -1;
}
