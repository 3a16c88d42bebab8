/* The HTTP module's own header, shared by its parts and by no other module: http.c (routing,
 * requests, replies, start and stop), http_sse.c (streamed replies and the pinger),
 * http_log.c (the access log's path and time), http_watch.c (connection records, deadlines,
 * the address reserve), http_cors.c, http_listen.c (listen address, threads, descriptor
 * plan), http_tls.c (PEM files) and the WebSocket module (ws_internal.h), which makes
 * requests of its own and is called back through the two pointers it sets below, not by
 * name. */
#ifndef RNND_HTTP_INTERNAL_H
#define RNND_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "app.h"
#include "http.h"
#include "linger.h"

#define MAX_PARAMS 2
#define MAX_SEGMENT 128
#define MAX_HEADERS 8

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
    int watch_on, http_watch_stop;
    pthread_t watch;

    /* open WebSockets (ws_internal.h), for max_websockets and for closing them at shutdown; lock
     * order: wsmu, then a socket's own mutex */
    pthread_mutex_t wsmu;
    pthread_cond_t ws_cond; /* a socket ended */
    struct rnnd_ws *ws_list;
    /* every socket counted in N_WS, for max_websockets_per_ip */
    struct rnnd_ws *ws_counted;
    size_t n_ws;              /* sockets, counted from the 101 until freed: max_websockets */
    size_t ws_open;           /* sockets not yet ended (handed back to MHD) */
    struct ws_loop *ws_loops; /* the event loops that serve them (ws_loop.c) */
    size_t n_ws_loops, ws_next_loop;
    int ws_loops_ended;                 /* rnnd_ws_stop_all ended their threads */
    void (*ws_free)(rnnd_http *h);      /* set with the loops: free them (free_http) */
    void (*ws_close_all)(rnnd_http *h); /* set with the first socket: close them all (1001) */
    void (*ws_stop_all)(rnnd_http *h);  /* ... and wait for their threads */

    /* the one reply that needs no allocation (rnnd_errcode_oom_json): MHD's persistent buffer */
    char oom_body[RNND_ERRCODE_OOM_CAP];
    size_t oom_len;
};

/* One connection, from accept to close (libmicrohttpd's socket context). */
struct conn_rec {
    int fd; /* valid until http_on_connection(CLOSED) unlinks the record */
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
    /* a WebSocket's request reads the stream instead of a connection (ws_bridge.c): WAKE is
     * called, with mu held, whenever there is something to read */
    void (*wake)(void *arg);
    void *wake_arg;
};

/* rnnd_req's flags. F_GONE: a WebSocket's request whose socket closed (rnnd_req_gone). */
enum { F_DONE = 1, F_SUSPENDED = 2, F_GONE = 4 };

struct rnnd_req {
    rnnd_http *http;
    struct MHD_Connection *conn;
    const rnnd_route *route;
    rnnd_handler handler;
    int method;
    char method_name[8];
    int http10; /* the request line says HTTP/1.0 (a WebSocket upgrade needs 1.1) */
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
    /* when libmicrohttpd handed over an upgraded socket (its 101 sent), or 0: the request's
     * duration ends there, not when the socket closes */
    double t_upgraded;

    const rnnd_key *key;        /* the caller's API key; NULL when keys are off */
    rnnd_stream *stream;        /* attached: the reply is this stream (one reference) */
    void (*release[2])(void *); /* rnnd_req_hold() */
    void *held[2];
    char stream_type[64];

    /* the reply is 101 Switching Protocols, then UPGRADE gets the socket (ws_handshake.c) */
    MHD_UpgradeHandler upgrade;
    void *upgrade_arg;
    /* a request a WebSocket made (ws_bridge.c): no connection; rnnd_req_complete() calls
     * VDONE instead of resuming one. BINARY: the socket wants a binary reply (ws_codec.h) */
    void (*vdone)(rnnd_req *r);
    void *varg;
    int binary;
};

/* ---- http_log.c ---- */
/* R's path for a log line, session ids and id-shaped segments replaced (quoted). */
const char *http_log_path(const rnnd_req *r, char *out, size_t n);
/* Milliseconds since T0 (monotonic seconds). */
double http_elapsed_ms(double t0);

/* ---- http.c, for the parts ---- */
/* Free R and everything it holds (its on_free function and held objects first). */
void http_req_free(rnnd_http *h, rnnd_req *r);

/* ---- http_sse.c ---- */
/* Queue R's attached stream as its reply (200, chunked) and link it for the pinger. */
enum MHD_Result http_send_stream(rnnd_req *r);
/* The connection stopped using ST (sent, or the client left). */
void http_stream_detach(rnnd_stream *st);
/* Start the pinger thread when sse_ping_s is set; stop and join it (a no-op when off). */
void http_pinger_start(rnnd_http *h);
void http_pinger_stop(rnnd_http *h);

/* ---- http_watch.c ---- */
/* CONN's record (libmicrohttpd's socket context), or NULL when it is not watched. */
struct conn_rec *http_conn_rec_of(struct MHD_Connection *conn);
/* A request on CONN starts arriving (READING 1) or has arrived (0); BODY bytes more of it. */
void http_conn_progress(rnnd_http *h, struct MHD_Connection *conn, int reading, size_t body);
/* libmicrohttpd's connection notification and accept policy callbacks (CLS is H). */
void http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe);
enum MHD_Result http_on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);
/* Start the deadline thread (0, or -1 when it cannot); stop and join it. */
int http_watch_start(rnnd_http *h);
void http_watch_stop(rnnd_http *h);

/* ---- http_cors.c ---- */
/* R's Origin when cors_origins allows it (http.c sets the headers that say so), else NULL. */
const char *http_cors_origin(const rnnd_req *r);

/* ---- http_listen.c ---- */
/* "HOST:PORT" or "[V6]:PORT" into ADDR, the host part into HOST. */
int http_parse_listen(const char *spec, struct sockaddr_storage *addr, socklen_t *alen, char *host,
                      size_t hostlen, char *err, size_t errlen);
/* http_threads, 0 resolved. */
unsigned http_request_threads(const rnnd_config *cfg);
/* Fit max_connections and the lingering sockets under RLIMIT_NOFILE into H->budget. */
int http_plan_descriptors(rnnd_http *h, unsigned threads, char *err, size_t errlen);

/* ---- http_tls.c ---- */
/* The whole of PATH as a NUL-terminated string (PEM), or NULL with ERR. */
char *http_read_pem(const char *what, const char *path, char *err, size_t errlen);
/* Wipe and free a secret (NULL is a no-op). */
void http_free_secret(char *s);

#endif
