/* `rnnd serve`: start-up and shutdown order of the daemon.
 *
 * Start: settings, log, kernels, models, session table, compute workers, batchers, HTTP.
 * Signals: SIGTERM/SIGINT/SIGHUP are blocked in every thread and taken by this thread with
 * sigtimedwait(), which also times the sweep of expired sessions and the periodic snapshots,
 * so no handler and no global state exist. SIGHUP reloads the models (registry.h). Stop:
 * refuse new requests (503) and new connections, let in-flight requests finish for up to
 * shutdown_timeout_s, fail what is left with 503, then tear down in reverse. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "cmd.h"
#include "http.h"
#include "listenfd.h"
#include "models_other.h"
#include "notify.h"
#include "persist.h"
#include "rnnd/kernels.h"
#include "rnnd/status.h"
#include "cluster.h"
#include "rnnd/store.h"
#include "routes.h"
#include "v2_seq.h"

#define SWEEP_INTERVAL_S 1
#define STATUS_INTERVAL_S 5

/* A worker's context is its index: batchers keep their scratch per worker (batcher.h). */
static void *worker_init(void *arg, size_t index)
{
    (void)arg;
    size_t *w = malloc(sizeof *w);
    if (w)
        *w = index;
    return w;
}

static void worker_fini(void *arg, void *wctx)
{
    (void)arg;
    free(wctx);
}

/* Give every entry of REG without one a batcher. Returns 0 or RNND_ERR_NOMEM. */
static int attach_batchers(rnnd_app *app, rnnd_registry *reg)
{
    const rnnd_config *cfg = app->cfg;
    for (size_t i = 0; i < reg->n; i++) {
        rnnd_entry *e = reg->entries[i];
        if (e->batcher)
            continue;
        if (rnnd_batcher_new(e->net, app->workers, app->pool, (size_t)cfg->max_batch,
                             (long)cfg->max_batch_wait_us, &e->batcher))
            return RNND_ERR_NOMEM;
        rnnd_batcher_set_owner(e->batcher, rnnd_entry_ref_v, rnnd_entry_unref_v, e);
        rnnd_batcher_set_infer_max_steps(e->batcher, (size_t)cfg->max_infer_batch_steps);
    }
    return RNND_OK;
}

static void log_model(rnnd_app *app, const char *event, const rnnd_entry *e)
{
    RNND_LOG(&app->log, RNND_LOG_INFO, event,
             "model=%s version=%d path=%s stateful=%d state_bytes=%zu digest=%s file_digest=%s",
             e->name, e->version, e->path, e->stateful, e->state_floats * sizeof(float), e->digest,
             e->file_digest);
}

/* A daemon with no model is ready for nothing (/readyz stays 503 no_models), and an empty
 * models folder is usually a wrong path or a model not yet installed: say which folder and
 * what was looked for, at start and on every reload that finds none. */
static void warn_no_models(rnnd_app *app, const char *dir, const rnnd_registry *reg)
{
    char q[1100];
    if (dir && *dir && !reg->dir_files)
        RNND_LOG(&app->log, RNND_LOG_WARN, "no_models",
                 "dir=%s pattern=\"" RNND_MODELS_PATTERN "\" models=%zu "
                 "msg=\"the models folder holds no model file\"",
                 rnnd_log_quote(q, sizeof q, dir), reg->n);
    else if (!reg->n && (!dir || !*dir))
        RNND_LOG(&app->log, RNND_LOG_WARN, "no_models",
                 "msg=\"no model to serve: neither models nor model is set\"");
}

static void report_reload(void *arg, const char *msg)
{
    rnnd_app *app = arg;
    char q[1100];
    RNND_LOG(&app->log, RNND_LOG_ERROR, "model_not_loaded", "msg=%s",
             rnnd_log_quote(q, sizeof q, msg));
}

/* SIGHUP: read the settings again (only the model sources take effect) and the models;
 * swap in the new set. A model file that fails keeps its old version. */
static void reload(rnnd_app *app, int argc, char **argv)
{
    char err[1024];
    rnnd_config fresh;
    int action;
    RNND_LOG(&app->log, RNND_LOG_INFO, "reloading", "models=%zu", rnnd_catalog_count(&app->models));
    if (rnnd_config_init(&fresh) ||
        rnnd_config_from_args(&fresh, argc, argv, &action, err, sizeof err)) {
        char q[1100];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "reload_failed", "msg=%s",
                 rnnd_log_quote(q, sizeof q, err));
        rnnd_config_free(&fresh);
        return;
    }
    rnnd_registry old, next;
    if (rnnd_catalog_copy(&app->models, &old) ||
        rnnd_registry_reload(&old, &next, fresh.models, fresh.model, fresh.n_model, app->kernels,
                             (int)app->cfg->compute, report_reload, app, err, sizeof err) ||
        attach_batchers(app, &next)) {
        char q[1100];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "reload_failed", "msg=%s",
                 rnnd_log_quote(q, sizeof q, err));
        rnnd_registry_free(&next);
        rnnd_registry_free(&old);
        rnnd_config_free(&fresh);
        return;
    }
    for (size_t i = 0; i < next.n; i++)
        if (rnnd_registry_find(&old, next.entries[i]->name) != next.entries[i])
            log_model(app, "model_loaded", next.entries[i]);
    for (size_t i = 0; i < old.n; i++)
        if (!rnnd_registry_find(&next, old.entries[i]->name))
            log_model(app, "model_removed", old.entries[i]);
    warn_no_models(app, fresh.models, &next);
    rnnd_models_other_log(&app->log, fresh.models);
    size_t n = next.n;
    rnnd_catalog_swap(&app->models, &next); /* NEXT now holds the set swapped out */
    rnnd_registry_free(&next);
    rnnd_registry_free(&old);
    rnnd_config_free(&fresh);
    RNND_LOG(&app->log, RNND_LOG_INFO, "reloaded", "models=%zu", n);
}

/* STATUS= for systemctl status: what the daemon serves now. */
static void notify_status(rnnd_app *app, const char *what)
{
    rnnd_session_stats st;
    rnnd_session_table_stats(app->sessions, &st);
    rnnd_notify_status("%s: models=%zu sessions=%zu", what, rnnd_catalog_count(&app->models),
                       st.sessions);
}

/* Wait until no request is in flight or DEADLINE passes. Returns 1 when none is left. */
/* Wait until at most KEEP requests are open (a drain request waiting for its answer). */
static int wait_idle(rnnd_http *h, size_t keep, double deadline)
{
    while (rnnd_http_active(h) > keep) {
        if (rnnd_mono_s() >= deadline)
            return 0;
        usleep(5000);
    }
    return 1;
}

static void teardown(rnnd_app *app)
{
    rnnd_cluster_stop(app);    /* a failed start: nothing was served, nothing is lost */
    rnnd_pool_free(app->pool); /* first: batchers are freed with their last model ref */
    app->pool = NULL;
    rnnd_v2_seq_free(app->v2_seq);
    app->v2_seq = NULL;
    rnnd_session_table_free(app->sessions);
    app->sessions = NULL;
    rnnd_catalog_destroy(&app->models);
    rnnd_auth_free(&app->auth);
    memset(app->snap_key, 0, sizeof app->snap_key);
    free(app->snap_key_path);
    app->snap_key_path = NULL;
}

/* Stop every batcher of the current set (retired versions' queued work is cancelled by the
 * pool's stop). */
static void stop_batchers(rnnd_app *app)
{
    rnnd_registry cur;
    if (rnnd_catalog_copy(&app->models, &cur))
        return;
    for (size_t i = 0; i < cur.n; i++)
        if (cur.entries[i]->batcher)
            rnnd_batcher_stop(cur.entries[i]->batcher);
    rnnd_registry_free(&cur);
}

/* The state_dir and then the snapshot key (snapkey.h), with a state_dir only: a state_dir
 * that cannot hold snapshots, or a bad key file, stops the start, as a bad API keys file
 * does; the folder first, so a misspelt one does not leave a key file behind. Returns 0 or 1. */
static int load_snap_key(rnnd_app *app)
{
    const rnnd_config *cfg = app->cfg;
    if (!cfg->state_dir || !*cfg->state_dir)
        return 0;
    char err[1024] = "", q[1100];
    char *path = NULL;
    int rc = rnnd_persist_check_dir(cfg->state_dir, err, sizeof err);
    if (!rc)
        rc = rnnd_snapkey_path(cfg->state_dir, cfg->snapshot_key_file, &path, err, sizeof err);
    if (!rc)
        rc = rnnd_snapkey_check_outside(path, cfg->state_dir, err, sizeof err);
    if (!rc)
        rc = rnnd_snapkey_load(path, app->snap_key, &app->snap_key_created, err, sizeof err);
    /* a new key starts a new series: a serial left by the old one guards nothing of it */
    if (!rc && !app->snap_key_created)
        rc = rnnd_snapserial_read(path, &app->snap_serial, err, sizeof err);
    if (rc) {
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=%s", rnnd_log_quote(q, sizeof q, err));
        rnnd_auth_free(&app->auth);
        free(path);
        return 1;
    }
    if (app->snap_key_created)
        RNND_LOG(&app->log, RNND_LOG_INFO, "snapshot_key_created", "path=%s",
                 rnnd_log_quote(q, sizeof q, path));
    app->snap_key_path = path;
    return 0;
}

/* Cluster mode (cluster.h): the stores, the node lease, the write-behind thread; nothing
 * without session_store. Returns 0 or 1 (logged). */
static int start_cluster(rnnd_app *app)
{
    char err[1024] = "", q[1100];
    if (!rnnd_cluster_start(app, err, sizeof err))
        return 0;
    RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=%s", rnnd_log_quote(q, sizeof q, err));
    return 1;
}

/* Everything after the settings; returns the exit status. */
static int serve(rnnd_app *app, const sigset_t *sigs, int argc, char **argv)
{
    const rnnd_config *cfg = app->cfg;
    char err[1024] = "";
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    if (!k) {
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=\"%s\"", err);
        return 1;
    }
    app->kernels = k;
    if (rnnd_auth_load(&app->auth, cfg->api_keys_file, err, sizeof err)) {
        char q[1100];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=%s", rnnd_log_quote(q, sizeof q, err));
        return 1;
    }
    if (app->auth.n)
        RNND_LOG(&app->log, RNND_LOG_INFO, "api_keys", "keys=%zu", app->auth.n);
    if (load_snap_key(app))
        return 1;
    rnnd_registry reg;
    if (rnnd_registry_load(&reg, cfg->models, cfg->model, cfg->n_model, k, (int)cfg->compute, err,
                           sizeof err)) {
        char q[1100];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=%s", rnnd_log_quote(q, sizeof q, err));
        rnnd_auth_free(&app->auth);
        free(app->snap_key_path);
        app->snap_key_path = NULL;
        return 1;
    }
    for (size_t i = 0; i < reg.n; i++)
        log_model(app, "model_loaded", reg.entries[i]);
    if (cfg->compute == RNND_COMPUTE_BF16 && !rnnd_kernels_bf16dp_native(k))
        RNND_LOG(&app->log, RNND_LOG_WARN, "compute_emulated",
                 "msg=\"compute = bf16 without AVX512-BF16 on the %s path: bf16 models run the "
                 "mode's scalar statement, many times slower than compute = f32\"",
                 k->name);
    warn_no_models(app, cfg->models, &reg);
    rnnd_models_other_log(&app->log, cfg->models);
    rnnd_catalog_init(&app->models, &reg);

    rnnd_session_limits lim = {
        .max_sessions = (size_t)cfg->max_sessions,
        .max_per_owner = (size_t)cfg->max_sessions_per_key,
        .max_state_bytes = (size_t)cfg->max_state_bytes,
        .ttl_s = (double)cfg->session_ttl_s,
        .ttl_max_s = (double)cfg->session_ttl_max_s,
        .evict_lru = cfg->session_evict == RNND_EVICT_LRU,
        .tombstone_s = (double)cfg->tombstone_s,
        .max_tombstones = (size_t)cfg->max_tombstones,
    };
    app->sessions = rnnd_session_table_new(&lim, NULL, NULL);
    if (app->sessions) {
        rnnd_session_table_set_model_refs(app->sessions, rnnd_entry_ref_v, rnnd_entry_unref_v);
        app->v2_seq = rnnd_v2_seq_new(app->sessions, (size_t)cfg->max_sessions);
    }
    if (!app->sessions || !app->v2_seq) {
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=\"out of memory\"");
        teardown(app);
        return 1;
    }
    long workers = cfg->workers ? (long)cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);
    if (workers < 1)
        workers = 1;
    app->workers = (size_t)workers;
    if (rnnd_pool_new((size_t)workers, worker_init, worker_fini, app, &app->pool, err,
                      sizeof err)) {
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=\"%s\"", err);
        teardown(app);
        return 1;
    }
    if (attach_batchers(app, &app->models.reg)) {
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=\"out of memory\"");
        teardown(app);
        return 1;
    }

    if (start_cluster(app)) {
        teardown(app);
        return 1;
    }
    size_t restored = rnnd_persist_restore(app);

    rnnd_http *h;
    if (rnnd_http_start(app, rnnd_routes, rnnd_n_routes, &h, err, sizeof err)) {
        char q[1100];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "startup", "msg=%s", rnnd_log_quote(q, sizeof q, err));
        teardown(app);
        return 1;
    }
    RNND_LOG(&app->log, RNND_LOG_INFO, "ready", "models=%zu workers=%ld kernels=%s",
             rnnd_catalog_count(&app->models), workers, k->name);
    char status[128];
    snprintf(status, sizeof status, "serving: models=%zu sessions=%zu",
             rnnd_catalog_count(&app->models), restored);
    rnnd_notify_ready(status);

    /* the main loop wakes at least every second, and often enough for the watchdog */
    double wd = rnnd_notify_watchdog_usec() / 1e6;
    double tick_s = wd > 0 && wd / 4 < SWEEP_INTERVAL_S ? wd / 4 : SWEEP_INTERVAL_S;
    double next_wd = rnnd_mono_s(), next_status = rnnd_mono_s() + STATUS_INTERVAL_S;
    int sig = 0;
    double next_snapshot = rnnd_mono_s() + (double)cfg->snapshot_interval_s;
    while (!sig) {
        struct timespec tick = {(time_t)tick_s, (long)((tick_s - (time_t)tick_s) * 1e9)};
        siginfo_t info;
        int got = sigtimedwait(sigs, &info, &tick);
        double now = rnnd_mono_s();
        if (wd > 0 && now >= next_wd) {
            rnnd_notify_watchdog();
            next_wd = now + wd / 2;
        }
        if (now >= next_status) {
            notify_status(app, "serving");
            next_status = now + STATUS_INTERVAL_S;
        }
        if (got == SIGHUP) {
            rnnd_notify_reloading();
            reload(app, argc, argv);
            notify_status(app, "reloaded");
            rnnd_notify_ready(NULL);
        } else if (got > 0) {
            sig = got;
        } else if (got < 0 && errno != EAGAIN && errno != EINTR) {
            RNND_LOG(&app->log, RNND_LOG_ERROR, "signals", "msg=\"%s\"", strerror(errno));
            sig = SIGTERM;
        } else {
            size_t n = rnnd_session_expire(app->sessions);
            if (n)
                RNND_LOG(&app->log, RNND_LOG_DEBUG, "sessions_expired", "count=%zu", n);
        }
        if (cfg->snapshot_interval_s > 0 && rnnd_mono_s() >= next_snapshot) {
            rnnd_persist_save(app, 1);
            if (wd > 0)
                rnnd_notify_watchdog(); /* a long snapshot must not look like a hang */
            next_snapshot = rnnd_mono_s() + (double)cfg->snapshot_interval_s;
        }
    }
    rnnd_notify_stopping();
    if (app->cluster) {
        /* cluster mode: not ready and taking no new session, the node still serves the
         * sessions it holds while the balancer drops it, so that no request for them is
         * redispatched to a node off the hash ring (docs/cluster.md, "Drain") */
        rnnd_cluster_begin_drain(app->cluster);
        double until = rnnd_mono_s() + (double)cfg->drain_grace_ms / 1000.0;
        while (rnnd_mono_s() < until) {
            usleep(20000);
            if (wd > 0 && rnnd_mono_s() >= next_wd) {
                rnnd_notify_watchdog();
                next_wd = rnnd_mono_s() + wd / 2;
            }
        }
    }

    RNND_LOG(&app->log, RNND_LOG_INFO, "draining", "signal=%s in_flight=%zu",
             sig == SIGINT ? "SIGINT" : "SIGTERM", rnnd_http_active(h));
    atomic_store(&app->draining, 1);
    rnnd_http_quiesce(h);
    double deadline = rnnd_mono_s() + (double)cfg->shutdown_timeout_s;
    int clean = wait_idle(h, rnnd_cluster_drain_waiting(app->cluster), deadline);
    if (!clean) {
        /* out of time: what is still queued gets 503, running infer rounds stop at their
         * next step (503 too), running step rounds complete (one step each) */
        stop_batchers(app);
        rnnd_pool_stop(app->pool);
        wait_idle(h, rnnd_cluster_drain_waiting(app->cluster), rnnd_mono_s() + 1.0);
    }
    /* cluster mode: every session written exactly and released, the node lease dropped, and
     * a POST /v1/admin/drain answered (its reply sent before the server stops) */
    size_t waiting = rnnd_cluster_drain_waiting(app->cluster);
    size_t others = rnnd_http_active(h);
    others = others > waiting ? others - waiting : 0;
    rnnd_cluster_drain(app);
    /* only the drain request's reply is waited for: a stuck request past shutdown_timeout_s
     * must not hold the exit longer (tests/test_http_api.py, stuck request) */
    if (waiting)
        wait_idle(h, others, rnnd_mono_s() + 2.0);
    /* every deferred request has been resumed: libmicrohttpd may stop now */
    rnnd_pool_stop(app->pool);
    rnnd_http_stop(h);
    /* nothing runs any more: every session's state is final */
    rnnd_notify_status("stopping: saving sessions");
    int saved = app->cluster ? rnnd_cluster_stop(app) != 0 : rnnd_persist_save(app, 0);
    teardown(app);
    /* sessions lost to a failed final snapshot make the stop unclean (snapshot_failed says why) */
    RNND_LOG(&app->log, RNND_LOG_INFO, "stopped", "clean=%d", clean && !saved);
    return saved ? 1 : 0;
}

int rnnd_cmd_serve(int argc, char **argv)
{
    rnnd_config cfg;
    char err[1024];
    int action;
    if (rnnd_config_init(&cfg)) {
        fprintf(stderr, "rnnd serve: out of memory\n");
        return 1;
    }
    if (rnnd_config_from_args(&cfg, argc, argv, &action, err, sizeof err)) {
        fprintf(stderr, "rnnd serve: %s\n", err);
        rnnd_config_free(&cfg);
        return 2;
    }
    if (action == RNND_CONFIG_HELP || action == RNND_CONFIG_PRINT) {
        if (action == RNND_CONFIG_HELP)
            rnnd_config_help(stdout);
        else
            rnnd_config_print(&cfg, stdout);
        rnnd_config_free(&cfg);
        return 0;
    }

    /* socket activation: the environment is read (and cleared) before any thread starts */
    int listen_fd;
    if (rnnd_listen_fd(&listen_fd, err, sizeof err)) {
        fprintf(stderr, "rnnd serve: %s\n", err);
        rnnd_config_free(&cfg);
        return 1;
    }

    /* blocked before any thread starts, so every thread inherits the mask */
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigset_t blocked = sigs;
    sigaddset(&blocked, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &blocked, &old);

    rnnd_app app;
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    rnnd_log_init(&app.log, (int)cfg.log_level, stderr);
    const char *route_names[RNND_METRICS_ROUTES];
    size_t nroutes = rnnd_route_names(route_names, RNND_METRICS_ROUTES);
    rnnd_metrics_init(&app.metrics, route_names, nroutes);
    atomic_init(&app.draining, 0);
    app.listen_fd = listen_fd;
    app.infer_limits.max_sequences = (size_t)cfg.max_sequences;
    app.infer_limits.max_steps = (size_t)cfg.max_infer_steps;
    app.infer_limits.max_total_steps = (size_t)cfg.max_infer_steps;
    rnnd_membudget_init(&app.mem, (size_t)cfg.memory_budget, (size_t)cfg.max_request_memory);

    int status = serve(&app, &sigs, argc, argv);

    pthread_sigmask(SIG_SETMASK, &old, NULL);
    rnnd_config_free(&cfg);
    return status;
}
