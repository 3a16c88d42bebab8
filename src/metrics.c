/* Prometheus text for GET /metrics. */
#include "config.h"
#include "metrics.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "batcher.h"
#include "pool.h"
#include "registry.h"
#include "session.h"

/* The statuses the daemon answers besides its error codes' (the switch to a WebSocket, the
 * successes, and 431 for a head too large) */
static const unsigned more_codes[] = {101, 200, 201, 204, 431};
_Static_assert(sizeof more_codes / sizeof more_codes[0] == RNND_METRICS_MORE_CODES,
               "RNND_METRICS_MORE_CODES counts more_codes[]");
_Static_assert(RNND_METRICS_CODES <= UCHAR_MAX + 1, "code_slot[] holds an index of codes[]");
/* The close codes counted by their own label: the daemon's (docs/websocket.md) and a
 * client's normal one; any other (1006: the connection ended with no close) is "other" */
static const int ws_close_codes[RNND_METRICS_WS_CODES - 1] = {1000, 1001, 1002, 1003,
                                                              1007, 1008, 1009, 1011};
static const char *const ws_refusals[RNND_WS_REFUSED_COUNT] = {"max_websockets",
                                                               "max_websockets_per_ip", "draining"};
static const double latency_le[RNND_METRICS_LATENCY - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                            0.025,  0.05,  0.1,    0.25,  0.5,
                                                            1,      2.5,   5,      10};
static const char *const method_names[RNND_METRICS_METHODS] = {"GET", "HEAD",   "POST",
                                                               "PUT", "DELETE", "other"};

/* Put STATUS among M's code labels, in ascending order, unless it is there already. */
static void add_code(rnnd_metrics *m, unsigned status)
{
    size_t i = 1;
    while (i < m->ncodes && m->codes[i] < status)
        i++;
    if (i < m->ncodes && m->codes[i] == status)
        return;
    for (size_t j = m->ncodes; j > i; j--)
        m->codes[j] = m->codes[j - 1];
    m->codes[i] = status;
    m->ncodes++;
}

void rnnd_metrics_init(rnnd_metrics *m, const char *const *routes, size_t nroutes)
{
    /* the code labels: every status an error code answers with, so that a code added to
     * RNND_ERRCODES is counted under its status, not under "other" */
    m->codes[0] = 0;
    m->ncodes = 1;
    for (int e = 0; e < RNND_E_COUNT; e++) {
        add_code(m, rnnd_errcode_http((enum rnnd_errcode)e));
        add_code(m, rnnd_errcode_v2((enum rnnd_errcode)e));
    }
    for (size_t i = 0; i < RNND_METRICS_MORE_CODES; i++)
        add_code(m, more_codes[i]);
    memset(m->code_slot, 0, sizeof m->code_slot);
    for (size_t c = 1; c < m->ncodes; c++)
        if (m->codes[c] < RNND_METRICS_STATUS_MAX)
            m->code_slot[m->codes[c]] = (unsigned char)c;
    for (size_t r = 0; r < RNND_METRICS_ROUTES; r++)
        m->route_names[r] = r < nroutes && r + 1 < RNND_METRICS_ROUTES ? routes[r] : NULL;
    m->route_names[RNND_METRICS_ROUTES - 1] = "other";
    for (int i = 0; i < RNND_METRICS_STATUS_MAX; i++)
        atomic_init(&m->responses[i], 0);
    atomic_init(&m->infer_requests, 0);
    atomic_init(&m->infer_sequences, 0);
    atomic_init(&m->infer_steps, 0);
}

void rnnd_metrics_response(rnnd_metrics *m, unsigned status)
{
    if (status < RNND_METRICS_STATUS_MAX)
        atomic_fetch_add_explicit(&m->responses[status], 1, memory_order_relaxed);
}

void rnnd_metrics_ws_close(rnnd_metrics *m, int code)
{
    size_t i = 0;
    while (i < RNND_METRICS_WS_CODES - 1 && ws_close_codes[i] != code)
        i++;
    atomic_fetch_add_explicit(&m->ws_closes[i], 1, memory_order_relaxed);
}

static size_t method_index(int method)
{
    for (size_t i = 0; i < RNND_METRICS_METHODS - 1; i++)
        if (method == 1 << i)
            return i;
    return RNND_METRICS_METHODS - 1;
}

void rnnd_metrics_request(rnnd_metrics *m, size_t route, int method, unsigned status,
                          double seconds)
{
    if (route >= RNND_METRICS_ROUTES)
        route = RNND_METRICS_ROUTES - 1;
    /* 0: "other", a status outside the list or the client left first (status 0) */
    size_t c = status < RNND_METRICS_STATUS_MAX ? m->code_slot[status] : 0;
    atomic_fetch_add_explicit(&m->requests[route][method_index(method)][c], 1,
                              memory_order_relaxed);
    size_t b = 0;
    while (b < RNND_METRICS_LATENCY - 1 && seconds > latency_le[b])
        b++;
    atomic_fetch_add_explicit(&m->latency[route][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_us[route], (uint64_t)(seconds * 1e6),
                              memory_order_relaxed);
}

static void http_metrics(const rnnd_metrics *m, rnnd_buf *out)
{
    rnnd_buf_puts(out,
                  "# HELP rnnd_http_requests_total HTTP requests finished, by endpoint "
                  "(route pattern), method and status (other: any other status or the "
                  "client left first).\n"
                  "# TYPE rnnd_http_requests_total counter\n");
    for (size_t r = 0; r < RNND_METRICS_ROUTES; r++) {
        const char *name = m->route_names[r];
        if (!name)
            continue;
        for (size_t k = 0; k < RNND_METRICS_METHODS; k++)
            for (size_t c = 0; c < m->ncodes; c++) {
                uint64_t n = atomic_load(&m->requests[r][k][c]);
                if (!n)
                    continue;
                char code[16];
                if (m->codes[c])
                    snprintf(code, sizeof code, "%u", m->codes[c]);
                else
                    snprintf(code, sizeof code, "other");
                rnnd_buf_printf(out,
                                "rnnd_http_requests_total{endpoint=\"%s\",method=\"%s\","
                                "code=\"%s\"} %llu\n",
                                name, method_names[k], code, (unsigned long long)n);
            }
    }
    rnnd_buf_puts(out,
                  "# HELP rnnd_http_request_duration_seconds Time from a request's "
                  "arrival to the end of its reply, by endpoint.\n"
                  "# TYPE rnnd_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < RNND_METRICS_ROUTES; r++) {
        const char *name = m->route_names[r];
        uint64_t cum = 0, counts[RNND_METRICS_LATENCY];
        for (size_t b = 0; b < RNND_METRICS_LATENCY; b++)
            cum += counts[b] = atomic_load(&m->latency[r][b]);
        if (!name || !cum)
            continue;
        cum = 0;
        for (size_t b = 0; b < RNND_METRICS_LATENCY; b++) {
            cum += counts[b];
            char le[16];
            if (b + 1 < RNND_METRICS_LATENCY)
                snprintf(le, sizeof le, "%g", latency_le[b]);
            else
                snprintf(le, sizeof le, "+Inf");
            rnnd_buf_printf(out,
                            "rnnd_http_request_duration_seconds_bucket{endpoint=\"%s\","
                            "le=\"%s\"} %llu\n",
                            name, le, (unsigned long long)cum);
        }
        rnnd_buf_printf(out,
                        "rnnd_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n"
                        "rnnd_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
                        name, atomic_load(&m->latency_us[r]) / 1e6, name, (unsigned long long)cum);
    }
}

static void ws_metrics(const rnnd_metrics *m, rnnd_buf *out)
{
    rnnd_buf_printf(out,
                    "# HELP rnnd_websockets_open WebSockets open (each holds a "
                    "max_websockets slot).\n"
                    "# TYPE rnnd_websockets_open gauge\n"
                    "rnnd_websockets_open %lld\n"
                    "# HELP rnnd_websocket_upgrades_refused_total WebSocket upgrades "
                    "answered 503, by reason.\n"
                    "# TYPE rnnd_websocket_upgrades_refused_total counter\n",
                    (long long)atomic_load(&m->ws_open));
    for (size_t i = 0; i < RNND_WS_REFUSED_COUNT; i++)
        rnnd_buf_printf(out, "rnnd_websocket_upgrades_refused_total{reason=\"%s\"} %llu\n",
                        ws_refusals[i], (unsigned long long)atomic_load(&m->ws_refused[i]));
    rnnd_buf_puts(out,
                  "# HELP rnnd_websocket_closes_total WebSockets closed, by the code of the "
                  "first close frame, either side's (other: any other code, or none).\n"
                  "# TYPE rnnd_websocket_closes_total counter\n");
    for (size_t i = 0; i < RNND_METRICS_WS_CODES; i++) {
        char code[16];
        if (i + 1 < RNND_METRICS_WS_CODES)
            snprintf(code, sizeof code, "%d", ws_close_codes[i]);
        else
            snprintf(code, sizeof code, "other");
        rnnd_buf_printf(out, "rnnd_websocket_closes_total{code=\"%s\"} %llu\n", code,
                        (unsigned long long)atomic_load(&m->ws_closes[i]));
    }
    rnnd_buf_puts(out,
                  "# HELP rnnd_websocket_messages_total WebSocket data messages, by "
                  "direction (in: the clients') and kind.\n"
                  "# TYPE rnnd_websocket_messages_total counter\n");
    static const char *const way[2] = {"in", "out"}, *const kind[2] = {"text", "binary"};
    for (size_t d = 0; d < 2; d++)
        for (size_t k = 0; k < 2; k++)
            rnnd_buf_printf(out,
                            "rnnd_websocket_messages_total{direction=\"%s\",kind=\"%s\"} "
                            "%llu\n",
                            way[d], kind[k],
                            (unsigned long long)atomic_load(&m->ws_messages[d][k]));
}

static void batch_histogram(rnnd_buf *out, const char *model, const rnnd_batcher *b)
{
    size_t max = rnnd_batcher_max_batch(b);
    uint64_t cum = 0, sum = 0;
    size_t le = 1;
    for (size_t k = 1; k <= max; k++) {
        uint64_t n = rnnd_batcher_hist(b, k);
        cum += n;
        sum += n * k;
        /* buckets at powers of two and at max_batch */
        if (k == le || k == max) {
            rnnd_buf_printf(out, "rnnd_batch_size_bucket{model=\"%s\",le=\"%zu\"} %llu\n", model, k,
                            (unsigned long long)cum);
            while (le <= k)
                le *= 2;
        }
    }
    rnnd_buf_printf(out, "rnnd_batch_size_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", model,
                    (unsigned long long)cum);
    rnnd_buf_printf(out, "rnnd_batch_size_sum{model=\"%s\"} %llu\n", model,
                    (unsigned long long)sum);
    rnnd_buf_printf(out, "rnnd_batch_size_count{model=\"%s\"} %llu\n", model,
                    (unsigned long long)cum);
}

static void infer_histogram(rnnd_buf *out, const char *model, const rnnd_batcher *b)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < RNND_INFER_HIST_BUCKETS; i++) {
        cum += rnnd_batcher_infer_hist(b, i);
        if (i + 1 < RNND_INFER_HIST_BUCKETS)
            rnnd_buf_printf(out,
                            "rnnd_infer_batch_requests_bucket{model=\"%s\",le=\"%zu\"} "
                            "%llu\n",
                            model, (size_t)1 << i, (unsigned long long)cum);
    }
    rnnd_buf_printf(out, "rnnd_infer_batch_requests_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", model,
                    (unsigned long long)cum);
    rnnd_buf_printf(out, "rnnd_infer_batch_requests_sum{model=\"%s\"} %llu\n", model,
                    (unsigned long long)rnnd_batcher_infer_requests(b));
    rnnd_buf_printf(out, "rnnd_infer_batch_requests_count{model=\"%s\"} %llu\n", model,
                    (unsigned long long)rnnd_batcher_infer_rounds(b));
}

void rnnd_metrics_render(const rnnd_metrics *m, const rnnd_metrics_sources *src, rnnd_buf *out)
{
    rnnd_buf_puts(out,
                  "# HELP rnnd_http_responses_total HTTP responses sent, by status.\n"
                  "# TYPE rnnd_http_responses_total counter\n");
    for (unsigned s = 100; s < RNND_METRICS_STATUS_MAX; s++) {
        uint64_t n = atomic_load_explicit(&m->responses[s], memory_order_relaxed);
        if (n)
            rnnd_buf_printf(out, "rnnd_http_responses_total{code=\"%u\"} %llu\n", s,
                            (unsigned long long)n);
    }
    http_metrics(m, out);
    ws_metrics(m, out);
    rnnd_buf_printf(out,
                    "# HELP rnnd_build_info The running build.\n"
                    "# TYPE rnnd_build_info gauge\n"
                    "rnnd_build_info{version=\"%s\",kernels=\"%s\"} 1\n",
                    PACKAGE_VERSION, src->kernels ? src->kernels : "");
    if (src->pool)
        rnnd_buf_printf(out,
                        "# HELP rnnd_worker_busy_seconds_total Time the compute workers "
                        "spent computing, all workers together.\n"
                        "# TYPE rnnd_worker_busy_seconds_total counter\n"
                        "rnnd_worker_busy_seconds_total %.6f\n"
                        "# HELP rnnd_workers Compute workers.\n"
                        "# TYPE rnnd_workers gauge\n"
                        "rnnd_workers %zu\n",
                        rnnd_pool_busy_seconds(src->pool), src->workers);
    rnnd_buf_puts(out,
                  "# HELP rnnd_batch_size Sessions advanced together per batched step.\n"
                  "# TYPE rnnd_batch_size histogram\n");
    rnnd_registry set;
    if (rnnd_catalog_copy(src->models, &set))
        set.n = 0;
    for (size_t i = 0; i < set.n; i++)
        batch_histogram(out, set.entries[i]->name, set.entries[i]->batcher);
    rnnd_buf_puts(out,
                  "# HELP rnnd_session_steps_total Session steps computed.\n"
                  "# TYPE rnnd_session_steps_total counter\n");
    for (size_t i = 0; i < set.n; i++)
        rnnd_buf_printf(out, "rnnd_session_steps_total{model=\"%s\"} %llu\n", set.entries[i]->name,
                        (unsigned long long)rnnd_batcher_steps(set.entries[i]->batcher));
    rnnd_buf_puts(out,
                  "# HELP rnnd_session_scan_steps_total Session steps computed as whole "
                  "sequences (long requests of minGRU/minLSTM models).\n"
                  "# TYPE rnnd_session_scan_steps_total counter\n");
    for (size_t i = 0; i < set.n; i++)
        rnnd_buf_printf(out, "rnnd_session_scan_steps_total{model=\"%s\"} %llu\n",
                        set.entries[i]->name,
                        (unsigned long long)rnnd_batcher_scan_steps(set.entries[i]->batcher));
    rnnd_buf_printf(out,
                    "# HELP rnnd_infer_requests_total Whole-sequence infer requests run.\n"
                    "# TYPE rnnd_infer_requests_total counter\n"
                    "rnnd_infer_requests_total %llu\n"
                    "# HELP rnnd_infer_steps_total Steps of whole-sequence infer requests.\n"
                    "# TYPE rnnd_infer_steps_total counter\n"
                    "rnnd_infer_steps_total %llu\n",
                    (unsigned long long)atomic_load(&m->infer_requests),
                    (unsigned long long)atomic_load(&m->infer_steps));
    rnnd_buf_puts(out,
                  "# HELP rnnd_infer_batch_requests Infer requests run together per call.\n"
                  "# TYPE rnnd_infer_batch_requests histogram\n");
    for (size_t i = 0; i < set.n; i++)
        infer_histogram(out, set.entries[i]->name, set.entries[i]->batcher);
    rnnd_buf_puts(out,
                  "# HELP rnnd_split_rounds_total Step rounds split over several "
                  "workers.\n"
                  "# TYPE rnnd_split_rounds_total counter\n");
    for (size_t i = 0; i < set.n; i++)
        rnnd_buf_printf(out, "rnnd_split_rounds_total{model=\"%s\"} %llu\n", set.entries[i]->name,
                        (unsigned long long)rnnd_batcher_split_rounds(set.entries[i]->batcher));
    rnnd_buf_puts(out,
                  "# HELP rnnd_split_helped_total Work items of split rounds run by "
                  "helping workers.\n"
                  "# TYPE rnnd_split_helped_total counter\n");
    for (size_t i = 0; i < set.n; i++)
        rnnd_buf_printf(out, "rnnd_split_helped_total{model=\"%s\"} %llu\n", set.entries[i]->name,
                        (unsigned long long)rnnd_batcher_split_helped(set.entries[i]->batcher));
    rnnd_buf_puts(out,
                  "# HELP rnnd_queue_depth Work waiting for a worker: sessions waiting for "
                  "a step round, infer requests waiting.\n"
                  "# TYPE rnnd_queue_depth gauge\n");
    for (size_t i = 0; i < set.n; i++) {
        size_t steps, infers;
        rnnd_batcher_queued(set.entries[i]->batcher, &steps, &infers);
        rnnd_buf_printf(out,
                        "rnnd_queue_depth{model=\"%s\",kind=\"step\"} %zu\n"
                        "rnnd_queue_depth{model=\"%s\",kind=\"infer\"} %zu\n",
                        set.entries[i]->name, steps, set.entries[i]->name, infers);
    }
    rnnd_buf_printf(out,
                    "# HELP rnnd_models Models loaded (current versions).\n"
                    "# TYPE rnnd_models gauge\n"
                    "rnnd_models %zu\n"
                    "# HELP rnnd_model_info The current version of each model.\n"
                    "# TYPE rnnd_model_info gauge\n",
                    set.n);
    for (size_t i = 0; i < set.n; i++)
        rnnd_buf_printf(out,
                        "rnnd_model_info{model=\"%s\",version=\"%d\",digest=\"%s\","
                        "file_digest=\"%s\"} 1\n",
                        set.entries[i]->name, set.entries[i]->version, set.entries[i]->digest,
                        set.entries[i]->file_digest);
    rnnd_registry_free(&set);
    rnnd_session_stats st;
    rnnd_session_table_stats(src->sessions, &st);
    rnnd_buf_printf(out,
                    "# HELP rnnd_sessions Open sessions.\n"
                    "# TYPE rnnd_sessions gauge\n"
                    "rnnd_sessions %zu\n"
                    "# HELP rnnd_session_state_bytes Memory of all session state blocks.\n"
                    "# TYPE rnnd_session_state_bytes gauge\n"
                    "rnnd_session_state_bytes %zu\n"
                    "# HELP rnnd_sessions_total Sessions by how they ended (or began).\n"
                    "# TYPE rnnd_sessions_total counter\n"
                    "rnnd_sessions_total{event=\"created\"} %llu\n"
                    "rnnd_sessions_total{event=\"expired\"} %llu\n"
                    "rnnd_sessions_total{event=\"evicted\"} %llu\n"
                    "rnnd_sessions_total{event=\"deleted\"} %llu\n"
                    "rnnd_sessions_total{event=\"rejected\"} %llu\n",
                    st.sessions, st.state_bytes, (unsigned long long)st.created,
                    (unsigned long long)st.expired, (unsigned long long)st.evicted,
                    (unsigned long long)st.deleted, (unsigned long long)st.rejected);
    static const char *const finish[] = {"length", "stop", "cancelled", "error"};
    rnnd_buf_puts(out,
                  "# HELP rnnd_generations_total Generations ended, by finish reason.\n"
                  "# TYPE rnnd_generations_total counter\n");
    for (size_t i = 0; i < 4; i++)
        rnnd_buf_printf(out, "rnnd_generations_total{finish_reason=\"%s\"} %llu\n", finish[i],
                        (unsigned long long)atomic_load(&m->generations[i]));
    rnnd_buf_printf(out,
                    "# HELP rnnd_generated_tokens_total Tokens chosen by generations.\n"
                    "# TYPE rnnd_generated_tokens_total counter\n"
                    "rnnd_generated_tokens_total %llu\n"
                    "# HELP rnnd_generations_active Generations under way.\n"
                    "# TYPE rnnd_generations_active gauge\n"
                    "rnnd_generations_active %lld\n",
                    (unsigned long long)atomic_load(&m->generated_tokens),
                    (long long)atomic_load(&m->generations_active));
    const rnnd_metrics *sm = m;
    rnnd_buf_printf(out,
                    "# HELP rnnd_snapshots_total Session snapshots written.\n"
                    "# TYPE rnnd_snapshots_total counter\n"
                    "rnnd_snapshots_total %llu\n"
                    "# HELP rnnd_snapshot_failures_total Session snapshots that failed.\n"
                    "# TYPE rnnd_snapshot_failures_total counter\n"
                    "rnnd_snapshot_failures_total %llu\n"
                    "# HELP rnnd_snapshot_bytes Size of the last snapshot.\n"
                    "# TYPE rnnd_snapshot_bytes gauge\n"
                    "rnnd_snapshot_bytes %llu\n"
                    "# HELP rnnd_snapshot_sessions Sessions in the last snapshot.\n"
                    "# TYPE rnnd_snapshot_sessions gauge\n"
                    "rnnd_snapshot_sessions %llu\n"
                    "# HELP rnnd_snapshot_duration_seconds Time the last snapshot took.\n"
                    "# TYPE rnnd_snapshot_duration_seconds gauge\n"
                    "rnnd_snapshot_duration_seconds %.6f\n",
                    (unsigned long long)atomic_load(&sm->snapshots),
                    (unsigned long long)atomic_load(&sm->snapshot_failures),
                    (unsigned long long)atomic_load(&sm->snapshot_bytes),
                    (unsigned long long)atomic_load(&sm->snapshot_sessions),
                    atomic_load(&sm->snapshot_usec) / 1e6);
}
