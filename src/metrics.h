/* Counters for GET /metrics (Prometheus text format): HTTP responses by status, WebSockets,
 * and per model the batch-size histogram and step counts kept by each batcher. Counters are
 * atomics bumped on the hot path and summed only when scraped. */
#ifndef RNND_METRICS_H
#define RNND_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "rnnd/buf.h"
#include "rnnd/errcode.h"
#include "route_list.h"

#define RNND_METRICS_STATUS_MAX 600
/* the route count + 1 (route_list.h): the last row counts requests that matched no route */
#define RNND_METRICS_ROUTES (RNND_ROUTE_COUNT + 1)
#define RNND_METRICS_METHODS 6 /* GET HEAD POST PUT DELETE other */
/* The statuses rnnd_http_requests_total labels by their own code, built by rnnd_metrics_init:
 * both statuses of every error code (rnnd/errcode.h) and the RNND_METRICS_MORE_CODES others
 * of metrics.c's more_codes[] (101, the successes, 431), duplicates dropped; slot 0 counts
 * "other". */
#define RNND_METRICS_MORE_CODES 5
#define RNND_METRICS_CODES (1 + 2 * RNND_E_COUNT + RNND_METRICS_MORE_CODES)
#define RNND_METRICS_LATENCY 15 /* latency histogram buckets, +Inf included */

/* Why a WebSocket upgrade got 503 (docs/websocket.md), rnnd_websocket_upgrades_refused_total's
 * reason label */
enum rnnd_ws_refusal {
    RNND_WS_REFUSED_MAX,      /* max_websockets */
    RNND_WS_REFUSED_PER_IP,   /* max_websockets_per_ip */
    RNND_WS_REFUSED_DRAINING, /* the server is shutting down */
    RNND_WS_REFUSED_COUNT
};
/* The close codes rnnd_websocket_closes_total labels by their own code (metrics.c's
 * ws_close_codes[]), the last slot "other" */
#define RNND_METRICS_WS_CODES 9

typedef struct rnnd_metrics {
    const char *route_names[RNND_METRICS_ROUTES]; /* the endpoint labels; NULL: unused */
    unsigned codes[RNND_METRICS_CODES]; /* the code labels, ascending after codes[0] = 0 */
    size_t ncodes;                      /* of codes[] in use */
    unsigned char code_slot[RNND_METRICS_STATUS_MAX]; /* status -> index of codes; 0: other */
    atomic_uint_least64_t responses[RNND_METRICS_STATUS_MAX]; /* by HTTP status */
    /* by route (routes.c's table order), method and status; latency by route */
    atomic_uint_least64_t requests[RNND_METRICS_ROUTES][RNND_METRICS_METHODS][RNND_METRICS_CODES];
    atomic_uint_least64_t latency[RNND_METRICS_ROUTES][RNND_METRICS_LATENCY];
    atomic_uint_least64_t latency_us[RNND_METRICS_ROUTES]; /* sum, microseconds */
    atomic_uint_least64_t infer_requests, infer_sequences, infer_steps;
    atomic_uint_least64_t generations[4]; /* ended, by enum rnnd_gen_finish */
    atomic_uint_least64_t generated_tokens;
    atomic_int_least64_t generations_active;
    atomic_uint_least64_t snapshots, snapshot_failures;                     /* written, failed */
    atomic_uint_least64_t snapshot_bytes, snapshot_sessions, snapshot_usec; /* the last */
    /* WebSockets: open now (each holds a max_websockets slot), upgrades refused, sockets
     * closed by their close code (rnnd_metrics_ws_close), data messages [in, out][text,
     * binary] */
    atomic_int_least64_t ws_open;
    atomic_uint_least64_t ws_refused[RNND_WS_REFUSED_COUNT];
    atomic_uint_least64_t ws_closes[RNND_METRICS_WS_CODES];
    atomic_uint_least64_t ws_messages[2][2];
} rnnd_metrics;

/* ROUTES: the NROUTES route patterns (static strings) that label the request metrics, in
 * the order rnnd_metrics_request numbers them; beyond them one row counts "other". */
void rnnd_metrics_init(rnnd_metrics *m, const char *const *routes, size_t nroutes);
void rnnd_metrics_response(rnnd_metrics *m, unsigned status);
/* A request finished: ROUTE (< RNND_METRICS_ROUTES), METHOD (enum rnnd_method bit, or 0),
 * its STATUS (0: the client left before a reply) and its time from arrival to the end. */
void rnnd_metrics_request(rnnd_metrics *m, size_t route, int method, unsigned status,
                          double seconds);

/* A WebSocket closed with CODE (RFC 6455: the first close sent, by either side; 1006: none). */
void rnnd_metrics_ws_close(rnnd_metrics *m, int code);
/* A whole data message of a WebSocket: OUT (0: the client's, 1: ours), BINARY (0: text). */
static inline void rnnd_metrics_ws_message(rnnd_metrics *m, int out, int binary)
{
    atomic_fetch_add_explicit(&m->ws_messages[!!out][!!binary], 1, memory_order_relaxed);
}

/* What /metrics reads besides the counters: the daemon's parts, not the daemon (app.h holds
 * an rnnd_metrics, so metrics.c does not read app.h back). */
typedef struct rnnd_metrics_sources {
    const char *kernels;    /* the kernel path's name */
    struct rnnd_pool *pool; /* NULL: no compute workers */
    size_t workers;
    struct rnnd_catalog *models;
    struct rnnd_session_table *sessions;
} rnnd_metrics_sources;

/* Append M's counters and SRC's gauges in Prometheus text format 0.0.4. */
void rnnd_metrics_render(const rnnd_metrics *m, const rnnd_metrics_sources *src, rnnd_buf *out);

#endif
