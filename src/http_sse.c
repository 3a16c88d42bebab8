/* Streamed replies (server-sent events): a stream's buffer written from any thread, the
 * MHD callback that sends it and parks the connection while it is empty, and the pinger
 * thread that keeps idle streams open (http.h, "streamed replies"). */
#include "config.h"
#include "http_internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

rnnd_stream *rnnd_stream_new(void)
{
    rnnd_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    pthread_mutex_init(&st->mu, NULL);
    st->refs = 1;
    st->fd = -1;
    st->last_write = rnnd_mono_s();
    return st;
}

void rnnd_stream_unref(rnnd_stream *st)
{
    pthread_mutex_lock(&st->mu);
    int last = --st->refs == 0;
    pthread_mutex_unlock(&st->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&st->mu);
    free(st->buf);
    free(st);
}

/* Wake the parked connection so MHD reads what was queued. Called with st->mu held: the
 * connection cannot finish meanwhile, since it is suspended until this resume. */
static void stream_wake_locked(rnnd_stream *st)
{
    if (st->parked && st->conn) {
        st->parked = 0;
        MHD_resume_connection(st->conn);
    } else if (st->wake) {
        st->wake(st->wake_arg);
    }
}

static int stream_append_locked(rnnd_stream *st, const char *data, size_t len)
{
    if (st->off && st->off == st->len)
        st->off = st->len = 0;
    if (st->len + len > st->cap) {
        if (st->off) { /* reclaim what was sent before growing */
            memmove(st->buf, st->buf + st->off, st->len - st->off);
            st->len -= st->off;
            st->off = 0;
        }
        size_t cap = st->cap ? st->cap : 1024;
        while (cap < st->len + len)
            cap *= 2;
        if (cap > st->cap) {
            char *g = realloc(st->buf, cap);
            if (!g)
                return -1;
            st->buf = g;
            st->cap = cap;
        }
    }
    memcpy(st->buf + st->len, data, len);
    st->len += len;
    st->last_write = rnnd_mono_s();
    stream_wake_locked(st);
    return 0;
}

int rnnd_stream_write(rnnd_stream *st, const char *data, size_t len)
{
    pthread_mutex_lock(&st->mu);
    int rc = st->gone || st->closed ? -1 : stream_append_locked(st, data, len);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int rnnd_stream_gone(rnnd_stream *st)
{
    pthread_mutex_lock(&st->mu);
    if (!st->gone && st->fd >= 0) {
        /* a parked connection is not polled by MHD: look at the socket ourselves. The fd is
         * valid while st->fd says so (cleared under st->mu when the connection finishes). */
        struct pollfd p = {.fd = st->fd, .events = POLLRDHUP};
        if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
            st->gone = 1;
    }
    int gone = st->gone;
    pthread_mutex_unlock(&st->mu);
    return gone;
}

void rnnd_stream_close(rnnd_stream *st)
{
    pthread_mutex_lock(&st->mu);
    st->closed = 1;
    stream_wake_locked(st);
    pthread_mutex_unlock(&st->mu);
    rnnd_stream_unref(st);
}

rnnd_stream *rnnd_stream_ref(rnnd_stream *st)
{
    pthread_mutex_lock(&st->mu);
    st->refs++;
    pthread_mutex_unlock(&st->mu);
    return st;
}

void rnnd_req_stream(rnnd_req *r, rnnd_stream *st, const char *content_type)
{
    pthread_mutex_lock(&st->mu);
    st->refs++; /* the MHD response's; the caller's becomes the request's */
    pthread_mutex_unlock(&st->mu);
    r->stream = st;
    snprintf(r->stream_type, sizeof r->stream_type, "%s", content_type);
}

/* MHD wants body bytes. Nothing queued: park the connection until a write or the close. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    rnnd_stream *st = cls;
    ssize_t n;
    pthread_mutex_lock(&st->mu);
    if (st->len > st->off) {
        size_t k = st->len - st->off < max ? st->len - st->off : max;
        memcpy(buf, st->buf + st->off, k);
        st->off += k;
        n = (ssize_t)k;
    } else if (st->closed) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        MHD_suspend_connection(st->conn);
        st->parked = 1;
        n = 0;
    }
    pthread_mutex_unlock(&st->mu);
    return n;
}

/* The connection stopped using the stream (sent, or the client left). */
void http_stream_detach(rnnd_stream *st)
{
    pthread_mutex_lock(&st->mu);
    st->gone = 1;
    st->conn = NULL;
    st->fd = -1;
    st->parked = 0;
    pthread_mutex_unlock(&st->mu);
}

static void stream_response_free(void *cls)
{
    rnnd_stream *st = cls;
    rnnd_http *h = st->http;
    pthread_mutex_lock(&h->smu);
    if (st->prev)
        st->prev->next = st->next;
    else if (h->streams == st)
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    pthread_mutex_unlock(&h->smu);
    http_stream_detach(st);
    rnnd_stream_unref(st);
}

/* Comment lines on idle streams, so that proxies and clients keep them open. */
static void *pinger_main(void *arg)
{
    rnnd_http *h = arg;
    double every = (double)h->app->cfg->sse_ping_s;
    static const char ping[] = ": ping\n\n";
    pthread_mutex_lock(&h->smu);
    while (!h->pinger_stop) {
        struct timespec until; /* a quarter second: pings within 25% of the interval */
        rnnd_mono_deadline(&until, 250000);
        pthread_cond_timedwait(&h->swake, &h->smu, &until);
        double now = rnnd_mono_s();
        for (rnnd_stream *st = h->streams; st; st = st->next) {
            pthread_mutex_lock(&st->mu);
            if (!st->closed && !st->gone && now - st->last_write >= every)
                stream_append_locked(st, ping, sizeof ping - 1);
            pthread_mutex_unlock(&st->mu);
        }
    }
    pthread_mutex_unlock(&h->smu);
    return NULL;
}

enum MHD_Result http_send_stream(rnnd_req *r)
{
    rnnd_stream *st = r->stream;
    rnnd_http *h = r->http;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st,
                                          stream_response_free);
    if (!resp) {
        rnnd_stream_unref(st); /* the response's reference: it will never be freed */
        return MHD_NO;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    pthread_mutex_lock(&h->smu);
    pthread_mutex_lock(&st->mu);
    st->conn = r->conn;
    st->fd = ci ? ci->connect_fd : -1;
    st->http = h;
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    pthread_mutex_unlock(&st->mu);
    pthread_mutex_unlock(&h->smu);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->stream_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->hname[i], r->hvalue[i]);
    enum MHD_Result ok = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    r->queued = 1;
    r->status = 200;
    rnnd_app *app = h->app;
    rnnd_metrics_response(&app->metrics, 200);
    char lp[sizeof r->path + 16];
    RNND_LOG(&app->log, RNND_LOG_DEBUG, "request", "path=%s status=200 stream=1 ms=%.3f",
             http_log_path(r, lp, sizeof lp), http_elapsed_ms(r->t0));
    return ok;
}

void http_pinger_start(rnnd_http *h)
{
    if (h->app->cfg->sse_ping_s > 0)
        h->pinger_on = pthread_create(&h->pinger, NULL, pinger_main, h) == 0;
}

void http_pinger_stop(rnnd_http *h)
{
    if (!h->pinger_on)
        return;
    pthread_mutex_lock(&h->smu);
    h->pinger_stop = 1;
    pthread_cond_signal(&h->swake);
    pthread_mutex_unlock(&h->smu);
    pthread_join(h->pinger, NULL);
    h->pinger_on = 0;
}
