/* Sessions that survive restarts (see persist.h). */
#include "persist.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "snapshot.h"

/* how far ahead of this clock a restored creation time may be (a clock stepped back) */
#define CREATED_AHEAD_S 3600

/* REC from session S as it is now; INFO was taken before any job of ours was queued, so its
 * idle time is the client's, not the snapshot's. The state belongs to the caller. */
static void fill(rnnd_snap_rec *rec, rnnd_session *s, const rnnd_session_info *info)
{
    const rnnd_entry *e = rnnd_session_model(s);
    memset(rec, 0, sizeof *rec);
    snprintf(rec->id, sizeof rec->id, "%s", info->id);
    snprintf(rec->model, sizeof rec->model, "%s", e->name);
    snprintf(rec->digest, sizeof rec->digest, "%s", e->digest);
    rec->owner = rnnd_session_owner(s);
    rec->steps = rnnd_session_steps(s);
    rec->created = info->created;
    rec->ttl_s = info->ttl_s;
    rec->idle_s = info->idle_s;
    const rnnd_gen_params *gen = rnnd_session_ext(s);
    if (gen) {
        rec->has_gen = 1;
        rec->gen = *gen;
    }
    rec->state = rnnd_session_state(s);
    rec->n_floats = e->state_floats;
}

int rnnd_persist_check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    const char *why = NULL;
    if (stat(dir, &st))
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    else if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS))
        why = errno == EACCES ? "not writable by this user" : strerror(errno);
    if (!why)
        return RNND_OK;
    snprintf(err, errlen, "%s: %s (state_dir)", dir, why);
    return RNND_ERR_IO;
}

/* ---- a live snapshot: one job per session ------------------------------------------------ */

struct live {
    pthread_mutex_t mu;
    pthread_cond_t done;
    size_t pending;
    rnnd_snap_writer *w;
    rnnd_session_table *sessions;
    int failed;
};

struct snapjob {
    rnnd_job job; /* first member */
    struct live *lv;
    rnnd_session_info info;
};

/* At the head of the session's queue: the state is ours to read. */
static int snap_start(rnnd_job *job)
{
    struct snapjob *j = (struct snapjob *)job;
    rnnd_snap_rec rec;
    fill(&rec, job->session, &j->info);
    pthread_mutex_lock(&j->lv->mu);
    if (rnnd_snap_writer_add(j->lv->w, &rec))
        j->lv->failed = 1;
    pthread_mutex_unlock(&j->lv->mu);
    return RNND_JOB_DONE;
}

static void live_done(struct live *lv)
{
    pthread_mutex_lock(&lv->mu);
    if (--lv->pending == 0)
        pthread_cond_signal(&lv->done);
    pthread_mutex_unlock(&lv->mu);
}

static void snap_finish(rnnd_job *job)
{
    struct snapjob *j = (struct snapjob *)job;
    struct live *lv = j->lv;
    rnnd_session_info_release(lv->sessions, &j->info, 1);
    free(j);
    live_done(lv);
}

/* Queue a snapshot job on each of the N sessions and wait for all. */
static void save_live(rnnd_session **all, size_t n, struct live *lv)
{
    pthread_mutex_init(&lv->mu, NULL);
    pthread_cond_init(&lv->done, NULL);
    lv->pending = n + 1; /* + 1: ours, so no job's finish signals before the end */
    for (size_t i = 0; i < n; i++) {
        struct snapjob *j = calloc(1, sizeof *j);
        if (!j) {
            pthread_mutex_lock(&lv->mu);
            lv->failed = 1;
            pthread_mutex_unlock(&lv->mu);
            live_done(lv);
            continue;
        }
        j->lv = lv;
        j->job.start = snap_start;
        j->job.finish = snap_finish;
        rnnd_session_get_info(all[i], &j->info);
        if (rnnd_session_submit(all[i], &j->job) != RNND_SESSION_FOUND) {
            rnnd_session_info_release(lv->sessions, &j->info, 1);
            free(j); /* it left the table meanwhile: nothing to save */
            live_done(lv);
        }
    }
    pthread_mutex_lock(&lv->mu);
    lv->pending--;
    while (lv->pending)
        pthread_cond_wait(&lv->done, &lv->mu);
    pthread_mutex_unlock(&lv->mu);
    pthread_cond_destroy(&lv->done);
    pthread_mutex_destroy(&lv->mu);
}

int rnnd_persist_save(rnnd_app *app, int live)
{
    const char *dir = app->cfg->state_dir;
    if (!dir || !*dir)
        return RNND_OK;
    double t0 = rnnd_mono_s();
    char err[512];
    rnnd_snap_writer *w;
    /* the serial only rises, even when the clock steps back or two snapshots share a second */
    int64_t now = (int64_t)time(NULL);
    int64_t serial = now > app->snap_serial ? now : app->snap_serial + 1;
    /* The rollback guard is raised to this snapshot's serial BEFORE the file is written: a
     * save that then fails (a folder planted at sessions.snap, a full disk) or a crash before
     * the rename leaves the previous snapshot below the guard, refused at the next start,
     * rather than an older one that brings deleted sessions back. The price: a failed save
     * loses the previous snapshot's sessions (it is renamed aside, not deleted). */
    app->snap_serial = serial;
    if (app->snap_key_path && rnnd_snapserial_write(app->snap_key_path, serial, err, sizeof err)) {
        char q[600];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "snapshot_serial_failed", "msg=%s",
                 rnnd_log_quote(q, sizeof q, err));
    }
    int rc = rnnd_snap_writer_open(dir, app->snap_key, serial, &w, err, sizeof err);
    rnnd_session **all = NULL;
    size_t n = 0;
    if (!rc && (rc = rnnd_session_collect(app->sessions, &all, &n)))
        snprintf(err, sizeof err, "out of memory listing the sessions");
    if (!rc) {
        if (live) {
            struct live lv = {.w = w, .sessions = app->sessions};
            save_live(all, n, &lv);
            if (lv.failed)
                rc = RNND_ERR_IO;
        } else {
            for (size_t i = 0; i < n && !rc; i++) {
                rnnd_session_info info;
                rnnd_snap_rec rec;
                rnnd_session_get_info(all[i], &info);
                fill(&rec, all[i], &info);
                rnnd_session_info_release(app->sessions, &info, 1);
                rc = rnnd_snap_writer_add(w, &rec);
            }
        }
        if (rc)
            snprintf(err, sizeof err, "%s/%s: a temporary file's write failed", dir,
                     RNND_SNAPSHOT_FILE);
    }
    for (size_t i = 0; i < n; i++)
        rnnd_session_unref(all[i]);
    free(all);
    size_t records = 0, bytes = 0;
    if (!rc)
        rc = rnnd_snap_writer_commit(w, &records, &bytes, err, sizeof err);
    else
        rnnd_snap_writer_abort(w);
    double secs = rnnd_mono_s() - t0;
    rnnd_metrics *m = &app->metrics;
    if (rc) {
        atomic_fetch_add(&m->snapshot_failures, 1);
        char q[600];
        RNND_LOG(&app->log, RNND_LOG_ERROR, "snapshot_failed", "msg=%s",
                 rnnd_log_quote(q, sizeof q, err));
        return rc;
    }
    atomic_fetch_add(&m->snapshots, 1);
    atomic_store(&m->snapshot_bytes, bytes);
    atomic_store(&m->snapshot_sessions, records);
    atomic_store(&m->snapshot_usec, (uint64_t)(secs * 1e6));
    RNND_LOG(&app->log, live ? RNND_LOG_DEBUG : RNND_LOG_INFO, "snapshot",
             "sessions=%zu bytes=%zu ms=%.1f live=%d", records, bytes, secs * 1e3, live);
    return RNND_OK;
}

/* ---- restore ----------------------------------------------------------------------------- */

/* The name of the key that owns a session, for logs that must not hold the session's id:
 * "-" without keys, "removed" for a key no longer in the file. */
static const char *owner_name(const rnnd_app *app, uint64_t owner)
{
    if (!owner)
        return "-";
    for (size_t i = 0; i < app->auth.n; i++)
        if (app->auth.keys[i].owner == owner)
            return app->auth.keys[i].name;
    return "removed";
}

/* REC's own fields, with the checks the API applies to the same fields (a crafted or corrupt
 * snapshot must not hand the engine a value no request could set: max_tokens 0 overflowed
 * generate's buffers, a NaN ttl never expired). A value only above a setting lowered since
 * it was saved is lowered to it, as the ttl always was. Returns 0 or RNND_ERR_INVALID with
 * ERR naming the field. */
static int check_fields(const rnnd_app *app, rnnd_snap_rec *rec, char *err, size_t errlen)
{
    int64_t ttl_max = app->cfg->session_ttl_max_s, gen_max = app->cfg->max_generate_tokens;
    int rc = rnnd_session_ttl_check(rec->ttl_s, ttl_max, err, errlen);
    if (rc == RNND_ERR_LIMIT)
        rec->ttl_s = (double)ttl_max;
    else if (rc)
        return RNND_ERR_INVALID;
    if (!isfinite(rec->idle_s) || rec->idle_s < 0) {
        snprintf(err, errlen, "idle_s: expected a finite number >= 0, got %g", rec->idle_s);
        return RNND_ERR_INVALID;
    }
    /* a creation time before 1970 or from the future would print as nonsense in the listing
     * and age the session wrongly; an hour ahead allows for a clock stepped back */
    int64_t now = (int64_t)time(NULL);
    if (rec->created < 0 || rec->created > now + CREATED_AHEAD_S) {
        snprintf(err, errlen,
                 "created: expected unix seconds from 0 to %" PRId64 " (now + "
                 "%d), got %" PRId64,
                 now + CREATED_AHEAD_S, CREATED_AHEAD_S, rec->created);
        return RNND_ERR_INVALID;
    }
    /* the state import takes steps as a JSON integer (int64); listings print them as one */
    if (rec->steps > (uint64_t)INT64_MAX) {
        snprintf(err, errlen, "steps: expected an integer from 0 to %" PRId64 ", got %" PRIu64,
                 INT64_MAX, rec->steps);
        return RNND_ERR_INVALID;
    }
    /* the state import refuses NaN and Inf: a restored state may not hold what no request
     * could put there */
    for (size_t i = 0; i < rec->n_floats; i++)
        if (!isfinite(rec->state[i])) {
            snprintf(err, errlen, "state[%zu]: the number is not finite", i);
            return RNND_ERR_INVALID;
        }
    if (!rec->has_gen)
        return RNND_OK;
    if (rnnd_gen_params_check(&rec->gen, gen_max, err, errlen) == RNND_ERR_LIMIT)
        rec->gen.max_tokens = gen_max;
    return rnnd_gen_params_check(&rec->gen, gen_max, err, errlen) ? RNND_ERR_INVALID : RNND_OK;
}

/* Why REC cannot come back, or NULL when it can (E set). */
static const char *check_rec(rnnd_app *app, const rnnd_snap_rec *rec, rnnd_entry **e)
{
    *e = rnnd_registry_find(&app->models.reg, rec->model); /* start-up: no reload yet */
    if (!*e)
        return "model_gone";
    /* A version 2 snapshot holds file digests: the same file is the same state digest, and
     * any other file (even one whose states would fit) is refused as before the upgrade. */
    if (rec->file_digest ? strcmp((*e)->file_digest, rec->digest) != 0
                         : rnnd_state_digest_match((*e)->model, rec->digest, NULL, 0) != 0)
        return "model_changed";
    if (!(*e)->stateful || rec->n_floats != (*e)->state_floats)
        return "state_mismatch";
    if (rec->idle_s >= rec->ttl_s)
        return "expired";
    return NULL;
}

/* A snapshot that is not this key's, not a regular file, not the daemon user's or too large:
 * none of it is restored, and it is renamed aside, so
 * that the next snapshot does not overwrite what an operator may want to look at (one file:
 * a later refusal replaces it). */
static void refuse(rnnd_app *app, const char *dir, const char *reason, const char *err)
{
    char from[4200], to[4200], q[600], qk[4300];
    snprintf(from, sizeof from, "%s/%s", dir, RNND_SNAPSHOT_FILE);
    snprintf(to, sizeof to, "%s/%s.refused", dir, RNND_SNAPSHOT_FILE);
    int kept = rename(from, to) == 0;
    RNND_LOG(&app->log, RNND_LOG_ERROR, "snapshot_refused", "reason=%s kept=%s msg=%s", reason,
             kept ? rnnd_log_quote(qk, sizeof qk, to) : "-", rnnd_log_quote(q, sizeof q, err));
}

size_t rnnd_persist_restore(rnnd_app *app)
{
    const char *dir = app->cfg->state_dir;
    if (!dir || !*dir)
        return 0;
    double t0 = rnnd_mono_s();
    char err[512], q[600];
    rnnd_snap *snap;
    const char *reason = NULL;
    /* a crash during a snapshot leaves its temporary file, under a new name each time */
    size_t stale = 0;
    if (rnnd_snap_remove_stale(dir, &stale, err, sizeof err))
        RNND_LOG(&app->log, RNND_LOG_WARN, "snapshot_stale_failed", "msg=%s",
                 rnnd_log_quote(q, sizeof q, err));
    else if (stale)
        RNND_LOG(&app->log, RNND_LOG_INFO, "snapshot_stale_removed", "files=%zu", stale);
    size_t cap =
        rnnd_snap_max_bytes((size_t)app->cfg->max_sessions, (size_t)app->cfg->max_state_bytes);
    int rc = rnnd_snap_load(dir, app->snap_key, app->snap_key_created, cap, &snap, &reason, err,
                            sizeof err);
    if (rc == 1) {
        RNND_LOG(&app->log, RNND_LOG_INFO, "restore", "sessions=0 msg=\"no snapshot\"");
        return 0;
    }
    if (rc && reason) {
        refuse(app, dir, reason, err);
        return 0;
    }
    if (rc) {
        RNND_LOG(&app->log, RNND_LOG_ERROR, "snapshot_skipped", "msg=%s",
                 rnnd_log_quote(q, sizeof q, err));
        return 0;
    }
    /* signed, but older than the last snapshot written: one put back to bring deleted
     * sessions (or old states) back */
    int64_t serial = rnnd_snap_serial(snap);
    if (serial < app->snap_serial) {
        snprintf(err, sizeof err,
                 "%s/%s: serial %" PRId64 " is below the last snapshot "
                 "written (%" PRId64 ", %s.serial): an older snapshot put back",
                 dir, RNND_SNAPSHOT_FILE, serial, app->snap_serial,
                 app->snap_key_path ? app->snap_key_path : "-");
        rnnd_snap_free(snap);
        refuse(app, dir, "rolled_back", err);
        return 0;
    }
    if (serial > app->snap_serial)
        app->snap_serial = serial;
    size_t restored = 0, dropped = 0;
    for (size_t i = 0; i < rnnd_snap_count(snap); i++) {
        rnnd_snap_rec rec;
        rnnd_entry *e;
        rnnd_snap_get(snap, i, &rec);
        char bad[256] = "";
        const char *why =
            check_fields(app, &rec, bad, sizeof bad) ? "invalid" : check_rec(app, &rec, &e);
        /* a clockwork counter must be one the engine writes, as the state import checks */
        if (!why && rnnd_state_check_counters(e->model, rec.state, bad, sizeof bad))
            why = "invalid";
        rnnd_session *s = NULL;
        if (!why) {
            rnnd_session_init si = {.model = e,
                                    .state_floats = e->state_floats,
                                    .state = rec.state,
                                    .owner = rec.owner,
                                    .steps = rec.steps,
                                    .ttl_s = rec.ttl_s,
                                    .id = rec.id,
                                    .created = rec.created,
                                    .idle_s = rec.idle_s};
            if (rnnd_session_create(app->sessions, &si, &s, err, sizeof err))
                why = "refused";
        }
        if (why) {
            char qm[300];
            dropped++;
            /* never the id (docs/security.md): its record number and key say which */
            RNND_LOG(&app->log, RNND_LOG_WARN, "session_dropped",
                     "record=%zu key=%s model=%s reason=%s%s%s", i, owner_name(app, rec.owner),
                     rnnd_log_quote_ids(q, sizeof q, rec.model), why, bad[0] ? " msg=" : "",
                     bad[0] ? rnnd_log_quote_ids(qm, sizeof qm, bad) : "");
            continue;
        }
        if (rec.has_gen) {
            rnnd_gen_params *gen = malloc(sizeof *gen);
            if (gen) {
                *gen = rec.gen;
                rnnd_session_set_ext(s, gen, free);
            }
        }
        rnnd_session_unref(s);
        restored++;
    }
    RNND_LOG(&app->log, RNND_LOG_INFO, "restore",
             "sessions=%zu dropped=%zu bytes=%zu ms=%.1f snapshot_version=%u", restored, dropped,
             rnnd_snap_bytes(snap), (rnnd_mono_s() - t0) * 1e3, rnnd_snap_version(snap));
    rnnd_snap_free(snap);
    return restored;
}
