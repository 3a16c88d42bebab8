/* libmicrohttpd glue: routing, per-request state, body limits, suspend/resume (see http.h). */
#include "http.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "frontdoor.h"
#include "linger.h"
#include "rng.h"
#include "rnnd/infer.h"
#include "rnnd/json_depth.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"

#define MAX_PARAMS 2
#define MAX_SEGMENT 128
#define MAX_HEADERS 8
/* Descriptors the daemon keeps for itself besides those open when it starts serving: per
 * request thread, libmicrohttpd's epoll and wake-up descriptors (3, one to spare); and the
 * listening socket, the lingering thread's pipe, model files during a reload, a snapshot
 * being written, with room to spare. */
#define FDS_PER_THREAD 4
#define FDS_SPARE 40

/* ---- state ------------------------------------------------------------------------------- */

struct rnnd_http {
    struct MHD_Daemon *d;
    rnnd_app *app;
    const rnnd_route *routes; /* routes.c's table */
    size_t n_routes;
    atomic_size_t active;
    uint16_t port;
    MHD_socket quiesced; /* the listening socket once quiesced: ours to close */

    /* attached streams, for the pinger; lock order: smu, then a stream's mu */
    pthread_mutex_t smu;
    pthread_cond_t swake;
    rnnd_stream *streams;
    int pinger_on, pinger_stop;
    pthread_t pinger;
    char *tls_cert, *tls_key; /* PEM text while TLS is on */
    rnnd_linger *linger;      /* sockets of early replies, their bodies being dropped */
    rnnd_linger_limits linger_limits;
    rnnd_fd_budget budget;   /* connections and lingering sockets that fit */
    rnnd_log_limit loglimit; /* warnings that can come once per connection */

    /* every open connection, for the request deadlines and the address reserve; lock order:
     * cmu alone (nothing else is taken under it) */
    pthread_mutex_t cmu;
    pthread_cond_t cwake;
    struct conn_rec *conns;
    size_t nconns;
    int watch_on, watch_stop;
    pthread_t watch;
};

/* One connection, from accept to close (libmicrohttpd's socket context). */
struct conn_rec {
    int fd; /* valid until on_connection(CLOSED) unlinks the record */
    struct sockaddr_storage addr;
    int reading;        /* a request is arriving: its deadline runs */
    double t0;          /* since the connection opened or the last reply went */
    uint64_t body;      /* body bytes of this request so far */
    double w0;          /* the current rate window began (after the first) */
    uint64_t w0_body;   /* BODY when it began */
    size_t uri_len;     /* the request-target as it arrived (on_uri) */
    int uri_refused;    /* on_uri answered 414: nothing more is answered */
    const char *uri_at; /* where on_uri saw it in MHD's read buffer */
    char path_err[128]; /* why its path is refused (a '%'), or "" */
    struct conn_rec *prev, *next;
};

struct rnnd_stream {
    pthread_mutex_t mu;
    int refs;
    char *buf;
    size_t off, len, cap; /* bytes [off, len) wait to be sent */
    int closed;           /* the producer ended the body */
    int gone;             /* the connection finished or the client left */
    int parked;           /* the connection is suspended waiting for data */
    struct MHD_Connection *conn;
    int fd;                   /* the client socket while the connection lives, else -1 */
    double last_write;        /* monotonic seconds */
    rnnd_http *http;          /* set when attached */
    rnnd_stream *prev, *next; /* http->streams */
};

enum { F_DONE = 1, F_SUSPENDED = 2 };

struct rnnd_req {
    rnnd_http *http;
    struct MHD_Connection *conn;
    const rnnd_route *route;
    rnnd_handler handler;
    int method;
    char method_name[8];
    char params[MAX_PARAMS][MAX_SEGMENT + 1];
    char path[160]; /* for the access log */

    char *body;
    size_t len, cap;
    size_t seen;       /* body bytes received, kept or not */
    int early;         /* replied before the body was read: linger after */
    int on_socket;     /* replied by reply_on_socket(), not through MHD */
    int closing;       /* the body passed max_body_bytes: close after the reply */
    double closing_t0; /* when it did (monotonic seconds) */
    uint64_t dropped;  /* body bytes dropped since */
    json_t *json;
    rnnd_memhold mem; /* what this request holds of the memory budget */

    int replied; /* status/data below are set */
    unsigned status;
    char *data;
    size_t dlen;
    int nheaders;
    char hname[MAX_HEADERS][32];
    char hvalue[MAX_HEADERS][256];

    int deferred;
    atomic_int flags;
    int queued; /* handed to MHD */

    void (*on_free)(void *);
    void *on_free_arg;
    double t0; /* monotonic seconds at its first byte */

    const rnnd_key *key;        /* the caller's API key; NULL when keys are off */
    rnnd_stream *stream;        /* attached: the reply is this stream (one reference) */
    void (*release[2])(void *); /* rnnd_req_hold() */
    void *held[2];
    char stream_type[64];
};

/* ---- replies ----------------------------------------------------------------------------- */

void rnnd_reply_header(rnnd_req *r, const char *name, const char *value)
{
    if (r->nheaders >= MAX_HEADERS)
        return;
    snprintf(r->hname[r->nheaders], sizeof r->hname[0], "%s", name);
    snprintf(r->hvalue[r->nheaders], sizeof r->hvalue[0], "%s", value);
    r->nheaders++;
}

static void set_reply(rnnd_req *r, unsigned status, char *data, size_t len)
{
    free(r->data);
    r->status = status;
    r->data = data;
    r->dlen = len;
    r->replied = 1;
}

/* The one reply that needs no allocation. Not const: MHD takes a persistent buffer as void *
 * (it never writes to it). */
static char oom_body[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";

void rnnd_reply(rnnd_req *r, unsigned status, rnnd_buf *body)
{
    if (rnnd_buf_failed(body)) {
        rnnd_buf_free(body);
        set_reply(r, 503, NULL, 0); /* data NULL: oom_body is sent */
        return;
    }
    size_t len;
    char *data = rnnd_buf_steal(body, &len);
    if (!data)
        set_reply(r, 503, NULL, 0);
    else
        set_reply(r, status, data, len);
}

void rnnd_reply_empty(rnnd_req *r, unsigned status)
{
    char *data = malloc(1);
    set_reply(r, status, data, 0);
    if (!data)
        r->status = 503;
}

/* Every error reply: Retry-After where the client should come back, then the body in the
 * v1 shape or Triton's {"error": MESSAGE}. */
static void reply_error_msg(rnnd_req *r, enum rnnd_errcode code, unsigned status, int v2,
                            const char *msg)
{
    if (status == 429 || status == 503) {
        char ra[32];
        snprintf(ra, sizeof ra, "%lld", (long long)r->http->app->cfg->retry_after_s);
        rnnd_reply_header(r, "Retry-After", ra);
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    if (v2) {
        rnnd_buf_puts(&b, "{\"error\":");
        rnnd_buf_json_string(&b, msg);
        rnnd_buf_puts(&b, "}");
    } else {
        rnnd_errcode_json(&b, code, msg);
    }
    rnnd_reply(r, status, &b);
}

void rnnd_reply_error(rnnd_req *r, enum rnnd_errcode code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A path that matched no route is judged by its prefix: a v2 client still gets v2's shape
     * (with the v1 status: these refusals come before any v2 handler runs) */
    int v2 = r->route ? (r->route->flags & RT_V2) != 0
                      : !strncmp(r->path, "/v2", 3) && (!r->path[3] || r->path[3] == '/');
    reply_error_msg(r, code, rnnd_errcode_http(code), v2, msg);
}

void rnnd_v2_error(rnnd_req *r, enum rnnd_errcode code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply_error_msg(r, code, rnnd_errcode_v2(code), 1, msg);
}

/* ---- handler API ------------------------------------------------------------------------- */

int rnnd_req_method(const rnnd_req *r) { return r->method; }
uint64_t rnnd_req_owner(const rnnd_req *r) { return r->key ? r->key->owner : 0; }
int rnnd_req_admin(const rnnd_req *r) { return !r->key || r->key->admin; }
const char *rnnd_req_key_name(const rnnd_req *r) { return r->key ? r->key->name : ""; }
const char *rnnd_req_param(const rnnd_req *r, int i)
{
    return i >= 0 && i < MAX_PARAMS ? r->params[i] : "";
}
json_t *rnnd_req_body(const rnnd_req *r) { return r->json; }
rnnd_memhold *rnnd_req_mem(rnnd_req *r) { return &r->mem; }
rnnd_app *rnnd_req_app(const rnnd_req *r) { return r->http->app; }

const char *rnnd_req_query(rnnd_req *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

void rnnd_req_on_free(rnnd_req *r, void (*fn)(void *), void *arg)
{
    r->on_free = fn;
    r->on_free_arg = arg;
}

int rnnd_req_gone(rnnd_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

void rnnd_req_hold(rnnd_req *r, void (*release)(void *), void *obj)
{
    for (int i = 0; i < 2; i++) {
        if (!r->release[i]) {
            r->release[i] = release;
            r->held[i] = obj;
            return;
        }
    }
    release(obj);
}

void rnnd_req_defer(rnnd_req *r) { r->deferred = 1; }

void rnnd_req_complete(rnnd_req *r)
{
    struct MHD_Connection *conn = r->conn;
    /* Whoever comes second of (this, the request thread parking the connection) resumes it;
     * after the exchange R may be freed at any moment. */
    if (atomic_fetch_or(&r->flags, F_DONE) & F_SUSPENDED)
        MHD_resume_connection(conn);
}

/* ---- streams ----------------------------------------------------------------------------- */

/* The path for a debug log line. A session id is a capability and stays out of logs: the
 * segment after any "sessions" segment (in any case) becomes {id}, whether or not the path
 * is a route, and so does anything shaped like an id anywhere else (rnnd_log_quote_ids():
 * "/v1/sessionsX/ID", "/ID", "/v1/sessions/x/../ID" were logged whole). A path cut to fit
 * r->path may end inside an id: a hex run at its end is dropped too. Quoted, as the rest is
 * the client's. */
static const char *log_path(const rnnd_req *r, char *out, size_t n)
{
    char tmp[sizeof r->path + 8];
    size_t j = 0;
    int after_sessions = 0;
    for (const char *p = r->path; *p && j + 5 < sizeof tmp;) {
        if (*p == '/') {
            tmp[j++] = *p++;
            continue;
        }
        size_t len = strcspn(p, "/");
        if (after_sessions) {
            memcpy(tmp + j, "{id}", 4);
            j += 4;
        } else {
            size_t room = sizeof tmp - 1 - j;
            memcpy(tmp + j, p, len < room ? len : room);
            j += len < room ? len : room;
        }
        after_sessions = len == 8 && !strncasecmp(p, "sessions", 8);
        p += len;
    }
    if (strlen(r->path) + 1 >= sizeof r->path) {
        size_t k = j;
        while (k && strchr("0123456789abcdefABCDEF", tmp[k - 1]))
            k--;
        if (k < j && j - k < RNND_ID_LEN) {
            k = k < sizeof tmp - 5 ? k : sizeof tmp - 5;
            memcpy(tmp + k, "{id}", 4);
            j = k + 4;
        }
    }
    tmp[j] = '\0';
    return rnnd_log_quote_ids(out, n, tmp);
}

static double elapsed_ms(double t0) { return (rnnd_mono_s() - t0) * 1e3; }

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
static void stream_detach(rnnd_stream *st)
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
    stream_detach(st);
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

static enum MHD_Result send_stream(rnnd_req *r)
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
             log_path(r, lp, sizeof lp), elapsed_ms(r->t0));
    return ok;
}

/* ---- deadlines and the address reserve ----------------------------------------------------- */

/* libmicrohttpd's timeout (request_timeout_s) counts only silence, so a client sending a byte
 * a second holds a connection forever (slowloris). Here a request has a deadline instead:
 * its headers must be in within request_timeout_s of the connection's start or of the last
 * reply on it, and its body gets one more second per min_body_rate bytes received. Bytes
 * sent early must not buy hours of trickling after them, so past the first request_timeout_s
 * every window of that length must also carry min_body_rate bytes a second. A request past
 * its deadline has its socket shut down, which makes MHD close it. */

static struct conn_rec *conn_rec_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A request on CONN starts arriving (AT_START) or has arrived (0); BODY bytes more of it. */
static void conn_progress(rnnd_http *h, struct MHD_Connection *conn, int reading, size_t body)
{
    struct conn_rec *c = conn_rec_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&h->cmu);
    if (reading && !c->reading) {
        c->t0 = rnnd_mono_s();
        c->body = 0;
        c->w0 = 0;
        c->w0_body = 0;
    }
    c->reading = reading;
    c->body += body;
    pthread_mutex_unlock(&h->cmu);
}

/* Only as many bytes as the family has: a Unix socket's client address (socket activation)
 * is just its family, two bytes long. */
static void copy_client_addr(struct sockaddr_storage *to, const struct sockaddr *from)
{
    size_t n = from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
        : from->sa_family == AF_INET       ? sizeof(struct sockaddr_in)
                                           : sizeof from->sa_family;
    memset(to, 0, sizeof *to);
    memcpy(to, from, n);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    rnnd_http *h = cls;
    struct conn_rec *c = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!fd || !(c = calloc(1, sizeof *c)))
            return; /* unwatched: MHD's idle timeout still closes it */
        c->fd = fd->connect_fd;
        if (addr && addr->client_addr)
            copy_client_addr(&c->addr, addr->client_addr);
        c->reading = 1;
        c->t0 = rnnd_mono_s();
        pthread_mutex_lock(&h->cmu);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        h->nconns++;
        pthread_mutex_unlock(&h->cmu);
        *socket_context = c;
    } else if (c) {
        /* MHD closes the descriptor after this: unlinked, the watchdog no longer touches it */
        pthread_mutex_lock(&h->cmu);
        if (c->prev)
            c->prev->next = c->next;
        else
            h->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        h->nconns--;
        pthread_mutex_unlock(&h->cmu);
        free(c);
        *socket_context = NULL;
    }
}

static void *watch_main(void *arg)
{
    rnnd_http *h = arg;
    double grace = (double)h->app->cfg->request_timeout_s;
    double rate = (double)h->app->cfg->min_body_rate;
    pthread_mutex_lock(&h->cmu);
    while (!h->watch_stop) {
        struct timespec until; /* a quarter second: deadlines within 0.25 s */
        rnnd_mono_deadline(&until, 250000);
        pthread_cond_timedwait(&h->cwake, &h->cmu, &until);
        double now = rnnd_mono_s();
        for (struct conn_rec *c = h->conns; c; c = c->next) {
            if (!c->reading)
                continue;
            int slow = 0;
            if (!c->w0 && now - c->t0 >= grace) {
                c->w0 = now; /* the first window is the old rule's alone */
                c->w0_body = c->body;
            } else if (c->w0 && now - c->w0 >= grace) {
                slow = (double)(c->body - c->w0_body) < rate * grace;
                c->w0 = now;
                c->w0_body = c->body;
            }
            if (!slow && now - c->t0 <= grace + (double)c->body / rate)
                continue;
            c->reading = 0;
            shutdown(c->fd, SHUT_RDWR);
            RNND_LOG(&h->app->log, RNND_LOG_INFO, "request_cut",
                     "reason=%s seconds=%.1f body_bytes=%llu", slow ? "rate" : "deadline",
                     now - c->t0, (unsigned long long)c->body);
        }
    }
    pthread_mutex_unlock(&h->cmu);
    return NULL;
}

/* The last quarter of max_connections (as lowered to fit the descriptors) is kept for
 * addresses that hold no connection yet, so that a few addresses cannot take every slot
 * (max_connections_per_ip alone lets max_connections / max_connections_per_ip addresses do
 * it). Both count hosts as rnnd_same_host() does: libmicrohttpd's own per-address limit
 * keys IPv6 by all 128 bits, and a client holds a whole /64. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    rnnd_http *h = cls;
    size_t max = h->budget.connections, per_ip = (size_t)h->app->cfg->max_connections_per_ip;
    size_t held = 0;
    pthread_mutex_lock(&h->cmu);
    for (struct conn_rec *c = h->conns; c && held < per_ip; c = c->next)
        held += rnnd_same_host(&c->addr, addr);
    int reserve = h->nconns >= max - max / 4;
    pthread_mutex_unlock(&h->cmu);
    return held >= per_ip || (reserve && held) ? MHD_NO : MHD_YES;
}

static void watch_stop(rnnd_http *h)
{
    if (!h->watch_on)
        return;
    pthread_mutex_lock(&h->cmu);
    h->watch_stop = 1;
    pthread_cond_signal(&h->cwake);
    pthread_mutex_unlock(&h->cmu);
    pthread_join(h->watch, NULL);
    h->watch_on = 0;
}

/* ---- request processing ------------------------------------------------------------------ */

static int parse_method(const char *m)
{
    if (!strcmp(m, "GET"))
        return RNND_GET;
    if (!strcmp(m, "HEAD"))
        return RNND_HEAD;
    if (!strcmp(m, "POST"))
        return RNND_POST;
    if (!strcmp(m, "PUT"))
        return RNND_PUT;
    if (!strcmp(m, "DELETE"))
        return RNND_DELETE;
    return 0;
}

/* Match URL against PATTERN, capturing '*' segments into R's params. */
static int match(const char *pattern, const char *url, rnnd_req *r)
{
    int np = 0;
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (*p == '*') {
            const char *end = strchr(u, '/');
            size_t n = end ? (size_t)(end - u) : strlen(u);
            if (!n || n > MAX_SEGMENT || np >= MAX_PARAMS)
                return 0;
            memcpy(r->params[np], u, n);
            r->params[np][n] = '\0';
            np++;
            p++;
            u += n;
        } else if (*p == *u) {
            p++;
            u++;
        } else {
            return 0;
        }
    }
    return !*p && !*u;
}

/* Is ORIGIN in the comma-separated allow-list LIST (or is LIST "*")? */
static int origin_allowed(const char *list, const char *origin)
{
    if (!*list || !origin || !*origin)
        return 0;
    size_t on = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && p[m - 1] == ' ')
            m--;
        if ((m == 1 && *p == '*') || (m == on && !strncmp(p, origin, on)))
            return 1;
        p += n;
    }
    return 0;
}

/* CORS: a browser's request from an allowed origin may read the reply. Returns 1 when the
 * origin is allowed (and the headers are set). */
static int cors_headers(rnnd_req *r)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin_allowed(r->http->app->cfg->cors_origins, origin))
        return 0;
    rnnd_reply_header(r, "Access-Control-Allow-Origin", origin);
    rnnd_reply_header(r, "Vary", "Origin");
    rnnd_reply_header(r, "Access-Control-Expose-Headers", "Location, Retry-After");
    return 1;
}

static void allow_list(const rnnd_route *rt, char allow[64])
{
    allow[0] = '\0';
    if (rt->get)
        strcat(allow, "GET, HEAD");
    if (rt->post)
        strcat(allow, *allow ? ", POST" : "POST");
    if (rt->put)
        strcat(allow, *allow ? ", PUT" : "PUT");
    if (rt->del)
        strcat(allow, *allow ? ", DELETE" : "DELETE");
}

static void allow_header(rnnd_req *r, const rnnd_route *rt)
{
    char allow[64];
    allow_list(rt, allow);
    rnnd_reply_header(r, "Allow", allow);
}

static int is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, want, n))
        return 0;
    ct += n;
    while (*ct == ' ')
        ct++;
    return !*ct || *ct == ';';
}

/* The request line and Host beyond rnnd_frontdoor_head(): a NUL in the line, a Host that is
 * not host[:port]. Returns 0, or RNND_ERR_INVALID with WHY filled. */
static int check_line(rnnd_req *r, const struct conn_rec *c, const char *method,
                      const char *version, char *why, size_t whylen)
{
    if (c && rnnd_frontdoor_line(method, c->uri_at, c->uri_len, version)) {
        snprintf(why, whylen, "the request line holds a NUL");
        return RNND_ERR_INVALID;
    }
    return rnnd_frontdoor_host(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                           MHD_HTTP_HEADER_HOST),
                               why, whylen);
}

/* The last call of a chunked request: trailer fields, which no route reads and MHD does not
 * check, refuse it before it runs, and close (whatever was already decided is replaced). */
static void check_trailers(rnnd_req *r)
{
    char why[160];
    if (!rnnd_frontdoor_trailers(r->conn, why, sizeof why))
        return;
    r->nheaders = 0;
    rnnd_reply_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", why);
}

/* The first call: headers are in, the body is not. Decide everything that does not need the
 * body, so a bad request is refused without buffering it. Returns 1 to answer right now
 * (libmicrohttpd then stops reading and closes the connection; the lingering close drops the
 * rest of the body): done for ambiguous framing, when the body is declared over the limit,
 * and for any refusal of a chunked body, whose size nobody knows; other refusals read and
 * drop their declared body first so the connection survives. */
static int begin(rnnd_req *r, const char *url, const char *method, const char *version)
{
    rnnd_app *app = r->http->app;
    snprintf(r->path, sizeof r->path, "%s", url);
    r->method = parse_method(method);
    snprintf(r->method_name, sizeof r->method_name, "%s", r->method ? method : "other");
    struct conn_rec *c = conn_rec_of(r->conn);
    char why[320];
    int bad = rnnd_frontdoor_head(r->conn, method, c && c->uri_len ? c->uri_len : strlen(url),
                                  version, (size_t)app->cfg->max_header_bytes, why, sizeof why);
    if (bad == RNND_ERR_LIMIT) {
        rnnd_buf b;
        rnnd_buf_init(&b);
        rnnd_errcode_json(&b, RNND_E_LIMIT_EXCEEDED, why);
        rnnd_reply(r, 431, &b);
        return 1;
    }
    if (!bad)
        bad = check_line(r, c, method, version, why, sizeof why);
    if (bad) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", why);
        return 1;
    }
    /* a chunked body may be endless: refusing it means closing, not reading it to its end */
    int chunked = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long clen = 0;
    int too_big = 0;
    if (cl) {
        char *end;
        clen = strtoull(cl, &end, 10);
        too_big = *end == '\0' && clen > (unsigned long long)app->cfg->max_body_bytes;
    }
    if (c && c->path_err[0]) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", c->path_err);
        return too_big || chunked;
    }
    const rnnd_http *h = r->http;
    for (size_t i = 0; i < h->n_routes; i++) {
        if (match(h->routes[i].pattern, url, r)) {
            r->route = &h->routes[i];
            break;
        }
    }
    int cors = cors_headers(r);
    int options = !strcmp(method, "OPTIONS");
    if (options && cors &&
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Method")) {
        /* A preflight carries no credentials, and its Origin is anyone's to claim: the same
         * answer on every path, known or not, so that it tells nothing about the routes. */
        rnnd_reply_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE");
        rnnd_reply_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        rnnd_reply_header(r, "Access-Control-Max-Age", "600");
        rnnd_reply_empty(r, 204);
        return too_big || chunked;
    }
    if (atomic_load(&app->draining) && !(r->route && (r->route->flags & RT_DRAIN))) {
        rnnd_reply_header(r, "Connection", "close");
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "the server is shutting down");
        return too_big || chunked;
    }
    const rnnd_route *rt = r->route;
    if (app->auth.n && !(rt && (rt->flags & RT_OPEN))) {
        r->key = rnnd_auth_check(&app->auth,
                                 MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_AUTHORIZATION));
        if (!r->key) {
            rnnd_reply_header(r, "WWW-Authenticate", "Bearer realm=\"rnnd\"");
            rnnd_reply_error(r, RNND_E_UNAUTHORIZED,
                             "a valid API key is required: "
                             "Authorization: Bearer KEY");
            return too_big || chunked;
        }
    }
    if (!r->route) {
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no such resource: %s", url);
        return too_big || chunked;
    }
    if (options) { /* behind the key check, as every route is */
        allow_header(r, rt);
        rnnd_reply_empty(r, 204);
        return too_big;
    }
    switch (r->method) {
    case RNND_GET:
    case RNND_HEAD: r->handler = rt->get; break;
    case RNND_POST: r->handler = rt->post; break;
    case RNND_PUT: r->handler = rt->put; break;
    case RNND_DELETE: r->handler = rt->del; break;
    default: r->handler = NULL; break;
    }
    if (!r->handler) {
        allow_header(r, rt);
        rnnd_reply_error(r, RNND_E_METHOD_NOT_ALLOWED, "%s is not allowed on %s", method, url);
        return too_big || chunked;
    }
    if (too_big) {
        rnnd_reply_error(r, RNND_E_LIMIT_EXCEEDED,
                         "request body of %llu bytes is over "
                         "max_body_bytes (%lld)",
                         clen, (long long)app->cfg->max_body_bytes);
        return 1;
    }
    if (r->method == RNND_POST || r->method == RNND_PUT) {
        const char *ct =
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        int has_body = (cl && clen > 0) || chunked;
        /* Triton's HTTP clients send JSON without a Content-Type (or as octet-stream):
         * the v2 routes take any type and let the JSON decoder judge the body */
        if (!(rt->flags & RT_V2) && ((ct && !is_json_type(ct)) || (!ct && has_body))) {
            if (ct)
                rnnd_reply_error(r, RNND_E_UNSUPPORTED_MEDIA_TYPE,
                                 "the request body must be "
                                 "Content-Type: application/json, not \"%.100s\"",
                                 ct);
            else
                rnnd_reply_error(r, RNND_E_UNSUPPORTED_MEDIA_TYPE,
                                 "the request body must be "
                                 "Content-Type: application/json; the request has no "
                                 "Content-Type");
            return chunked;
        }
    }
    return 0;
}

/* A warning at most once a second of its KIND (a constant string), with the count of those
 * held back since the last one. */
static void warn_limited(rnnd_http *h, const char *kind, const char *event, const char *msg)
{
    unsigned long held;
    char q[600];
    if (rnnd_log_limit_pass(&h->loglimit, kind, &held))
        RNND_LOG(&h->app->log, RNND_LOG_WARN, event, "msg=%s suppressed=%lu",
                 rnnd_log_quote_ids(q, sizeof q, msg), held);
}

/* Hand a duplicate of CONN's socket to the lingering close. When it is full (for all, or for
 * the client's address) the socket closes at once and the client may see a reset. */
static void hand_to_linger(rnnd_http *h, int connect_fd)
{
    static const char full[] = "lingering close full: a refused body's socket closed at once";
    int fd = fcntl(connect_fd, F_DUPFD_CLOEXEC, 0);
    if (fd >= 0 && rnnd_linger_add(h->linger, fd) == RNND_ERR_LIMIT)
        warn_limited(h, full, "linger_full", full);
}

/* Answer CONN with STATUS and the JSON BODY written straight on its socket, behind
 * libmicrohttpd's back, and hand a duplicate of the socket to the lingering close (linger.h).
 * For the moments when MHD cannot answer: while a body arrives (MHD_queue_response refuses
 * then) or before the headers are parsed. The caller then makes MHD close its side, which
 * ends the stream (FIN); the duplicate keeps reading and dropping what the client still
 * sends. Plain HTTP only: a TLS socket carries records that only MHD's session can write.
 * Returns 0 when the whole reply went out. */
static int reply_on_socket(rnnd_http *h, struct MHD_Connection *conn, unsigned status, char *body,
                           size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || h->tls_cert)
        return -1;
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\nCache-Control: no-store\r\n"
                     "\r\n",
                     status, MHD_get_reason_phrase_for(status), len);
    struct iovec iov[2] = {{head, (size_t)n}, {body, len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    /* the send buffer is empty (no reply is under way), so a reply this small fits at once */
    ssize_t sent = sendmsg(ci->connect_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent != (ssize_t)((size_t)n + len))
        return -1;
    hand_to_linger(h, ci->connect_fd);
    return 0;
}

/* The body passed max_body_bytes. libmicrohttpd 0.9.75 cannot reply while a body is still
 * arriving (MHD_queue_response refuses): over plain HTTP the 413 is written on the socket
 * (reply_on_socket); over TLS the rest is read and dropped, within the lingering bounds
 * (linger.h), and the reply, which closes the connection, goes out when the body ends. */
static void start_closing(rnnd_req *r)
{
    r->closing = 1;
    r->closing_t0 = rnnd_mono_s();
    free(r->body);
    r->body = NULL;
    rnnd_mem_uncharge(&r->mem, r->cap);
    r->len = r->cap = 0;
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)r->http->linger_limits.idle_s);
}

/* N more bytes of the body. Returns -1 when the connection must close at once: the body went
 * on past the lingering bounds. */
static int receive(rnnd_req *r, const char *data, size_t n)
{
    rnnd_http *h = r->http;
    size_t max = (size_t)h->app->cfg->max_body_bytes;
    char err[256] = "";
    int over = !r->closing && n > max - r->seen, rc = 0;
    size_t cap = r->cap;
    if (!r->closing && !over && !r->replied && r->len + n + 1 > r->cap) {
        cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        /* a body is charged as it is buffered: bodies still arriving count towards the
         * budget, and one that cannot fit beside the others is refused and closed */
        rc = rnnd_mem_charge(&r->mem, cap - r->cap, err, sizeof err);
    }
    if (over || rc) {
        if (!r->replied && over)
            rnnd_reply_error(r, RNND_E_LIMIT_EXCEEDED, "request body is over max_body_bytes (%zu)",
                             max);
        else if (!r->replied)
            rnnd_reply_error(r, rnnd_errcode_of(rc), "the request body: %s", err);
        start_closing(r);
        if (r->data && !reply_on_socket(h, r->conn, r->status, r->data, r->dlen)) {
            r->on_socket = 1;
            rnnd_metrics_response(&h->app->metrics, r->status);
            return -1; /* answered: MHD closes its side, the lingering close drops */
        }
    }
    if (r->closing) {
        r->dropped += n;
        if (!rnnd_linger_spent(&h->linger_limits, rnnd_mono_s() - r->closing_t0, 0, r->dropped))
            return 0;
        RNND_LOG(&h->app->log, RNND_LOG_INFO, "body_cut", "endpoint=%s dropped=%llu",
                 r->route ? r->route->pattern : "-", (unsigned long long)r->dropped);
        return -1;
    }
    r->seen += n;
    if (r->replied)
        return 0; /* refused already: the rest of the body is read and dropped */
    if (cap > r->cap) {
        char *g = realloc(r->body, cap);
        if (!g) {
            rnnd_mem_uncharge(&r->mem, cap - r->cap);
            rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for the request body");
            return 0;
        }
        r->body = g;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return 0;
}

/* Decode the body (there is one, not yet decoded). Replies and returns -1 on error. */
static int decode_body(rnnd_req *r)
{
    rnnd_app *app = r->http->app;
    if (rnnd_json_depth_check(r->body, r->len, app->cfg->max_json_depth) != 0) {
        rnnd_reply_error(r, RNND_E_INVALID_JSON, "JSON nested deeper than max_json_depth (%lld)",
                         (long long)app->cfg->max_json_depth);
        return -1;
    }
    /* the body was charged as it arrived (receive); what it decodes to is charged as it is
     * built (membudget.h) */
    char err[256];
    size_t body_bytes = r->cap;
    int rc = rnnd_mem_json_load(&r->mem, r->body, r->len, &r->json, err, sizeof err);
    if (rc) {
        rnnd_reply_error(r, rc == RNND_ERR_INVALID ? RNND_E_INVALID_JSON : rnnd_errcode_of(rc),
                         "%s", err);
        return -1;
    }
    if (!json_is_object(r->json)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the request body must be a JSON object, got %s",
                         rnnd_json_type_desc(r->json));
        return -1;
    }
    free(r->body); /* the decoded form is all handlers need */
    r->body = NULL;
    r->cap = 0;
    rnnd_mem_uncharge(&r->mem, body_bytes);
    return 0;
}

int rnnd_req_decode(rnnd_req *r) { return r->len && r->body && !r->json ? decode_body(r) : 0; }

const char *rnnd_req_raw_body(const rnnd_req *r, size_t *len)
{
    *len = r->body && !r->json ? r->len : 0;
    return *len ? r->body : NULL;
}

/* The whole body is in: decode it (unless the handler does) and run the handler. */
static void dispatch(rnnd_req *r)
{
    /* RT_RAW_BODY: the step endpoint scans its common body shape without a JSON DOM
     * (rnnd/step_scan.h) and decodes it itself only when that fails */
    if (r->len && !(r->route->flags & RT_RAW_BODY) && decode_body(r))
        return;
    r->handler(r);
    if (!r->deferred && !r->replied && !r->stream)
        rnnd_reply_error(r, RNND_E_INTERNAL, "the handler gave no reply");
}

static enum MHD_Result send_reply(rnnd_req *r)
{
    struct MHD_Response *resp;
    if (r->data) {
        resp = MHD_create_response_from_buffer(r->dlen, r->data, MHD_RESPMEM_MUST_FREE);
        if (resp)
            r->data = NULL;
    } else {
        r->status = 503;
        resp =
            MHD_create_response_from_buffer(sizeof oom_body - 1, oom_body, MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        return MHD_NO;
    int typed = 0, closes = 0;
    for (int i = 0; i < r->nheaders; i++) {
        typed |= !strcasecmp(r->hname[i], MHD_HTTP_HEADER_CONTENT_TYPE);
        closes |= !strcasecmp(r->hname[i], MHD_HTTP_HEADER_CONNECTION);
    }
    if (r->status != 204 && !typed)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if ((r->early || r->closing) && !closes) /* the body is not read to its end */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->hname[i], r->hvalue[i]);
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    r->queued = 1;
    rnnd_app *app = r->http->app;
    rnnd_metrics_response(&app->metrics, r->status);
    char lp[sizeof r->path + 16];
    RNND_LOG(&app->log, RNND_LOG_DEBUG, "request", "path=%s status=%u ms=%.3f",
             log_path(r, lp, sizeof lp), r->status, elapsed_ms(r->t0));
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    rnnd_http *h = cls;
    rnnd_req *r = *con_cls;
    if (!r) {
        struct conn_rec *c = conn_rec_of(conn);
        if (c && c->uri_refused)
            return MHD_NO; /* answered 414 already: close */
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO; /* closes the connection: nothing better to do without memory */
        *con_cls = r;
        atomic_fetch_add(&h->active, 1);
        r->http = h;
        r->conn = conn;
        r->mem.mb = &h->app->mem;
        atomic_init(&r->flags, 0);
        r->t0 = rnnd_mono_s();
        if (begin(r, url, method, version)) {
            r->early = 1;
            /* a head that nearly fills the pool leaves MHD no room for the reply's head */
            if (r->status == 431 && r->data &&
                !reply_on_socket(h, conn, r->status, r->data, r->dlen)) {
                r->on_socket = 1;
                rnnd_metrics_response(&h->app->metrics, r->status);
                return MHD_NO;
            }
            return send_reply(r);
        }
        return MHD_YES;
    }
    if (r->queued)
        return MHD_YES;
    if (*upload_data_size) {
        conn_progress(h, conn, 1, *upload_data_size);
        int cut = receive(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return cut ? MHD_NO : MHD_YES;
    }
    conn_progress(h, conn, 0, 0); /* the whole request is in: no deadline while answering */
    if (!r->deferred && !r->stream && !r->closing)
        check_trailers(r);
    if (!r->replied && !r->deferred)
        dispatch(r);
    if (r->stream && !r->replied)
        return send_stream(r);
    if (r->deferred) {
        int f = atomic_load(&r->flags);
        if (!(f & F_DONE)) {
            if (f & F_SUSPENDED)
                return MHD_YES; /* not expected: resumed before done */
            MHD_suspend_connection(conn);
            if (atomic_fetch_or(&r->flags, F_SUSPENDED) & F_DONE)
                MHD_resume_connection(conn); /* it finished meanwhile */
            return MHD_YES;
        }
    }
    return send_reply(r);
}

/* Metrics and the access log of a finished request. */
static void account(rnnd_http *h, rnnd_req *r, enum MHD_RequestTerminationCode toe)
{
    rnnd_app *app = h->app;
    size_t route = r->route ? (size_t)(r->route - h->routes) : h->n_routes;
    unsigned status =
        (r->queued && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) || r->on_socket ? r->status : 0;
    double secs = elapsed_ms(r->t0) / 1e3;
    rnnd_metrics_request(&app->metrics, route, r->method, status, secs);
    if (!app->cfg->access_log || RNND_LOG_INFO < app->log.level)
        return;
    /* the route pattern, not the path: session ids are capabilities and stay out of logs */
    const char *model = "";
    if (r->route && (r->route->flags & RT_MODEL))
        model = r->params[0];
    char q[200];
    RNND_LOG(&app->log, RNND_LOG_INFO, "access",
             "method=%s endpoint=%s model=%s key=%s status=%u ms=%.3f", r->method_name,
             r->route ? r->route->pattern : "-", rnnd_log_quote_ids(q, sizeof q, model),
             r->key ? r->key->name : "-",
             status ? status : (r->queued || r->on_socket ? r->status : 0), secs * 1e3);
}

/* Hand the socket of an early reply, its body unread, to the lingering close (linger.h).
 * libmicrohttpd closes its own descriptor after this; the duplicate keeps the socket open. */
static void linger(rnnd_http *h, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        hand_to_linger(h, ci->connect_fd);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    rnnd_http *h = cls;
    rnnd_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    conn_progress(h, conn, 1, 0); /* the next request's deadline runs from here */
    if (r->early && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        linger(h, conn);
    account(h, r, toe);
    if (r->stream) {
        stream_detach(r->stream);
        rnnd_stream_unref(r->stream);
    }
    if (r->on_free)
        r->on_free(r->on_free_arg);
    for (int i = 0; i < 2; i++)
        if (r->release[i])
            r->release[i](r->held[i]);
    json_decref(r->json);
    free(r->body);
    free(r->data);
    rnnd_mem_release(&r->mem);
    free(r);
    atomic_fetch_sub(&h->active, 1);
}

/* libmicrohttpd calls this once the request line is in, before it parses the query: a URI
 * too long or of too many arguments for the connection's pool (frontdoor.h) is refused here,
 * with 414 written on the socket, before MHD fills its pool with the arguments and, finding
 * no room for any reply, closes without one (a 26 KB query of 128 arguments did). The socket
 * is then shut both ways: MHD sees the end of the stream and closes, and nothing it may still
 * try to write (its own 431) gets out, so the 414 is the only answer. Over TLS the connection
 * is closed without an answer (reply_on_socket). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    rnnd_http *h = cls;
    struct conn_rec *c = conn_rec_of(conn);
    if (c) {
        c->uri_len = strlen(uri);
        c->uri_refused = 0;
        c->uri_at = uri;
        c->path_err[0] = '\0';
        rnnd_frontdoor_path(uri, c->path_err, sizeof c->path_err);
    }
    char msg[320];
    if (!rnnd_frontdoor_uri(uri, (size_t)h->app->cfg->max_header_bytes, msg, sizeof msg))
        return NULL;
    if (c)
        c->uri_refused = 1;
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_errcode_json(&b, RNND_E_LIMIT_EXCEEDED, msg);
    size_t len;
    char *body = rnnd_buf_failed(&b) ? NULL : rnnd_buf_steal(&b, &len);
    rnnd_buf_free(&b);
    if (body && !reply_on_socket(h, conn, 414, body, len))
        rnnd_metrics_response(&h->app->metrics, 414);
    free(body);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR);
    RNND_LOG(&h->app->log, RNND_LOG_INFO, "uri_refused", "uri_bytes=%zu", strlen(uri));
    return NULL;
}

/* libmicrohttpd's messages, one a second of each: FMT, a literal in libmicrohttpd, tells
 * the kinds apart. Some come once per connection or accept ("Too many open files"). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    rnnd_http *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    warn_limited(h, fmt, "http", msg);
}

/* ---- start / stop ------------------------------------------------------------------------ */

/* "HOST:PORT" or "[V6]:PORT" into ADDR. */
static int parse_listen(const char *spec, struct sockaddr_storage *addr, socklen_t *alen,
                        char *host, size_t hostlen, char *err, size_t errlen)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec) {
        snprintf(err, errlen, "listen: expected ADDR:PORT, got \"%s\"", spec);
        return RNND_ERR_INVALID;
    }
    size_t hn = (size_t)(colon - spec);
    const char *hs = spec;
    if (hs[0] == '[' && hn >= 2 && hs[hn - 1] == ']') {
        hs++;
        hn -= 2;
    }
    if (hn >= hostlen) {
        snprintf(err, errlen, "listen: address too long");
        return RNND_ERR_INVALID;
    }
    memcpy(host, hs, hn);
    host[hn] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || port > 65535) {
        snprintf(err, errlen, "listen: bad port in \"%s\"", spec);
        return RNND_ERR_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res = NULL;
    int gai = getaddrinfo(hn ? host : NULL, NULL, &hints, &res);
    if (gai || !res) {
        snprintf(err, errlen, "listen: cannot resolve \"%s\": %s", host, gai_strerror(gai));
        return RNND_ERR_INVALID;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *alen = res->ai_addrlen;
    freeaddrinfo(res);
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    return RNND_OK;
}

/* The whole of PATH as a NUL-terminated string (PEM), or NULL with ERR. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *g = cap <= (1u << 20) ? realloc(buf, cap) : NULL;
            if (!g) {
                snprintf(err, errlen, "%s %s: too large or out of memory", what, path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = g;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (!n)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || !len) {
        snprintf(err, errlen, "%s %s: %s", what, path, bad ? "read error" : "empty file");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static void free_secret(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

/* What rnnd_http_start made besides the libmicrohttpd daemon, which is stopped already. */
static void free_http(rnnd_http *h)
{
    rnnd_linger_free(h->linger); /* after the daemon: closing connections hand it sockets */
    free(h->tls_cert);
    free_secret(h->tls_key);
    pthread_cond_destroy(&h->swake);
    pthread_mutex_destroy(&h->smu);
    pthread_cond_destroy(&h->cwake);
    pthread_mutex_destroy(&h->cmu);
    rnnd_log_limit_destroy(&h->loglimit);
    free(h);
}

/* Descriptors open now: the daemon's own before it serves. */
static size_t open_descriptors(void)
{
    DIR *d = opendir("/proc/self/fd");
    size_t n = 0;
    if (!d) {
        for (int fd = 0; fd < 1024; fd++)
            n += fcntl(fd, F_GETFD) != -1;
        return n;
    }
    while (readdir(d))
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", ".." and the folder's own descriptor */
}

/* Fit max_connections and the lingering sockets under RLIMIT_NOFILE (linger.h). The soft
 * limit is raised towards the hard one first: systemd leaves the soft one at 1024 for
 * programs that use select(), and rnnd does not (libmicrohttpd runs on epoll). What still
 * does not fit lowers the number of connections, with a warning. */
static int plan_descriptors(rnnd_http *h, unsigned threads, char *err, size_t errlen)
{
    const rnnd_config *cfg = h->app->cfg;
    size_t own = open_descriptors() + FDS_PER_THREAD * threads + FDS_SPARE;
    size_t max = (size_t)cfg->max_connections, per_ip = (size_t)cfg->max_connections_per_ip;
    rnnd_fd_budget_plan(UINT64_MAX, own, max, per_ip, &h->budget, err, errlen);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
    rlim_t was = rl.rlim_cur, need = (rlim_t)h->budget.need;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit up = {rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max,
                            rl.rlim_max};
        if (!setrlimit(RLIMIT_NOFILE, &up))
            rl.rlim_cur = up.rlim_cur;
    }
    uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    int rc = rnnd_fd_budget_plan(limit, own, max, per_ip, &h->budget, err, errlen);
    if (rc)
        return rc;
    int lowered = h->budget.connections < max;
    char from[48] = "";
    if (was != rl.rlim_cur)
        snprintf(from, sizeof from, " raised_from=%llu", (unsigned long long)was);
    RNND_LOG(&h->app->log, lowered ? RNND_LOG_WARN : RNND_LOG_INFO, "fd_budget",
             "rlimit_nofile=%llu%s need=%llu own=%zu max_connections=%zu linger=%zu "
             "linger_per_addr=%zu%s",
             (unsigned long long)limit, from, (unsigned long long)h->budget.need, own,
             h->budget.connections, h->budget.linger, h->budget.linger_per_addr,
             lowered ? " msg=\"max_connections lowered to fit "
                       "RLIMIT_NOFILE: raise it (ulimit -n, LimitNOFILE=)\""
                     : "");
    return RNND_OK;
}

/* http_threads, 0 resolved. Request threads beyond the cores only add context switches:
 * under bench/e2e's step load on 2 cores, 4 threads cost 1.0 switches and ~9% more server
 * CPU per request than 2 threads (0.7 switches). They never compute, so a few are enough. */
static unsigned request_threads(const rnnd_config *cfg)
{
    if (cfg->http_threads > 0)
        return (unsigned)cfg->http_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}

int rnnd_http_start(rnnd_app *app, const rnnd_route *routes, size_t n_routes, rnnd_http **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    const rnnd_config *cfg = app->cfg;
    struct sockaddr_storage addr;
    socklen_t alen;
    char host[256];
    int rc = RNND_OK;
    if (app->listen_fd >= 0) {
        /* socket activation: serve on the socket we were given; its address is the truth */
        alen = sizeof addr;
        if (getsockname(app->listen_fd, (struct sockaddr *)&addr, &alen)) {
            snprintf(err, errlen, "the socket passed by the service manager: %s", strerror(errno));
            return RNND_ERR_IO;
        }
        if (addr.ss_family == AF_UNIX ||
            getnameinfo((struct sockaddr *)&addr, alen, host, sizeof host, NULL, 0, NI_NUMERICHOST))
            snprintf(host, sizeof host, "unix");
    } else if ((rc = parse_listen(cfg->listen, &addr, &alen, host, sizeof host, err, errlen))) {
        return rc;
    }
    unsigned threads = request_threads(cfg);
    rnnd_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    h->app = app;
    h->routes = routes;
    h->n_routes = n_routes;
    h->quiesced = MHD_INVALID_SOCKET;
    atomic_init(&h->active, 0);
    pthread_mutex_init(&h->smu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->swake, &ca);
    pthread_cond_init(&h->cwake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->cmu, NULL);
    rnnd_log_limit_init(&h->loglimit);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
        MHD_USE_ITC | MHD_USE_ERROR_LOG;
    int tls = *cfg->tls_cert != '\0';
    if (tls) {
        int bad = RNND_OK;
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "tls_cert: this libmicrohttpd was built without TLS");
            bad = RNND_ERR_UNSUPPORTED;
        } else if (!(h->tls_cert = read_pem("tls_cert", cfg->tls_cert, err, errlen)) ||
                   !(h->tls_key = read_pem("tls_key", cfg->tls_key, err, errlen))) {
            bad = RNND_ERR_IO;
        }
        if (bad) {
            free_http(h);
            return bad;
        }
        flags |= MHD_USE_TLS;
    }
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* where to listen: our own address, or the socket systemd passed */
    struct MHD_OptionItem where[5] = {
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_END, 0, NULL},
    };
    if (app->listen_fd >= 0)
        where[0] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, app->listen_fd, NULL};
    if (tls) {
        where[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert};
        where[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key};
        where[3] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)cfg->tls_priorities};
        where[4] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    }
    rnnd_linger_limits_default(&h->linger_limits, (uint64_t)cfg->max_body_bytes,
                               (double)cfg->request_timeout_s);
    if ((rc = plan_descriptors(h, threads, err, errlen)) ||
        (rc = rnnd_linger_new(&h->linger_limits, h->budget.linger, h->budget.linger_per_addr,
                              &h->linger, err, errlen))) {
        free_http(h);
        return rc;
    }
    h->d =
        MHD_start_daemon(flags, 0, on_accept, h, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                         on_mhd_log, h, MHD_OPTION_ARRAY, where, MHD_OPTION_THREAD_POOL_SIZE,
                         threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->budget.connections,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)cfg->max_header_bytes,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->request_timeout_s,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_URI_LOG_CALLBACK,
                         on_uri, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
    if (!h->d) {
        if (tls)
            snprintf(err, errlen,
                     "cannot start HTTPS on %s: check tls_cert, tls_key (a PEM "
                     "certificate and its key) and tls_priorities, and that the address is "
                     "free",
                     cfg->listen);
        else
            snprintf(err, errlen, "cannot listen on %s (address in use, or not permitted?)",
                     cfg->listen);
        free_http(h);
        return RNND_ERR_IO;
    }
    if (cfg->sse_ping_s > 0)
        h->pinger_on = pthread_create(&h->pinger, NULL, pinger_main, h) == 0;
    if (pthread_create(&h->watch, NULL, watch_main, h)) {
        MHD_stop_daemon(h->d);
        free_http(h);
        snprintf(err, errlen, "cannot start the request deadline thread");
        return RNND_ERR_NOMEM;
    }
    h->watch_on = 1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    if (app->listen_fd >= 0) {
        if (addr.ss_family == AF_INET)
            h->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
        else if (addr.ss_family == AF_INET6)
            h->port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    }
    RNND_LOG(&app->log, RNND_LOG_INFO, "listening",
             "addr=%s port=%u http_threads=%u socket_activated=%d tls=%d", host, (unsigned)h->port,
             threads, app->listen_fd >= 0, tls);
    *out = h;
    return RNND_OK;
}

uint16_t rnnd_http_port(const rnnd_http *h) { return h->port; }

void rnnd_http_quiesce(rnnd_http *h)
{
    /* with MHD_USE_ITC this stops accepting in every pool thread; the socket becomes ours
     * to close, after MHD_stop_daemon() */
    if (h->quiesced == MHD_INVALID_SOCKET)
        h->quiesced = MHD_quiesce_daemon(h->d);
}

size_t rnnd_http_active(rnnd_http *h) { return atomic_load(&h->active); }

void rnnd_http_stop(rnnd_http *h)
{
    if (!h)
        return;
    if (h->pinger_on) {
        pthread_mutex_lock(&h->smu);
        h->pinger_stop = 1;
        pthread_cond_signal(&h->swake);
        pthread_mutex_unlock(&h->smu);
        pthread_join(h->pinger, NULL);
    }
    watch_stop(h); /* before MHD closes the connections it shuts down */
    MHD_stop_daemon(h->d);
    if (h->quiesced != MHD_INVALID_SOCKET)
        close(h->quiesced);
    free_http(h);
}
