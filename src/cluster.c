/* Cluster mode's start and stop, the node lease and its renewal thread, readiness
 * (cluster.h; docs/cluster.md, "Ownership with fencing" and "Failure, drain, Redis trouble"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "cluster.h"
#include "http.h"
#include "rnnd/status.h"

/* The lease is surely ours until the lease store says (cluster.h: confirmation). */
static void note_lease(rnnd_cluster *c)
{
    atomic_store(&c->lease_until_us, (long long)(rnnd_store_lease_until(c->lease) * 1e6));
}

void rnnd_cluster_lapsed(rnnd_cluster *c) { atomic_fetch_add(&c->lapses, 1); }

/* Read Redis's data marker (setting it when missing, to a token of this incarnation): a marker
 * other than the one this node knew means Redis lost its data since (FLUSHALL, a restart
 * without its append-only file), and every session this node holds is written anew. */
static void check_data(rnnd_cluster *c)
{
    char tok[RNND_STORE_TOKEN_MAX + 1], now[RNND_STORE_TOKEN_MAX + 1], err[512] = "";
    rnnd_store_holder(c->lease, tok);
    size_t n = strlen(tok);
    snprintf(tok + n, sizeof tok - n, " %lld", (long long)(rnnd_mono_s() * 1e6));
    if (rnnd_store_mark(c->lease, tok, now, err, sizeof err))
        return;
    pthread_mutex_lock(&c->mu);
    int lost = c->token[0] && strcmp(now, c->token);
    snprintf(c->token, sizeof c->token, "%s", now);
    pthread_mutex_unlock(&c->mu);
    if (lost) {
        atomic_fetch_add(&c->lost, 1);
        RNND_LOG(&c->app->log, RNND_LOG_WARN, "store_data_lost", "node=%s", c->node);
        rnnd_sync_restore_all(c);
    }
}

/* The lease is ours: every store of this node names the same holder. */
static void adopt(rnnd_cluster *c)
{
    note_lease(c);
    uint64_t inc = rnnd_store_incarnation(c->lease);
    rnnd_store_set_incarnation(c->req, inc);
    rnnd_store_set_incarnation(c->sync, inc);
    check_data(c);
    if (!atomic_exchange(&c->registered, 1))
        RNND_LOG(&c->app->log, RNND_LOG_INFO, "lease_taken", "node=%s incarnation=%llu", c->node,
                 (unsigned long long)inc);
}

/* One lease period's work: take the lease when the start could not (Redis was down), else
 * renew it, taking it again (the same incarnation) when it lapsed meanwhile. */
static void lease_tick(rnnd_cluster *c)
{
    char err[512] = "";
    int rc;
    if (!atomic_load(&c->registered)) {
        rc = rnnd_store_register(c->lease, 0, err, sizeof err);
        if (!rc)
            adopt(c);
    } else if ((rc = rnnd_store_renew(c->lease, err, sizeof err)) == RNND_ERR_CONFLICT) {
        /* before the new lease's time is noted: a request never sees a fresh lease without
         * the lapse that makes it confirm (paused past the lease: its sessions may be
         * taken); and before the lapse, whether Redis lost its data (the lease key with it) */
        check_data(c);
        rnnd_cluster_lapsed(c);
        atomic_fetch_add(&c->stats.renewal_failures, 1);
        char q[600];
        RNND_LOG(&c->app->log, RNND_LOG_WARN, "lease_lapsed", "node=%s msg=%s", c->node,
                 rnnd_log_quote(q, sizeof q, err));
        rc = rnnd_store_reregister(c->lease, err, sizeof err);
        if (rc == RNND_ERR_CONFLICT)
            RNND_LOG(&c->app->log, RNND_LOG_ERROR, "lease_lost", "node=%s msg=%s", c->node,
                     rnnd_log_quote(q, sizeof q, err));
        else if (!rc)
            note_lease(c);
    } else {
        atomic_fetch_add(rc ? &c->stats.renewal_failures : &c->stats.renewals, 1);
        if (!rc)
            note_lease(c);
    }
    rnnd_sync_note(c, rc, err);
}

static void *lease_main(void *arg)
{
    rnnd_cluster *c = arg;
    int64_t period = c->lease_ms / 4;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec until;
        rnnd_mono_deadline(&until, (long)period * 1000);
        while (!c->stop && pthread_cond_timedwait(&c->cond, &c->mu, &until) != ETIMEDOUT)
            ;
        if (c->stop)
            break;
        pthread_mutex_unlock(&c->mu);
        lease_tick(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void cluster_free(rnnd_cluster *c)
{
    rnnd_store_free(c->req);
    rnnd_store_free(c->lease);
    rnnd_store_free(c->sync);
    rnnd_store_free(c->sub);
    for (size_t i = 0; i < c->n_dirty; i++)
        rnnd_session_unref(c->dirty[i]);
    free(c->dirty);
    rnnd_sync_ended_free(c);
    pthread_mutex_destroy(&c->take_mu);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    free(c);
}

/* Ask the threads to stop and wait for them (again: nothing). */
static void threads_stop(rnnd_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (c->lease_started)
        pthread_join(c->lease_thread, NULL);
    if (c->sync_started)
        rnnd_sync_thread_stop(c);
    if (c->handover_started)
        rnnd_handover_thread_stop(c);
    c->lease_started = c->sync_started = c->handover_started = 0;
}

int rnnd_cluster_start(rnnd_app *app, char *err, size_t errlen)
{
    const rnnd_config *cfg = app->cfg;
    if (!cfg->session_store || !*cfg->session_store)
        return 0;
    rnnd_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
    c->app = app;
    c->lease_ms = cfg->lease_ms;
    c->sync_ms = cfg->store_sync_ms;
    c->tombstone_ms = cfg->tombstone_s * 1000;
    pthread_mutex_init(&c->take_mu, NULL);
    pthread_mutex_init(&c->mu, NULL);
    /* the lease's renewal and the sync thread wait on it: on the monotonic clock, so that a
     * step of the wall clock neither delays a renewal nor hurries one */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&c->registered, 0);
    atomic_init(&c->up, 0);
    atomic_init(&c->lapses, 0);
    atomic_init(&c->lease_until_us, 0);
    atomic_init(&c->up_since_us, (long long)(rnnd_mono_s() * 1e6));
    atomic_init(&c->lost, 0);
    int rc = rnnd_store_node_name(cfg->node_name, c->node, err, errlen);
    rnnd_store_conf conf = {cfg->session_store, cfg->session_store_password_file, c->node,
                            cfg->lease_ms, 0};
    int up = 0;
    if (!rc)
        rc = rnnd_store_open(&conf, &c->req, &up, err, errlen);
    if (!rc)
        rc = rnnd_store_open(&conf, &c->lease, NULL, err, errlen);
    if (!rc)
        rc = rnnd_store_open(&conf, &c->sync, NULL, err, errlen);
    if (!rc)
        rc = rnnd_store_open(&conf, &c->sub, NULL, err, errlen);
    if (rc) {
        cluster_free(c);
        return rc;
    }
    /* a restart faster than the lease waits for the previous incarnation's lease to lapse */
    rc = rnnd_store_register(c->lease, c->lease_ms, err, errlen);
    if (rc == RNND_ERR_IO) {
        atomic_store(&c->up, 1); /* so that the note below logs store_down */
        rnnd_sync_note(c, rc, err);
        rc = 0;
    } else if (!rc) {
        atomic_store(&c->up, 1);
        adopt(c);
    }
    if (rc) {
        cluster_free(c);
        return rc;
    }
    if (pthread_create(&c->lease_thread, NULL, lease_main, c)) {
        cluster_free(c);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "cannot start the lease thread");
    }
    c->lease_started = 1;
    if (rnnd_sync_thread_start(c)) {
        threads_stop(c);
        cluster_free(c);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "cannot start the write-behind thread");
    }
    c->sync_started = 1;
    if (rnnd_handover_thread_start(c)) {
        threads_stop(c);
        cluster_free(c);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "cannot start the hand-over thread");
    }
    c->handover_started = 1;
    app->cluster = c;
    rnnd_session_table_set_gone(app->sessions, rnnd_sync_ended, c);
    RNND_LOG(&app->log, RNND_LOG_INFO, "cluster", "node=%s lease_ms=%lld store_sync_ms=%lld",
             c->node, (long long)c->lease_ms, (long long)c->sync_ms);
    return 0;
}

size_t rnnd_cluster_drain(rnnd_app *app)
{
    rnnd_cluster *c = app->cluster;
    if (!c || c->drained)
        return 0;
    threads_stop(c);
    size_t written = 0;
    size_t failed = rnnd_sync_release_all(c, &written);
    char err[512] = "";
    int lease = atomic_load(&c->registered) != 0;
    if (lease && rnnd_store_release_node(c->lease, err, sizeof err)) {
        char q[600];
        RNND_LOG(&app->log, RNND_LOG_WARN, "lease_release_failed", "node=%s msg=%s", c->node,
                 rnnd_log_quote(q, sizeof q, err));
        lease = 0;
    }
    RNND_LOG(&app->log, RNND_LOG_INFO, "drained", "node=%s written=%zu unwritten=%zu", c->node,
             written, failed);
    pthread_mutex_lock(&c->mu);
    c->drained = 1;
    c->drain_written = written;
    c->drain_failed = failed;
    rnnd_req *r = c->drain_req;
    c->drain_req = NULL;
    pthread_mutex_unlock(&c->mu);
    if (r) {
        rnnd_buf b;
        rnnd_buf_init(&b);
        rnnd_buf_printf(&b,
                        "{\"status\":\"drained\",\"node\":\"%s\",\"sessions_written\":%zu,"
                        "\"sessions_unwritten\":%zu,\"leases_released\":%zu,"
                        "\"node_lease_released\":%s,\"exiting\":true}",
                        c->node, written, failed, written, lease ? "true" : "false");
        rnnd_reply(r, failed ? 503 : 200, &b);
        rnnd_req_complete(r);
    }
    return failed;
}

size_t rnnd_cluster_stop(rnnd_app *app)
{
    rnnd_cluster *c = app->cluster;
    if (!c)
        return 0;
    rnnd_cluster_drain(app); /* nothing when the drain ran already */
    size_t failed = c->drain_failed;
    RNND_LOG(&app->log, RNND_LOG_INFO, "cluster_stopped", "node=%s unwritten=%zu", c->node, failed);
    app->cluster = NULL;
    if (app->sessions)
        rnnd_session_table_set_gone(app->sessions, NULL, NULL);
    cluster_free(c);
    return failed;
}

int rnnd_cluster_ready(rnnd_cluster *c, int *up)
{
    *up = atomic_load(&c->up);
    return atomic_load(&c->registered);
}
