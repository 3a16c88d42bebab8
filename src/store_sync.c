/* Sessions written to Redis (cluster.h; docs/cluster.md, "Write-behind"): at once on create,
 * fork, reset, import and delete, behind after steps, and released at shutdown.
 *
 * The write-behind thread wakes every store_sync_ms, takes the dirty list and queues a job on
 * each session: the job copies the state when it reaches the head of the session's queue and
 * stays there (PENDING) while the thread writes it, so a write never holds half a request's
 * steps and writes of one session reach Redis in the order of its requests (a reset's write,
 * a job too, cannot be overtaken by an older write-behind). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "cluster.h"
#include "generate.h"
#include "http.h"
#include "rnnd/status.h"

/* A step request waiting for its write (write-through). */
struct rnnd_sync_waiter {
    struct rnnd_sync_waiter *next;
    rnnd_req *r;
};

/* A session expired or evicted here, its record still to delete (rnnd_store_gone). */
struct rnnd_sync_end {
    struct rnnd_sync_end *next;
    char id[RNND_ID_LEN + 1];
    char why[48]; /* the tombstone: "expired OWNER" / "evicted OWNER" */
    int reason;   /* RNND_SESSION_EXPIRED / _EVICTED */
    uint64_t epoch, seq;
};

#define SWEEP_EVERY_S 1.0 /* one page of rnnd:idx checked per second */
#define SWEEP_COUNT 200

struct rnnd_sync_job {
    rnnd_job job; /* first member */
    struct rnnd_sync_job *next;
    rnnd_cluster *c;
    rnnd_session *s; /* one reference */
    rnnd_store_fields f;
    rnnd_store_rec rec; /* a restore's: F's model and digest point into it */
    int enc_rc, held, restore;
    uint64_t epoch;
    int64_t idle_ms; /* the session's idle time at the copy */
};

void rnnd_sync_note(rnnd_cluster *c, int rc, const char *err)
{
    rnnd_log *log = &c->app->log;
    if (rc == RNND_ERR_IO) {
        if (atomic_exchange(&c->up, 0)) {
            char q[600];
            RNND_LOG(log, RNND_LOG_WARN, "store_down", "node=%s msg=%s", c->node,
                     rnnd_log_quote(q, sizeof q, err));
        }
    } else if (!atomic_exchange(&c->up, 1)) {
        atomic_store(&c->up_since_us, (long long)(rnnd_mono_s() * 1e6));
        RNND_LOG(log, RNND_LOG_INFO, "store_up", "node=%s", c->node);
    }
}

/* S's idle time now, in ms: a write stores its last use in Redis's clock (used_ms). */
static int64_t idle_ms(rnnd_session *s) { return (int64_t)(rnnd_session_idle_s(s) * 1000.0); }

/* The record's TTL: the session's idle ttl, and its tombstone's time after it. */
static int64_t ttl_ms(const rnnd_cluster *c, const rnnd_session *s)
{
    return (int64_t)(rnnd_session_ttl(s) * 1000.0) + c->tombstone_ms;
}

/* S's fields of kind WHAT into F, with STATE and STEPS (not necessarily S's own yet). F's
 * model and digest point into REC: keep it until the write. */
static int encode_rec(rnnd_cluster *c, rnnd_session *s, const float *state, uint64_t steps,
                      const rnnd_gen_params *gen, enum rnnd_store_enc what, rnnd_store_rec *recp,
                      rnnd_store_fields *f, char *err, size_t errlen)
{
    const rnnd_entry *e = rnnd_session_model(s);
    rnnd_store_rec rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.model, sizeof rec.model, "%s", e->name);
    snprintf(rec.digest, sizeof rec.digest, "%s", e->digest);
    rec.owner = rnnd_session_owner(s);
    rec.steps = steps;
    rec.ttl_s = (int64_t)rnnd_session_ttl(s);
    rec.has_gen = gen != NULL;
    rec.state = state;
    rec.n_floats = e->state_floats;
    if (what == RNND_STORE_ENC_ALL) {
        rnnd_session_info info;
        rnnd_session_get_info(s, &info);
        rec.created = info.created;
        rnnd_session_info_release(c->app->sessions, &info, 1);
    }
    *recp = rec;
    return rnnd_store_rec_encode(recp, gen, what, f, err, errlen);
}

/* A step's fields (steps and state: nothing of them points into a record). */
static int encode(rnnd_cluster *c, rnnd_session *s, const float *state, uint64_t steps,
                  rnnd_store_fields *f, char *err, size_t errlen)
{
    rnnd_store_rec rec;
    return encode_rec(c, s, state, steps, NULL, RNND_STORE_ENC_STEP, &rec, f, err, errlen);
}

int rnnd_sync_created(rnnd_cluster *c, rnnd_session *s, const rnnd_gen_params *gen, char *err,
                      size_t errlen)
{
    if (!c)
        return 0;
    if (atomic_load(&c->draining))
        return rnnd_fail(RNND_ERR_IO, err, errlen,
                         "this node is draining: it takes no new session; retry (another node "
                         "will)");
    rnnd_store_fields f;
    memset(&f, 0, sizeof f);
    rnnd_store_rec rec;
    int rc = encode_rec(c, s, rnnd_session_state(s), rnnd_session_steps(s), gen, RNND_STORE_ENC_ALL,
                        &rec, &f, err, errlen);
    if (!rc) {
        double t0 = rnnd_mono_s();
        rc = rnnd_store_create(c->req, rnnd_session_id(s), &f, ttl_ms(c, s), 0, err, errlen);
        rnnd_cluster_count_round(c, t0);
        rnnd_cluster_count_write(c, RNND_CW_CREATE, rc);
        rnnd_sync_note(c, rc, err);
    }
    rnnd_store_fields_free(&f);
    /* the record is the session now: this node keeps no copy (no slot in max_sessions, the
     * list or the LRU, and nothing to expire here while another node uses it); the node the
     * id hashes to takes it from Redis at its first request, this one included */
    if (!rc)
        rnnd_session_remove(c->app->sessions, rnnd_session_id(s));
    return rc;
}

void rnnd_sync_dirty(rnnd_cluster *c, rnnd_session *s)
{
    if (!c)
        return;
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!slot)
        return;
    pthread_mutex_lock(&c->mu);
    if (slot->held && !slot->dirty) {
        if (c->n_dirty == c->cap_dirty) {
            size_t cap = c->cap_dirty ? 2 * c->cap_dirty : 64;
            rnnd_session **d = realloc(c->dirty, cap * sizeof *d);
            if (!d) {
                /* not written behind: the release at shutdown or the next step's mark
                 * writes it */
                pthread_mutex_unlock(&c->mu);
                return;
            }
            c->dirty = d;
            c->cap_dirty = cap;
        }
        c->dirty[c->n_dirty++] = rnnd_session_ref(s);
        slot->dirty = 1;
    }
    pthread_mutex_unlock(&c->mu);
}

void rnnd_sync_complete(rnnd_cluster *c, rnnd_session *s, rnnd_req *r)
{
    rnnd_sync_slot *slot = c && !c->sync_ms ? rnnd_session_sync(s) : NULL;
    struct rnnd_sync_waiter *w = slot ? malloc(sizeof *w) : NULL;
    if (w) {
        w->r = r;
        pthread_mutex_lock(&c->mu);
        /* a waiter taken by a round is completed at that round's end, after every write it
         * made: S is dirty in that round's list, or its copy job starts after this step */
        int wait = slot->held && !c->stop;
        if (wait) {
            w->next = c->waiters;
            c->waiters = w;
            pthread_cond_broadcast(&c->cond);
        }
        pthread_mutex_unlock(&c->mu);
        if (wait)
            return;
        free(w);
    }
    rnnd_req_complete(r);
}

/* Complete the waiters of the list W (their writes are done, or failed: a failed write is
 * retried behind, the reply does not wait for Redis to return). */
static void complete_waiters(struct rnnd_sync_waiter *w)
{
    while (w) {
        struct rnnd_sync_waiter *next = w->next;
        rnnd_req_complete(w->r);
        free(w);
        w = next;
    }
}

/* S is no longer held here, at its step count now (the head job's, or the last one's). */
static void let_go(rnnd_cluster *c, rnnd_session *s)
{
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!slot)
        return;
    uint64_t steps = rnnd_session_steps(s); /* the session's lock: not under mu */
    pthread_mutex_lock(&c->mu);
    slot->held = 0;
    slot->gone_steps = steps;
    pthread_mutex_unlock(&c->mu);
}

void rnnd_sync_drop(rnnd_cluster *c, rnnd_session *s)
{
    let_go(c, s);
    rnnd_session_remove(c->app->sessions, rnnd_session_id(s));
    RNND_LOG(&c->app->log, RNND_LOG_INFO, "session_moved", "node=%s", c->node);
}

/* The fenced write of S with FIELDS on STORE at its held epoch (RELEASE: free it after);
 * the outcome as rnnd_sync_write_now's. */
static int fenced_write(rnnd_cluster *c, rnnd_store *store, rnnd_session *s, uint64_t epoch,
                        int release, const rnnd_store_fields *f, char *err, size_t errlen)
{
    rnnd_store_wreq w = {.id = rnnd_session_id(s),
                         .epoch = epoch,
                         .ttl_ms = ttl_ms(c, s),
                         .idle_ms = idle_ms(s),
                         .release = release,
                         .fields = f};
    double t0 = rnnd_mono_s();
    int rc = rnnd_store_write(store, &w, err, errlen);
    uint64_t seq = w.seq;
    rnnd_cluster_count_round(c, t0);
    rnnd_cluster_count_write(c, release ? RNND_CW_RELEASE : RNND_CW_NOW, rc);
    rnnd_sync_note(c, rc, err);
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!rc) {
        pthread_mutex_lock(&c->mu);
        slot->seq = seq;
        pthread_mutex_unlock(&c->mu);
        if (release)
            let_go(c, s);
    } else if (rc == 1 && rnnd_sync_lost(c, store, s)) {
        rc = rnnd_fail(RNND_ERR_IO, err, errlen,
                       "store: Redis lost its data; the session is being written anew; retry");
    } else if (rc == 1) {
        rc = rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                       "the session's record is gone from the store (deleted elsewhere)");
    }
    return rc;
}

/* Whether S is held here, and at which epoch. */
static int held_epoch(rnnd_cluster *c, rnnd_session *s, uint64_t *epoch)
{
    *epoch = 0;
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!slot)
        return 0;
    pthread_mutex_lock(&c->mu);
    int held = slot->held;
    *epoch = slot->epoch;
    pthread_mutex_unlock(&c->mu);
    return held;
}

/* A request queued on S before S left this node (handed over, or dropped) must not change
 * the copy left here: 503, so that its retry reaches S where it is. */
static int moved(char *err, size_t errlen)
{
    return rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                     "the session moved to another node while this request waited; nothing "
                     "was changed; retry");
}

int rnnd_sync_write_now(rnnd_cluster *c, rnnd_session *s, const float *state, uint64_t steps,
                        char *err, size_t errlen)
{
    uint64_t epoch;
    if (!c || !rnnd_session_sync(s))
        return 0;
    if (!held_epoch(c, s, &epoch))
        return moved(err, errlen);
    rnnd_store_fields f;
    memset(&f, 0, sizeof f);
    int rc = encode(c, s, state, steps, &f, err, errlen);
    if (!rc)
        rc = fenced_write(c, c->req, s, epoch, 0, &f, err, errlen);
    rnnd_store_fields_free(&f);
    if (rc == RNND_ERR_CONFLICT)
        rnnd_sync_drop(c, s);
    return rc;
}

int rnnd_sync_delete(rnnd_cluster *c, rnnd_session *s, int *deleted, char *err, size_t errlen)
{
    uint64_t epoch;
    *deleted = 0;
    if (!c || !rnnd_session_sync(s))
        return 0;
    if (!held_epoch(c, s, &epoch))
        return moved(err, errlen);
    double t0 = rnnd_mono_s();
    int rc = rnnd_store_delete(c->req, rnnd_session_id(s), epoch, err, errlen);
    rnnd_cluster_count_round(c, t0);
    rnnd_cluster_count_write(c, RNND_CW_DELETE, rc == 1 ? 0 : rc);
    rnnd_sync_note(c, rc, err);
    *deleted = rc == 0;
    if (rc == 1)
        rc = 0;
    if (rc == RNND_ERR_CONFLICT)
        rnnd_sync_drop(c, s);
    return rc;
}

int rnnd_sync_give(rnnd_cluster *c, rnnd_session *s, char *err, size_t errlen)
{
    uint64_t epoch;
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!held_epoch(c, s, &epoch))
        return 1;
    pthread_mutex_lock(&c->mu);
    slot->giving = 1;
    pthread_mutex_unlock(&c->mu);
    rnnd_store_fields f;
    memset(&f, 0, sizeof f);
    int rc = encode(c, s, rnnd_session_state(s), rnnd_session_steps(s), &f, err, errlen);
    if (!rc)
        rc = fenced_write(c, c->req, s, epoch, 1, &f, err, errlen);
    rnnd_store_fields_free(&f);
    if (!rc)
        rnnd_session_remove(c->app->sessions, rnnd_session_id(s));
    else if (rc == RNND_ERR_CONFLICT)
        rnnd_sync_drop(c, s);
    pthread_mutex_lock(&c->mu);
    slot->giving = 0; /* gone from the table, or still held (Redis down) */
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rnnd_sync_left(rnnd_cluster *c, rnnd_session *s, uint64_t steps)
{
    rnnd_sync_slot *slot = c ? rnnd_session_sync(s) : NULL;
    if (!slot)
        return 0;
    pthread_mutex_lock(&c->mu);
    int left = !slot->held && steps > slot->gone_steps;
    pthread_mutex_unlock(&c->mu);
    return left;
}

/* ---- expiry and eviction: the record deleted --------------------------------------------- */

void rnnd_sync_ended(void *arg, rnnd_session *s, int why)
{
    rnnd_cluster *c = arg;
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    struct rnnd_sync_end *g = slot ? calloc(1, sizeof *g) : NULL;
    if (!g)
        return; /* not stored (or out of memory: the record lives out its TTL) */
    snprintf(g->id, sizeof g->id, "%s", rnnd_session_id(s));
    snprintf(g->why, sizeof g->why, "%s %016llx",
             why == RNND_SESSION_EVICTED ? "evicted" : "expired",
             (unsigned long long)rnnd_session_owner(s));
    g->reason = why;
    pthread_mutex_lock(&c->mu);
    g->epoch = slot->held ? slot->epoch : 0;
    g->seq = slot->seq;
    slot->held = 0;
    g->next = c->ended;
    c->ended = g;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

int rnnd_sync_ended_pending(rnnd_cluster *c, const char *id)
{
    int why = 0;
    pthread_mutex_lock(&c->mu);
    for (const struct rnnd_sync_end *g = c->ended; g && !why; g = g->next)
        if (!strcmp(g->id, id))
            why = g->reason;
    pthread_mutex_unlock(&c->mu);
    return why;
}

void rnnd_sync_ended_free(rnnd_cluster *c)
{
    while (c->ended) {
        struct rnnd_sync_end *g = c->ended;
        c->ended = g->next;
        free(g);
    }
}

/* Delete the records of the sessions expired or evicted here, on STORE; those Redis did not
 * answer for are kept for the next round. */
static void flush_gone(rnnd_cluster *c, rnnd_store *store)
{
    pthread_mutex_lock(&c->mu);
    struct rnnd_sync_end *g = c->ended, *keep = NULL;
    c->ended = NULL;
    pthread_mutex_unlock(&c->mu);
    int rc = 0;
    while (g) {
        struct rnnd_sync_end *next = g->next;
        char err[512] = "";
        if (rc != RNND_ERR_IO) {
            rc = rnnd_store_gone(store, g->id, g->epoch, g->seq, g->why, c->tombstone_ms, err,
                                 sizeof err);
            rnnd_sync_note(c, rc, err);
        }
        if (rc == RNND_ERR_IO) {
            g->next = keep;
            keep = g;
        } else {
            free(g);
        }
        g = next;
    }
    if (keep) {
        pthread_mutex_lock(&c->mu);
        struct rnnd_sync_end **tail = &keep;
        while (*tail)
            tail = &(*tail)->next;
        *tail = c->ended;
        c->ended = keep;
        pthread_mutex_unlock(&c->mu);
    }
}

/* One page of rnnd:idx swept of the ids whose record expired in Redis (a dead node's or a
 * drained one's session nobody asked for again), once a second. */
static void sweep_idx(rnnd_cluster *c)
{
    double now = rnnd_mono_s();
    if (now < c->next_sweep)
        return;
    c->next_sweep = now + SWEEP_EVERY_S;
    char err[512] = "";
    long dropped = 0;
    int rc = rnnd_store_sweep_idx(c->sync, c->sweep_cursor, sizeof c->sweep_cursor, SWEEP_COUNT,
                                  &dropped, err, sizeof err);
    rnnd_sync_note(c, rc, err);
}

void rnnd_sync_restore_all(rnnd_cluster *c)
{
    rnnd_session **all = NULL;
    size_t n = 0;
    if (rnnd_session_collect(c->app->sessions, &all, &n))
        return;
    for (size_t i = 0; i < n; i++) {
        rnnd_sync_slot *slot = rnnd_session_sync(all[i]);
        if (slot) {
            pthread_mutex_lock(&c->mu);
            slot->restore = slot->held;
            pthread_mutex_unlock(&c->mu);
            rnnd_sync_dirty(c, all[i]);
        }
        rnnd_session_unref(all[i]);
    }
    free(all);
}

int rnnd_sync_lost(rnnd_cluster *c, rnnd_store *store, rnnd_session *s)
{
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    char now[RNND_STORE_TOKEN_MAX + 1], err[512] = "";
    int rc = rnnd_store_mark(store, "", now, err, sizeof err);
    rnnd_sync_note(c, rc, err);
    if (rc || !slot)
        return 0;
    pthread_mutex_lock(&c->mu);
    int lost = slot->held && c->token[0] &&
        (strcmp(now, c->token) || slot->lost_seen != atomic_load(&c->lost));
    if (lost)
        slot->restore = 1;
    pthread_mutex_unlock(&c->mu);
    if (lost)
        rnnd_sync_dirty(c, s);
    return lost;
}

int rnnd_sync_gone(rnnd_cluster *c, rnnd_session *s)
{
    rnnd_sync_slot *slot = c ? rnnd_session_sync(s) : NULL;
    if (!slot)
        return 0;
    pthread_mutex_lock(&c->mu);
    int gone = !slot->held;
    pthread_mutex_unlock(&c->mu);
    return gone;
}

/* ---- the write-behind thread --------------------------------------------------------------- */

/* At the head of its session's queue: copy the state and hand the job to the thread, which
 * ends it after the write. */
static int job_start(rnnd_job *job)
{
    struct rnnd_sync_job *j = (struct rnnd_sync_job *)job;
    rnnd_cluster *c = j->c;
    j->held = held_epoch(c, j->s, &j->epoch);
    j->idle_ms = idle_ms(j->s);
    rnnd_sync_slot *slot = rnnd_session_sync(j->s);
    pthread_mutex_lock(&c->mu);
    j->restore = slot->restore;
    pthread_mutex_unlock(&c->mu);
    char err[256];
    if (j->held && j->restore)
        j->enc_rc =
            encode_rec(c, j->s, rnnd_session_state(j->s), rnnd_session_steps(j->s),
                       rnnd_session_ext(j->s), RNND_STORE_ENC_ALL, &j->rec, &j->f, err, sizeof err);
    else if (j->held)
        j->enc_rc = encode(c, j->s, rnnd_session_state(j->s), rnnd_session_steps(j->s), &j->f, err,
                           sizeof err);
    pthread_mutex_lock(&c->mu);
    j->next = c->ready;
    c->ready = j;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return RNND_JOB_PENDING;
}

static void job_finish(rnnd_job *job) { (void)job; /* the thread frees it */ }

/* J's write ended with RC (its record's new SEQ when 0): end its job (the session's next
 * request may start) and act on the outcome. */
static void job_end(rnnd_cluster *c, struct rnnd_sync_job *j, int rc, uint64_t seq)
{
    rnnd_store_fields_free(&j->f);
    if (!rc && j->held) {
        rnnd_sync_slot *slot = rnnd_session_sync(j->s);
        pthread_mutex_lock(&c->mu);
        slot->seq = seq;
        pthread_mutex_unlock(&c->mu);
    }
    rnnd_session_job_done(&j->job);
    if (rc == RNND_ERR_IO)
        rnnd_sync_dirty(c, j->s); /* retried with the next round */
    else if (rc == RNND_ERR_CONFLICT || (rc == 1 && !rnnd_sync_lost(c, c->sync, j->s)))
        rnnd_sync_drop(c, j->s);
    else if (rc)
        RNND_LOG(&c->app->log, RNND_LOG_ERROR, "store_write_failed", "node=%s rc=%d", c->node, rc);
    rnnd_session_unref(j->s);
    free(j);
}

/* J's session anew, whole (Redis lost its data): the outcome as a write's, a record found
 * there meanwhile counting as fenced (nobody can have taken a session without a record). */
static int restore(rnnd_cluster *c, struct rnnd_sync_job *j)
{
    char err[512] = "";
    double t0 = rnnd_mono_s();
    int rc = rnnd_store_restore(c->sync, rnnd_session_id(j->s), j->epoch, &j->f, ttl_ms(c, j->s), 0,
                                err, sizeof err);
    rnnd_cluster_count_round(c, t0);
    rnnd_cluster_count_write(c, RNND_CW_CREATE, rc == 1 ? RNND_ERR_CONFLICT : rc);
    rnnd_sync_note(c, rc, err);
    if (!rc) {
        rnnd_sync_slot *slot = rnnd_session_sync(j->s);
        pthread_mutex_lock(&c->mu);
        slot->restore = 0;
        slot->lost_seen = atomic_load(&c->lost);
        pthread_mutex_unlock(&c->mu);
        RNND_LOG(&c->app->log, RNND_LOG_INFO, "session_restored", "node=%s", c->node);
    }
    return rc == 1 ? RNND_ERR_CONFLICT : rc;
}

/* Write the N jobs of the list J in one pipeline, then end them. */
static void write_batch(rnnd_cluster *c, struct rnnd_sync_job *j, size_t n)
{
    struct rnnd_sync_job **job = malloc(n * sizeof *job);
    rnnd_store_wreq *w = calloc(n, sizeof *w);
    size_t m = 0;
    char err[512] = "";
    int rc = job && w ? 0 : RNND_ERR_NOMEM;
    for (size_t k = 0; job && k < n; k++, j = j->next) {
        job[k] = j;
        if (!w || !j->held || j->enc_rc || j->restore)
            continue;
        w[m] = (rnnd_store_wreq){.id = rnnd_session_id(j->s),
                                 .epoch = j->epoch,
                                 .ttl_ms = ttl_ms(c, j->s),
                                 .idle_ms = j->idle_ms,
                                 .fields = &j->f};
        m++;
    }
    if (!job) { /* out of memory: end each as a failed write, retried later */
        while (j) {
            struct rnnd_sync_job *next = j->next;
            job_end(c, j, RNND_ERR_IO, 0);
            j = next;
        }
        free(w);
        return;
    }
    if (!rc && m) {
        double t0 = rnnd_mono_s();
        rc = rnnd_store_write_many(c->sync, w, m, err, sizeof err);
        rnnd_cluster_count_round(c, t0);
        rnnd_sync_note(c, rc, err);
        for (size_t k = 0; k < m; k++)
            rnnd_cluster_count_write(c, RNND_CW_STEP, rc == RNND_ERR_NOMEM ? rc : w[k].rc);
    }
    for (size_t k = 0, at = 0; k < n; k++) {
        struct rnnd_sync_job *x = job[k];
        if (!x->held)
            job_end(c, x, 0, 0);
        else if (x->restore && !x->enc_rc && w)
            job_end(c, x, restore(c, x), 1);
        else if (x->enc_rc || rc == RNND_ERR_NOMEM)
            job_end(c, x, x->enc_rc ? x->enc_rc : RNND_ERR_IO, 0);
        else {
            job_end(c, x, w[at].rc, w[at].seq);
            at++;
        }
    }
    free(job);
    free(w);
}

/* One round: every dirty session written once, in pipelines of the jobs that reached the
 * head of their sessions' queues meanwhile. */
static void sync_round(rnnd_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    rnnd_session **d = c->dirty;
    size_t n = c->n_dirty;
    struct rnnd_sync_waiter *waiters = c->waiters;
    c->waiters = NULL;
    c->dirty = NULL;
    c->n_dirty = c->cap_dirty = 0;
    pthread_mutex_unlock(&c->mu);
    /* cleared before the job is queued: a request that ends from now on marks the session
     * again, and one that ended before is in the state the job copies */
    for (size_t i = 0; i < n; i++) {
        rnnd_sync_slot *slot = rnnd_session_sync(d[i]); /* the session's lock, not under mu */
        pthread_mutex_lock(&c->mu);
        slot->dirty = 0;
        pthread_mutex_unlock(&c->mu);
    }
    for (size_t i = 0; i < n; i++) {
        struct rnnd_sync_job *j = calloc(1, sizeof *j);
        if (!j) {
            rnnd_sync_dirty(c, d[i]);
            rnnd_session_unref(d[i]);
            continue;
        }
        j->job.start = job_start;
        j->job.finish = job_finish;
        j->job.not_a_use = 1; /* a copy for the write: the session's idle clock runs on */
        j->c = c;
        j->s = d[i];
        pthread_mutex_lock(&c->mu);
        c->outstanding++;
        pthread_mutex_unlock(&c->mu);
        if (rnnd_session_submit(d[i], &j->job) != RNND_SESSION_FOUND) {
            pthread_mutex_lock(&c->mu);
            c->outstanding--;
            pthread_mutex_unlock(&c->mu);
            rnnd_session_unref(d[i]);
            free(j);
        }
    }
    free(d);
    pthread_mutex_lock(&c->mu);
    while (c->outstanding) {
        while (!c->ready)
            pthread_cond_wait(&c->cond, &c->mu);
        struct rnnd_sync_job *batch = c->ready;
        c->ready = NULL;
        size_t k = 0;
        for (struct rnnd_sync_job *x = batch; x; x = x->next)
            k++;
        c->outstanding -= k;
        pthread_mutex_unlock(&c->mu);
        write_batch(c, batch, k);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    complete_waiters(waiters);
}

static void *sync_main(void *arg)
{
    rnnd_cluster *c = arg;
    /* store_sync_ms = 0, write-through: a waiting step wakes the thread; the period only
     * catches writes that nobody waits for (a generate's) */
    int64_t period_ms = c->sync_ms > 0 ? c->sync_ms : 1;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec ts;
        rnnd_mono_deadline(&ts, (long)period_ms * 1000);
        /* wakes for the period or stop; a ready job's broadcast is for a running round */
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        if (c->stop)
            continue;
        int gone = c->ended != NULL, round = c->n_dirty || c->waiters;
        pthread_mutex_unlock(&c->mu);
        if (round)
            sync_round(c);
        if (gone)
            flush_gone(c, c->sync);
        sweep_idx(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int rnnd_sync_thread_start(rnnd_cluster *c)
{
    return pthread_create(&c->sync_thread, NULL, sync_main, c) ? -1 : 0;
}

void rnnd_sync_thread_stop(rnnd_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->sync_thread, NULL);
    /* none is left at a shutdown (the requests end before the threads stop); for safety */
    pthread_mutex_lock(&c->mu);
    struct rnnd_sync_waiter *w = c->waiters;
    c->waiters = NULL;
    pthread_mutex_unlock(&c->mu);
    complete_waiters(w);
}

size_t rnnd_sync_release_all(rnnd_cluster *c, size_t *written)
{
    rnnd_session **all = NULL;
    size_t n = 0, failed = 0, ok = 0;
    if (written)
        *written = 0;
    flush_gone(c, c->sync); /* a session expired here must not come back once we are gone */
    if (rnnd_session_collect(c->app->sessions, &all, &n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        rnnd_session *s = all[i];
        uint64_t epoch;
        if (held_epoch(c, s, &epoch)) {
            char err[512] = "";
            rnnd_store_fields f;
            memset(&f, 0, sizeof f);
            int rc =
                encode(c, s, rnnd_session_state(s), rnnd_session_steps(s), &f, err, sizeof err);
            if (!rc)
                rc = fenced_write(c, c->sync, s, epoch, 1, &f, err, sizeof err);
            rnnd_store_fields_free(&f);
            failed += rc == RNND_ERR_IO || (rc && rc != RNND_ERR_CONFLICT);
            ok += !rc;
        }
        rnnd_session_unref(s);
    }
    free(all);
    if (written)
        *written = ok;
    return failed;
}
