/* GET /v1/sessions/{id}/ws: the opening handshake of a WebSocket session (RFC 6455 section
 * 4.2). Everything that can refuse the upgrade is decided here, as an ordinary HTTP reply,
 * before anything is upgraded: the API key (http.c, as for every route), the headers, the
 * session (404/410 as its other routes say), max_websockets and max_websockets_per_ip (503).
 * Then the reply is 101 with Sec-WebSocket-Accept, and libmicrohttpd hands the socket to
 * on_upgrade (ws_conn.c). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api.h"
#include "linger.h"
#include "rnnd/status.h"
#include "ws_internal.h"

/* ---- SHA-1 (FIPS 180-4), for Sec-WebSocket-Accept only: no secret rides on it ---------- */

static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
            (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* SHA-1 of the LEN (< 120) bytes at MSG into OUT. */
static void sha1_short(const char *msg, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    unsigned char buf[128] = {0};
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    size_t total = len + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64)
        sha1_block(h, buf + off);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[j++] = tab[v >> 18 & 63];
        out[j++] = tab[v >> 12 & 63];
        out[j++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[j++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[j] = '\0';
}

/* A client's key is 16 random bytes in base64: 22 characters and "==". */
static int key_ok(const char *k)
{
    if (!k || strlen(k) != 24 || strcmp(k + 22, "=="))
        return 0;
    for (int i = 0; i < 22; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '+' && k[i] != '/')
            return 0;
    return 1;
}

/* Whether the comma-separated header value V lists TOKEN (any case). */
static int has_token(const char *v, const char *token)
{
    size_t n = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        size_t len = strcspn(v, ",");
        size_t end = len;
        while (end && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end == n && !strncasecmp(v, token, n))
            return 1;
        v += len;
    }
    return 0;
}

/* The fields an upgrade must have at most once, which MHD's lookup gives only the first of:
 * a second Origin went unchecked (trial 32), a second key or version is ambiguous. */
static const char *const once_fields[] = {"Sec-WebSocket-Key", "Origin", "Sec-WebSocket-Version"};
#define N_ONCE (sizeof once_fields / sizeof once_fields[0])

static enum MHD_Result count_once(void *cls, enum MHD_ValueKind kind, const char *name,
                                  const char *value)
{
    (void)kind;
    (void)value;
    int *n = cls;
    for (size_t i = 0; i < N_ONCE; i++)
        if (!strcasecmp(name, once_fields[i]))
            n[i]++;
    return MHD_YES;
}

/* ---- the upgrade ------------------------------------------------------------------------- */

/* libmicrohttpd sent the 101 and hands over the socket (on one of its threads). */
static void on_upgrade(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    rnnd_ws *w = cls;
    if (con_cls) /* the upgrade request (http.c's *con_cls): its duration ends here */
        ((rnnd_req *)con_cls)->t_upgraded = rnnd_mono_s();
    atomic_fetch_add(&w->refs, 1); /* the loop's, beside the request's */
    w->fd = sock;
    w->urh = urh;
    w->t0 = rnnd_mono_s();
    int fl = fcntl(sock, F_GETFL);
    if (fl >= 0)
        fcntl(sock, F_SETFL, fl | O_NONBLOCK);
    /* a reply is one small write: Nagle would hold it for the client's delayed ACK (40 ms
     * a round trip, measured). Under TLS SOCK is one end of a socket pair (the call fails
     * harmlessly) and libmicrohttpd forwards to the client's socket, which it has just set
     * back to Nagle before the upgrade: turn it off there too (44 ms a wss round trip). */
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci && ci->connect_fd != sock)
        setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (extra_in_size && (w->extra = malloc(extra_in_size))) {
        memcpy(w->extra, extra_in, extra_in_size);
        w->extra_len = extra_in_size;
    }
    if ((extra_in_size && !w->extra) || ws_conn_start(w)) {
        RNND_LOG(&w->app->log, RNND_LOG_WARN, "ws_refused", "msg=%s",
                 "no event loop or memory for a WebSocket: closed at once");
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        ws_unref(w);
    }
}

/* The upgrade request is freed: after its socket closed, or before it was handed over (the
 * client left first). */
static void req_gone(void *arg) { ws_unref(arg); }

void rnnd_api_session_ws(rnnd_req *r)
{
    rnnd_http *h = r->http;
    const rnnd_config *cfg = h->app->cfg;
    const char *up = rnnd_req_header(r, "Upgrade");
    const char *conn = rnnd_req_header(r, "Connection");
    const char *ver = rnnd_req_header(r, "Sec-WebSocket-Version");
    const char *key = rnnd_req_header(r, "Sec-WebSocket-Key");
    if (r->method != RNND_GET || !has_token(up, "websocket") || !has_token(conn, "upgrade")) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "this route opens a WebSocket: send GET with Upgrade: websocket and "
                         "Connection: Upgrade (docs/websocket.md)");
        return;
    }
    int once[N_ONCE] = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_once, once);
    for (size_t i = 0; i < N_ONCE; i++)
        if (once[i] > 1) { /* RFC 6455 4.2.1 and RFC 6454 7.3: exactly one */
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                             "%d %s headers: an upgrade sends exactly one (RFC 6455 4.2.1)",
                             once[i], once_fields[i]);
            return;
        }
    const char *origin = rnnd_req_header(r, "Origin");
    if (origin && !http_cors_origin(r)) {
        /* browsers apply no CORS to sockets: a page of another origin would read the replies.
         * Not even "the daemon's own" origin by Host: a rebound DNS name makes any page that
         * (trial 27), and the daemon's own page opens no socket. */
        rnnd_reply_error(r, RNND_E_FORBIDDEN,
                         "Origin %.100s may not open a WebSocket: a browser's upgrade needs its "
                         "origin in cors_origins (docs/security.md)",
                         origin);
        return;
    }
    if (r->http10) { /* libmicrohttpd would drop the connection rather than send the 101 */
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "a WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.1); this request is "
                         "HTTP/1.0");
        return;
    }
    if (!ver || strcmp(ver, "13")) {
        rnnd_reply_header(r, "Sec-WebSocket-Version", "13");
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "Sec-WebSocket-Version must be 13 (RFC 6455), got %.20s",
                         ver ? ver : "none");
        return;
    }
    if (!key_ok(key)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)");
        return;
    }
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    rnnd_ws *w = calloc(1, sizeof *w);
    if (!w) {
        rnnd_session_unref(s);
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    w->h = h;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *ca = ci ? ci->client_addr : NULL;
    if (ca && (ca->sa_family == AF_INET || ca->sa_family == AF_INET6)) {
        size_t alen =
            ca->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        memcpy(&w->addr, ca, alen);
    }
    pthread_mutex_lock(&h->wsmu);
    h->ws_close_all = rnnd_ws_close_all;
    h->ws_stop_all = rnnd_ws_stop_all;
    /* one address may not hold every slot (pings keep a socket open for good) */
    size_t mine = 0;
    for (const rnnd_ws *x = h->ws_counted; x; x = x->cnext)
        mine += rnnd_same_host(&x->addr, (const struct sockaddr *)&w->addr);
    int full = h->n_ws >= (size_t)cfg->max_websockets ? 1
        : mine >= (size_t)cfg->max_websockets_per_ip  ? 2
                                                      : 0;
    if (!full) { /* the slot is this socket's until ws_unref() frees it */
        h->n_ws++;
        atomic_fetch_add_explicit(&h->app->metrics.ws_open, 1, memory_order_relaxed);
        w->cnext = h->ws_counted;
        if (h->ws_counted)
            h->ws_counted->cprev = w;
        h->ws_counted = w;
    }
    pthread_mutex_unlock(&h->wsmu);
    if (full) {
        free(w);
        rnnd_session_unref(s);
        int why = full == 1 ? RNND_WS_REFUSED_MAX : RNND_WS_REFUSED_PER_IP;
        atomic_fetch_add_explicit(&h->app->metrics.ws_refused[why], 1, memory_order_relaxed);
        if (full == 1)
            rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                             "%lld WebSockets are open (max_websockets); retry later",
                             (long long)cfg->max_websockets);
        else
            rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                             "%lld WebSockets are open from your address "
                             "(max_websockets_per_ip); close one or retry later",
                             (long long)cfg->max_websockets_per_ip);
        return;
    }
    w->app = h->app;
    w->s = s;
    w->key = r->key;
    w->fd = -1;
    snprintf(w->id, sizeof w->id, "%s", rnnd_req_param(r, 0));
    pthread_mutex_init(&w->mu, NULL);
    atomic_init(&w->refs, 1);
    rnnd_req_hold(r, req_gone, w);

    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[64], accept[32];
    unsigned char digest[20];
    int n = snprintf(in, sizeof in, "%s%s", key, guid);
    sha1_short(in, (size_t)n, digest);
    base64(digest, sizeof digest, accept);
    rnnd_reply_header(r, "Upgrade", "websocket");
    rnnd_reply_header(r, "Sec-WebSocket-Accept", accept);
    r->upgrade = on_upgrade;
    r->upgrade_arg = w;
    r->status = 101;
    r->replied = 1;
}
