/* Cluster mode's metrics (cluster.h; docs/cluster.md, "Metrics"): counters bumped where the
 * work happens, gauges read at the scrape. Kept apart from metrics.c, which knows nothing of
 * the cluster: /metrics appends this after the daemon's own. */
#include <stdio.h>
#include <stdlib.h>

#include "app.h"
#include "cluster.h"
#include "rnnd/status.h"

static const char *const kind_names[RNND_CW_KINDS] = {"step", "create", "now", "delete", "release"};
static const char *const failure_names[3] = {"unreachable", "refused", "error"};
static const double round_le[RNND_CW_BUCKETS - 1] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   1};

void rnnd_cluster_count_write(rnnd_cluster *c, enum rnnd_cw_kind kind, int rc)
{
    rnnd_cluster_stats *st = &c->stats;
    if (!rc) {
        atomic_fetch_add_explicit(&st->writes[kind], 1, memory_order_relaxed);
        return;
    }
    /* 1: the record is gone, RNND_ERR_CONFLICT: fenced; either way the session moved on */
    int why = rc == RNND_ERR_IO ? 0 : rc == 1 || rc == RNND_ERR_CONFLICT ? 1 : 2;
    atomic_fetch_add_explicit(&st->write_failures[why], 1, memory_order_relaxed);
}

void rnnd_cluster_count_round(rnnd_cluster *c, double t0)
{
    rnnd_cluster_stats *st = &c->stats;
    double s = rnnd_mono_s() - t0;
    size_t b = 0;
    while (b < RNND_CW_BUCKETS - 1 && s > round_le[b])
        b++;
    atomic_fetch_add_explicit(&st->rounds[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->round_us, (uint64_t)(s * 1e6), memory_order_relaxed);
}

/* Sessions held here, counted at the scrape (a count kept on the side would drift with every
 * path that ends a session: expiry, eviction, delete, a move). */
static size_t owned(rnnd_cluster *c)
{
    rnnd_session **all = NULL;
    size_t n = 0, held = 0;
    if (rnnd_session_collect(c->app->sessions, &all, &n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        rnnd_sync_slot *slot = rnnd_session_sync(all[i]);
        if (slot) {
            pthread_mutex_lock(&c->mu);
            held += slot->held != 0;
            pthread_mutex_unlock(&c->mu);
        }
        rnnd_session_unref(all[i]);
    }
    free(all);
    return held;
}

static void counter(rnnd_buf *out, const char *name, const char *help, uint64_t v)
{
    rnnd_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                    (unsigned long long)v);
}

static void gauge(rnnd_buf *out, const char *name, const char *help, uint64_t v)
{
    rnnd_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
                    (unsigned long long)v);
}

void rnnd_cluster_metrics(rnnd_cluster *c, rnnd_buf *out)
{
    if (!c)
        return;
    rnnd_cluster_stats *st = &c->stats;
    gauge(out, "rnnd_store_up", "1 while the last Redis command succeeded, else 0.",
          (uint64_t)(atomic_load(&c->up) != 0));
    rnnd_buf_puts(out,
                  "# HELP rnnd_store_writes_total Fenced writes acknowledged by Redis, by "
                  "kind (step: written behind; now: reset or import).\n"
                  "# TYPE rnnd_store_writes_total counter\n");
    for (size_t k = 0; k < RNND_CW_KINDS; k++)
        rnnd_buf_printf(out, "rnnd_store_writes_total{kind=\"%s\"} %llu\n", kind_names[k],
                        (unsigned long long)atomic_load(&st->writes[k]));
    rnnd_buf_puts(out,
                  "# HELP rnnd_store_write_failures_total Writes that failed: unreachable "
                  "(retried), refused (fenced: the session moved), error.\n"
                  "# TYPE rnnd_store_write_failures_total counter\n");
    for (size_t k = 0; k < 3; k++)
        rnnd_buf_printf(out, "rnnd_store_write_failures_total{reason=\"%s\"} %llu\n",
                        failure_names[k], (unsigned long long)atomic_load(&st->write_failures[k]));
    rnnd_buf_puts(out,
                  "# HELP rnnd_store_write_duration_seconds Round trips of writes (one "
                  "write, or a write-behind pipeline), send to last reply.\n"
                  "# TYPE rnnd_store_write_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < RNND_CW_BUCKETS; b++) {
        cum += atomic_load(&st->rounds[b]);
        if (b < RNND_CW_BUCKETS - 1)
            rnnd_buf_printf(out, "rnnd_store_write_duration_seconds_bucket{le=\"%g\"} %llu\n",
                            round_le[b], (unsigned long long)cum);
        else
            rnnd_buf_printf(out, "rnnd_store_write_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                            (unsigned long long)cum);
    }
    rnnd_buf_printf(out,
                    "rnnd_store_write_duration_seconds_sum %.6f\n"
                    "rnnd_store_write_duration_seconds_count %llu\n",
                    (double)atomic_load(&st->round_us) / 1e6, (unsigned long long)cum);
    pthread_mutex_lock(&c->mu);
    size_t pending = c->n_dirty + c->outstanding;
    pthread_mutex_unlock(&c->mu);
    gauge(out, "rnnd_store_pending_sessions",
          "Sessions changed and not yet written (dirty, or their write in flight).",
          (uint64_t)pending);
    rnnd_buf_puts(out,
                  "# HELP rnnd_session_takeovers_total Sessions taken from Redis: free "
                  "(created elsewhere, or released) or dead (its node's lease lapsed).\n"
                  "# TYPE rnnd_session_takeovers_total counter\n");
    rnnd_buf_printf(out,
                    "rnnd_session_takeovers_total{from=\"free\"} %llu\n"
                    "rnnd_session_takeovers_total{from=\"dead\"} %llu\n",
                    (unsigned long long)atomic_load(&st->takeovers[0]),
                    (unsigned long long)atomic_load(&st->takeovers[1]));
    rnnd_buf_puts(out,
                  "# HELP rnnd_session_handovers_total Sessions handed over between live "
                  "nodes: given (this node wrote and released one another node asked for) or "
                  "taken (this node asked its holder and took it).\n"
                  "# TYPE rnnd_session_handovers_total counter\n");
    rnnd_buf_printf(out,
                    "rnnd_session_handovers_total{direction=\"given\"} %llu\n"
                    "rnnd_session_handovers_total{direction=\"taken\"} %llu\n",
                    (unsigned long long)atomic_load(&st->handovers[0]),
                    (unsigned long long)atomic_load(&st->handovers[1]));
    counter(out, "rnnd_lease_renewals_total", "Renewals of this node's lease.",
            atomic_load(&st->renewals));
    counter(out, "rnnd_lease_renewal_failures_total",
            "Renewals that failed: Redis unreachable, or the lease had lapsed.",
            atomic_load(&st->renewal_failures));
    gauge(out, "rnnd_sessions_owned", "Sessions this node holds in Redis.", (uint64_t)owned(c));
}
