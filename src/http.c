/* libmicrohttpd glue: routing, per-request state, body limits, replies, suspend/resume, and
 * start and stop (see http.h; its other parts are listed in http_internal.h). */
#include "config.h"
#include "http_internal.h"

#include <arpa/inet.h>
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
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "frontdoor.h"
#include "linger.h"
#include "pool.h"
#include "rng.h"
#include "rnnd/infer.h"
#include "rnnd/json_depth.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"

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

void rnnd_reply(rnnd_req *r, unsigned status, rnnd_buf *body)
{
    if (rnnd_buf_failed(body)) {
        rnnd_buf_free(body);
        set_reply(r, 503, NULL, 0); /* data NULL: h->oom_body is sent */
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

/* Every error reply: Retry-After where the client should come back, then the message FMT/AP
 * in the v1 shape or (V2) Triton's {"error": MESSAGE}. One formatting for both front ends. */
static void reply_error_v(rnnd_req *r, enum rnnd_errcode code, unsigned status, int v2,
                          const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
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
    /* A path that matched no route is judged by its prefix: a v2 client still gets v2's shape
     * (with the v1 status: these refusals come before any v2 handler runs) */
    int v2 = r->route ? (r->route->flags & RT_V2) != 0
                      : !strncmp(r->path, "/v2", 3) && (!r->path[3] || r->path[3] == '/');
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, code, rnnd_errcode_http(code), v2, fmt, ap);
    va_end(ap);
}

void rnnd_v2_error(rnnd_req *r, enum rnnd_errcode code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, code, rnnd_errcode_v2(code), 1, fmt, ap);
    va_end(ap);
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

void rnnd_req_drop_body(rnnd_req *r)
{
    json_decref(r->json);
    r->json = NULL;
}
rnnd_memhold *rnnd_req_mem(rnnd_req *r) { return &r->mem; }
rnnd_app *rnnd_req_app(const rnnd_req *r) { return r->http->app; }

const char *rnnd_req_query(rnnd_req *r, const char *key)
{
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key) : NULL;
}

int rnnd_req_binary(const rnnd_req *r) { return r->binary; }

void rnnd_req_on_free(rnnd_req *r, void (*fn)(void *), void *arg)
{
    r->on_free = fn;
    r->on_free_arg = arg;
}

int rnnd_req_gone(rnnd_req *r)
{
    if (!r->conn) /* a WebSocket's: gone once its socket closed (ws_bridge_cancel) */
        return (atomic_load(&r->flags) & F_GONE) != 0;
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

static void resume_conn(void *conn) { MHD_resume_connection(conn); }

void rnnd_req_complete(rnnd_req *r)
{
    if (r->vdone) {
        r->vdone(r);
        return;
    }
    struct MHD_Connection *conn = r->conn;
    /* Whoever comes second of (this, the request thread parking the connection) resumes it;
     * after the exchange R may be freed at any moment. A worker finishing a batcher round
     * resumes its connections together at the round's end (rnnd_defer): a parked connection
     * stays until resumed, so CONN is still valid then. */
    if (atomic_fetch_or(&r->flags, F_DONE) & F_SUSPENDED) {
        if (rnnd_defer(resume_conn, conn))
            MHD_resume_connection(conn);
    }
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

/* Whether a Content-Encoding header's value is only "identity" (or empty, with spaces). */
static int is_identity(const char *ce)
{
    static const char id[] = "identity";
    while (*ce == ' ' || *ce == '\t')
        ce++;
    if (!strncasecmp(ce, id, sizeof id - 1))
        ce += sizeof id - 1;
    while (*ce == ' ' || *ce == '\t')
        ce++;
    return !*ce;
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
/* URL in origin form: an absolute-form target ("http://host:port/path", RFC 9112 3.2.2,
 * which a server must accept) is routed on its path; the authority is not checked, as Host
 * is not. */
static const char *origin_form(const char *url)
{
    size_t skip = !strncasecmp(url, "http://", 7) ? 7 : !strncasecmp(url, "https://", 8) ? 8 : 0;
    if (!skip)
        return url;
    const char *path = strchr(url + skip, '/');
    return path ? path : "/";
}

static int begin(rnnd_req *r, const char *url, const char *method, const char *version)
{
    rnnd_app *app = r->http->app;
    url = origin_form(url);
    snprintf(r->path, sizeof r->path, "%s", url);
    r->method = parse_method(method);
    r->http10 = !strcmp(version, MHD_HTTP_VERSION_1_0);
    snprintf(r->method_name, sizeof r->method_name, "%s", r->method ? method : "other");
    struct conn_rec *c = http_conn_rec_of(r->conn);
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
    /* CORS: a browser's request from an allowed origin may read the reply */
    const char *origin = http_cors_origin(r);
    int cors = origin != NULL;
    if (cors) {
        rnnd_reply_header(r, "Access-Control-Allow-Origin", origin);
        rnnd_reply_header(r, "Vary", "Origin");
        rnnd_reply_header(r, "Access-Control-Expose-Headers", "Location, Retry-After");
    }
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
        /* by its pattern: http.c knows no handler (api.h includes http.h) */
        if (r->route && !strcmp(r->route->pattern, "/v1/sessions/*/ws") &&
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Upgrade"))
            atomic_fetch_add_explicit(&app->metrics.ws_refused[RNND_WS_REFUSED_DRAINING], 1,
                                      memory_order_relaxed);
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
        /* compressed bodies (tritonclient's request_compression_algorithm) are not decoded:
         * say so, rather than let the JSON decoder stumble on their first byte */
        const char *ce =
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
        if (ce && !is_identity(ce)) {
            rnnd_reply_error(r, RNND_E_UNSUPPORTED_MEDIA_TYPE,
                             "Content-Encoding %.40s is not supported: send the request body "
                             "uncompressed",
                             ce);
            return chunked;
        }
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
/* Decode the first N bytes of the body. KEEP: the body stays (the bytes after N are a binary
 * part its handler reads), else it goes once decoded. */
static int decode_body_n(rnnd_req *r, size_t n, int keep)
{
    rnnd_app *app = r->http->app;
    if (rnnd_json_depth_check(r->body, n, app->cfg->max_json_depth) != 0) {
        rnnd_reply_error(r, RNND_E_INVALID_JSON, "JSON nested deeper than max_json_depth (%lld)",
                         (long long)app->cfg->max_json_depth);
        return -1;
    }
    /* the body was charged as it arrived (receive); what it decodes to is charged as it is
     * built (membudget.h) */
    char err[256];
    size_t body_bytes = r->cap;
    int rc = rnnd_mem_json_load(&r->mem, r->body, n, &r->json, err, sizeof err);
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
    if (keep)
        return 0;
    free(r->body); /* the decoded form is all handlers need */
    r->body = NULL;
    r->cap = 0;
    rnnd_mem_uncharge(&r->mem, body_bytes);
    return 0;
}

static int decode_body(rnnd_req *r) { return decode_body_n(r, r->len, 0); }

int rnnd_req_decode(rnnd_req *r) { return r->len && r->body && !r->json ? decode_body(r) : 0; }

int rnnd_req_decode_head(rnnd_req *r, size_t n, const char **tail, size_t *tail_len)
{
    *tail = NULL;
    *tail_len = 0;
    if (!r->body || r->json || n > r->len || !n) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the JSON header length (%zu) must be from 1 to the body's %zu bytes", n,
                         r->body && !r->json ? r->len : 0);
        return -1;
    }
    if (decode_body_n(r, n, 1))
        return -1;
    *tail = r->body + n;
    *tail_len = r->len - n;
    return 0;
}

const char *rnnd_req_header(rnnd_req *r, const char *name)
{
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

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
    if ((r->route->flags & RT_ADMIN) && !rnnd_req_admin(r)) {
        rnnd_reply_error(r, RNND_E_FORBIDDEN, "%s needs a key of scope admin", r->route->pattern);
        return;
    }
    r->handler(r);
    if (!r->deferred && !r->replied && !r->stream)
        rnnd_reply_error(r, RNND_E_INTERNAL, "the handler gave no reply");
}

static enum MHD_Result send_reply(rnnd_req *r)
{
    struct MHD_Response *resp;
    if (r->upgrade && r->status == 101) {
        resp = MHD_create_response_for_upgrade(r->upgrade, r->upgrade_arg);
        r->upgrade = NULL; /* the handler now runs when MHD hands over the socket */
    } else if (r->data) {
        resp = MHD_create_response_from_buffer(r->dlen, r->data, MHD_RESPMEM_MUST_FREE);
        if (resp)
            r->data = NULL;
    } else {
        r->status = 503;
        resp = MHD_create_response_from_buffer(r->http->oom_len, r->http->oom_body,
                                               MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        return MHD_NO;
    int typed = 0, closes = 0, cached = 0;
    for (int i = 0; i < r->nheaders; i++) {
        typed |= !strcasecmp(r->hname[i], MHD_HTTP_HEADER_CONTENT_TYPE);
        closes |= !strcasecmp(r->hname[i], MHD_HTTP_HEADER_CONNECTION);
        cached |= !strcasecmp(r->hname[i], MHD_HTTP_HEADER_CACHE_CONTROL);
    }
    if (r->status != 204 && r->status != 304 && r->status != 101 && !typed)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if ((r->early || r->closing) && !closes) /* the body is not read to its end */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    /* API answers are never cached; the web page's files say how they are (api_web.c) */
    if (!cached)
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
             http_log_path(r, lp, sizeof lp), r->status, http_elapsed_ms(r->t0));
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    rnnd_http *h = cls;
    rnnd_req *r = *con_cls;
    if (!r) {
        struct conn_rec *c = http_conn_rec_of(conn);
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
        http_conn_progress(h, conn, 1, *upload_data_size);
        int cut = receive(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return cut ? MHD_NO : MHD_YES;
    }
    http_conn_progress(h, conn, 0, 0); /* the whole request is in: no deadline while answering */
    if (!r->deferred && !r->stream && !r->closing)
        check_trailers(r);
    if (!r->replied && !r->deferred)
        dispatch(r);
    if (r->stream && !r->replied)
        return http_send_stream(r);
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
    double secs = r->t_upgraded > 0 ? r->t_upgraded - r->t0 : http_elapsed_ms(r->t0) / 1e3;
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
    http_conn_progress(h, conn, 1, 0); /* the next request's deadline runs from here */
    if (r->early && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        linger(h, conn);
    account(h, r, toe);
    http_req_free(h, r);
}

void http_req_free(rnnd_http *h, rnnd_req *r)
{
    if (r->stream) {
        http_stream_detach(r->stream);
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
    struct conn_rec *c = http_conn_rec_of(conn);
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

/* What rnnd_http_start made besides the libmicrohttpd daemon, which is stopped already. */
static void free_http(rnnd_http *h)
{
    if (h->ws_free)
        h->ws_free(h);           /* the WebSockets' loops, whose threads have ended */
    rnnd_linger_free(h->linger); /* after the daemon: closing connections hand it sockets */
    free(h->tls_cert);
    http_free_secret(h->tls_key);
    pthread_cond_destroy(&h->swake);
    pthread_mutex_destroy(&h->smu);
    pthread_cond_destroy(&h->cwake);
    pthread_mutex_destroy(&h->cmu);
    pthread_mutex_destroy(&h->wsmu);
    pthread_cond_destroy(&h->ws_cond);
    rnnd_log_limit_destroy(&h->loglimit);
    free(h);
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
    } else if ((rc =
                    http_parse_listen(cfg->listen, &addr, &alen, host, sizeof host, err, errlen))) {
        return rc;
    }
    unsigned threads = http_request_threads(cfg);
    rnnd_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    h->app = app;
    h->routes = routes;
    h->n_routes = n_routes;
    h->oom_len = rnnd_errcode_oom_json(h->oom_body, sizeof h->oom_body);
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
    pthread_mutex_init(&h->wsmu, NULL);
    pthread_cond_init(&h->ws_cond, NULL);
    rnnd_log_limit_init(&h->loglimit);
    /* poll(), not epoll: libmicrohttpd 0.9.75's MHD_quiesce_daemon() on an epoll thread pool
     * races with the pool's threads over removing the listening socket and aborts the
     * process when it loses (tests/test_shutdown_race.py); on poll() quiescing is a wake-up */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
        MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
    int tls = *cfg->tls_cert != '\0';
    if (tls) {
        int bad = RNND_OK;
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "tls_cert: this libmicrohttpd was built without TLS");
            bad = RNND_ERR_UNSUPPORTED;
        } else if (!(h->tls_cert = http_read_pem("tls_cert", cfg->tls_cert, err, errlen)) ||
                   !(h->tls_key = http_read_pem("tls_key", cfg->tls_key, err, errlen))) {
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
    if ((rc = http_plan_descriptors(h, threads, err, errlen)) ||
        (rc = rnnd_linger_new(&h->linger_limits, h->budget.linger, h->budget.linger_per_addr,
                              &h->linger, err, errlen))) {
        free_http(h);
        return rc;
    }
    h->d =
        MHD_start_daemon(flags, 0, http_on_accept, h, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                         on_mhd_log, h, MHD_OPTION_ARRAY, where, MHD_OPTION_THREAD_POOL_SIZE,
                         threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->budget.connections,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)cfg->max_header_bytes,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->request_timeout_s,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_URI_LOG_CALLBACK,
                         on_uri, h, MHD_OPTION_NOTIFY_CONNECTION, http_on_connection, h,
                         MHD_OPTION_END);
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
    http_pinger_start(h);
    if (http_watch_start(h)) {
        MHD_stop_daemon(h->d);
        free_http(h);
        snprintf(err, errlen, "cannot start the request deadline thread");
        return RNND_ERR_NOMEM;
    }
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

/* The WebSockets' close (0) or stop (1), set by the first socket (ws_internal.h); none
 * without a socket ever opened. */
static void ws_hook(rnnd_http *h, int stop)
{
    pthread_mutex_lock(&h->wsmu);
    void (*fn)(rnnd_http *) = stop ? h->ws_stop_all : h->ws_close_all;
    pthread_mutex_unlock(&h->wsmu);
    if (fn)
        fn(h);
}

void rnnd_http_quiesce(rnnd_http *h)
{
    /* with MHD_USE_ITC this stops accepting in every pool thread; the socket becomes ours
     * to close, after MHD_stop_daemon() */
    if (h->quiesced == MHD_INVALID_SOCKET)
        h->quiesced = MHD_quiesce_daemon(h->d);
    ws_hook(h, 0); /* their requests finish, then they close (1001) */
}

size_t rnnd_http_active(rnnd_http *h) { return atomic_load(&h->active); }

void rnnd_http_stop(rnnd_http *h)
{
    if (!h)
        return;
    http_pinger_stop(h);
    http_watch_stop(h); /* before MHD closes the connections it shuts down */
    ws_hook(h, 1);      /* MHD must not stop with an upgraded socket still open */
    MHD_stop_daemon(h->d);
    if (h->quiesced != MHD_INVALID_SOCKET)
        close(h->quiesced);
    free_http(h);
}
