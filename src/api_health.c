/* Liveness, readiness and metrics. */
#include <stdatomic.h>

#include "api.h"
#include "cluster.h"

void rnnd_api_healthz(rnnd_req *r)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"status\":\"ok\"}");
    rnnd_reply(r, 200, &b);
}

void rnnd_api_readyz(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    if (atomic_load(&app->draining)) {
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "draining: the server is shutting down");
        return;
    }
    if (app->cluster && atomic_load(&app->cluster->draining)) {
        rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                         "draining: this node writes its sessions to the store and stops");
        return;
    }
    int store_up = 1;
    if (app->cluster && !rnnd_cluster_ready(app->cluster, &store_up)) {
        rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                         "cluster mode: this node has no lease in the session store yet "
                         "(Redis unreachable since the start)");
        return;
    }
    size_t n = rnnd_catalog_count(&app->models);
    if (!n) {
        rnnd_reply_error(r, RNND_E_NO_MODELS,
                         "no model is loaded: add a model file and reload "
                         "(SIGHUP)");
        return;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    /* Redis down once the lease was taken: still ready (docs/cluster.md, "Redis trouble") */
    if (app->cluster)
        rnnd_buf_printf(&b, "{\"status\":\"ready\",\"models\":%zu,\"store\":\"%s\"}", n,
                        store_up ? "up" : "down");
    else
        rnnd_buf_printf(&b, "{\"status\":\"ready\",\"models\":%zu}", n);
    rnnd_reply(r, 200, &b);
}

void rnnd_api_metrics(rnnd_req *r)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_app *app = rnnd_req_app(r);
    rnnd_metrics_sources src = {.kernels = app->kernels ? app->kernels->name : NULL,
                                .pool = app->pool,
                                .workers = app->workers,
                                .models = &app->models,
                                .sessions = app->sessions};
    rnnd_metrics_render(&app->metrics, &src, &b);
    rnnd_cluster_metrics(app->cluster, &b);
    rnnd_reply(r, 200, &b);
    rnnd_reply_header(r, "Content-Type", "text/plain; version=0.0.4");
}
