/* Drain in cluster mode (cluster.h; docs/cluster.md, "Failure, drain, Redis trouble"): every
 * session this node holds written exactly and released, the node lease dropped, so that other
 * nodes take the sessions at their next request without waiting for a lease to lapse.
 *
 * One path for SIGTERM and POST /v1/admin/drain: the endpoint raises SIGTERM and waits,
 * deferred, for the main thread's shutdown (cmd_serve.c) to drain (rnnd_cluster_drain, in
 * cluster.c with the rest of the stop). The writes then happen
 * once no other request runs, which is what makes them exact: no step can land on a session
 * after its state was written and its hold given up. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "cluster.h"
#include "http.h"
#include "rnnd/status.h"
#include "settings.h"

void rnnd_api_admin_drain(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_cluster *c = app->cluster;
    if (!c) {
        rnnd_reply_error(r, RNND_E_CONFLICT,
                         "drain needs cluster mode (session_store): this node keeps its "
                         "sessions itself; stop it with SIGTERM");
        return;
    }
    pthread_mutex_lock(&c->mu);
    int busy = c->drain_req != NULL || c->drained;
    if (!busy) {
        rnnd_req_defer(r);
        c->drain_req = r;
    }
    pthread_mutex_unlock(&c->mu);
    if (busy) {
        rnnd_reply_error(r, RNND_E_CONFLICT, "this node is draining already");
        return;
    }
    RNND_LOG(&app->log, RNND_LOG_INFO, "drain_requested", "node=%s", c->node);
    /* the main thread takes it with sigtimedwait and shuts down as at a signal */
    kill(getpid(), SIGTERM);
}

void rnnd_cluster_begin_drain(rnnd_cluster *c)
{
    if (c && !atomic_exchange(&c->draining, 1))
        RNND_LOG(&c->app->log, RNND_LOG_INFO, "drain_grace", "node=%s ms=%lld", c->node,
                 (long long)c->app->cfg->drain_grace_ms);
}

size_t rnnd_cluster_drain_waiting(rnnd_cluster *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->mu);
    size_t n = c->drain_req != NULL;
    pthread_mutex_unlock(&c->mu);
    return n;
}
