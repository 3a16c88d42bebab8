/* Hand-over between live nodes (cluster.h; docs/cluster.md, "Takeover, hand-over, redirect"):
 * the holder's side, a thread listening on this node's channel, and the asker's request.
 *
 * A node that needs a session a live node holds publishes "ID ME" on rnnd:handover:HOLDER
 * (rnnd_handover_ask; cluster_take.c waits and acquires again). The holder's thread queues a
 * job on the session, after the requests already queued there, which writes the exact state
 * with release = 1 and drops the session from this node (rnnd_sync_give); the asker's next
 * acquisition then takes it. The asker polls the record rather than waiting for an answer on
 * its own channel: the release is visible in the record the moment it is written, and a lost
 * or late answer cannot strand a request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "cluster.h"
#include "rnnd/status.h"

#define LISTEN_MS 100 /* how often the thread looks at its stop request */

struct give_job {
    rnnd_job job; /* first member */
    rnnd_cluster *c;
    rnnd_session *s; /* one reference */
};

static int give_start(rnnd_job *job)
{
    struct give_job *g = (struct give_job *)job;
    rnnd_cluster *c = g->c;
    char err[512] = "";
    int rc = rnnd_sync_give(c, g->s, err, sizeof err);
    if (!rc) {
        atomic_fetch_add(&c->stats.handovers[0], 1);
        RNND_LOG(&c->app->log, RNND_LOG_INFO, "session_handed_over", "node=%s", c->node);
    } else if (rc == RNND_ERR_IO) {
        char q[600];
        RNND_LOG(&c->app->log, RNND_LOG_WARN, "handover_failed", "node=%s msg=%s", c->node,
                 rnnd_log_quote(q, sizeof q, err));
    }
    return RNND_JOB_DONE;
}

static void give_finish(rnnd_job *job)
{
    struct give_job *g = (struct give_job *)job;
    rnnd_cluster *c = g->c;
    rnnd_session_unref(g->s);
    free(g);
    pthread_mutex_lock(&c->mu);
    c->giving--;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* ID was asked for and this node does not have it: it expired or was evicted here, or this
 * node no longer knows it, yet its record may still name this node (nothing wrote the end of
 * the session to Redis). Then the record goes, with the tombstone this node's table holds, so
 * that the asker answers 410 (or 404) as this node does instead of waiting for a hand-over
 * that cannot come. Under take_mu: a take of ID here (the record already names this node,
 * the session not yet in the table) is never mistaken for a forgotten one. */
static void forget(rnnd_cluster *c, const char *id)
{
    pthread_mutex_lock(&c->take_mu);
    rnnd_session *s = NULL;
    int why = rnnd_session_get(c->app->sessions, id, &s);
    if (why != RNND_SESSION_FOUND) {
        char err[512] = "";
        int rc = rnnd_store_forget(c->req, id,
                                   why == RNND_SESSION_EXPIRED       ? "expired"
                                       : why == RNND_SESSION_EVICTED ? "evicted"
                                                                     : "",
                                   c->tombstone_ms, err, sizeof err);
        rnnd_sync_note(c, rc, err);
        if (!rc)
            RNND_LOG(&c->app->log, RNND_LOG_INFO, "session_forgotten", "node=%s reason=%s", c->node,
                     why == RNND_SESSION_MISSING ? "unknown" : "gone");
    }
    rnnd_session_unref(s);
    pthread_mutex_unlock(&c->take_mu);
}

/* ID was asked for: queue its hand-over when this node holds it (else the asker's next
 * acquisition sees who does, once forget() dropped a record naming this node). */
static void give(rnnd_cluster *c, const char *id)
{
    rnnd_session *s = NULL;
    if (rnnd_session_get(c->app->sessions, id, &s) != RNND_SESSION_FOUND) {
        forget(c, id);
        return;
    }
    struct give_job *g = rnnd_session_sync(s) ? calloc(1, sizeof *g) : NULL;
    if (!g) {
        rnnd_session_unref(s);
        return;
    }
    g->job.start = give_start;
    g->job.finish = give_finish;
    g->job.not_a_use = 1; /* the session's idle clock moves with it (the write's used_ms) */
    g->c = c;
    g->s = s;
    pthread_mutex_lock(&c->mu);
    c->giving++;
    pthread_mutex_unlock(&c->mu);
    if (rnnd_session_submit(s, &g->job) != RNND_SESSION_FOUND) {
        rnnd_session_unref(s);
        free(g);
        pthread_mutex_lock(&c->mu);
        c->giving--;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
    }
}

static int stopping(rnnd_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    int stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

static void *handover_main(void *arg)
{
    rnnd_cluster *c = arg;
    while (!stopping(c)) {
        char id[RNND_STORE_ID_LEN + 1], from[RNND_STORE_NAME_MAX + 1], err[512];
        int rc = rnnd_store_handover_next(c->sub, LISTEN_MS, id, from, err, sizeof err);
        if (!rc) {
            give(c, id);
        } else if (rc < 0) {
            /* Redis down: the other calls report it (store_down); try again shortly */
            struct timespec ts = {0, LISTEN_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int rnnd_handover_thread_start(rnnd_cluster *c)
{
    return pthread_create(&c->handover_thread, NULL, handover_main, c) ? -1 : 0;
}

void rnnd_handover_thread_stop(rnnd_cluster *c)
{
    pthread_join(c->handover_thread, NULL);
    /* a job it queued behind a request runs when that request's job ends */
    pthread_mutex_lock(&c->mu);
    while (c->giving)
        pthread_cond_wait(&c->cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

int rnnd_handover_ask(rnnd_cluster *c, const char *holder, const char *id, char *err, size_t errlen)
{
    long long receivers = 0;
    int rc = rnnd_store_handover_ask(c->req, holder, id, &receivers, err, errlen);
    rnnd_sync_note(c, rc, err);
    if (!rc && receivers < 1)
        rc = RNND_ERR_BUSY;
    return rc;
}
