/* A request for a session this node does not hold, in cluster mode (cluster.h; docs/cluster.md,
 * "Takeover, hand-over, redirect"): acquire its record in Redis and continue from the stored
 * state and step count. A session held by a live node is asked for (cluster_handover.c) and
 * acquired again once its holder released it, or its lease lapsed: the request waits at most
 * lease_ms + 1 s, then answers 503 naming the holder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "cluster.h"
#include "generate.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"

/* Reply to a failed acquisition RC (ERR) or a held record (HOLDER). The reply names no node
 * (clients are not told the topology: docs/cluster.md); the log line names the holder. */
static void reply_unavailable(rnnd_req *r, int rc, const char *err, const char *holder)
{
    const char *inc = holder ? strchr(holder, ' ') : NULL;
    if (holder) {
        rnnd_app *app = rnnd_req_app(r);
        RNND_LOG(&app->log, RNND_LOG_INFO, "session_held", "node=%s holder=%.*s incarnation=%s",
                 app->cluster->node, inc ? (int)(inc - holder) : (int)strlen(holder), holder,
                 inc ? inc + 1 : "?");
        rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                         "session %s is held by another node, which is alive; retry (it moves "
                         "when that node releases it or its lease lapses)",
                         rnnd_req_param(r, 0));
    } else if (rc == RNND_ERR_CONFLICT)
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "this node's lease lapsed; retry");
    else
        rnnd_cluster_reply_store(r, err);
}

void rnnd_cluster_reply_store(rnnd_req *r, const char *err)
{
    const char *why = rnnd_store_reason(err);
    if (why == err)
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "%s", err);
    else
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "the session store cannot be reached (%s); retry",
                         why);
}

/* The idle time of REC by its used_ms, in Redis's clock (the last peek's), at most its ttl:
 * a move keeps a session's idle clock. */
static double record_idle_s(rnnd_cluster *c, const rnnd_store_rec *rec)
{
    long long off = atomic_load(&c->redis_offset_ms);
    double now_ms = rnnd_mono_s() * 1000.0 + (double)off;
    double idle = off && rec->used_ms > 0 ? (now_ms - (double)rec->used_ms) / 1000.0 : 0.0;
    return idle < 0 ? 0 : idle > (double)rec->ttl_s ? (double)rec->ttl_s : idle;
}

/* Make the session of the record A (just acquired at A->epoch) on this node. Returns it (one
 * reference) or NULL, replied. */
static rnnd_session *from_record(rnnd_req *r, rnnd_cluster *c, rnnd_store_acq *a, unsigned lapses)
{
    rnnd_app *app = c->app;
    const char *id = rnnd_req_param(r, 0);
    char name[256] = "", err[512] = "";
    for (size_t i = 0; i < a->n; i++)
        if (!strcmp(a->kv[i].name, "model"))
            snprintf(name, sizeof name, "%.*s", (int)a->kv[i].len, a->kv[i].val);
    rnnd_entry *e = rnnd_catalog_get(&app->models, name);
    if (!e) {
        rnnd_reply_error(r, RNND_E_CONFLICT,
                         "session %s is of model \"%.64s\", which this node has not loaded", id,
                         name);
        return NULL;
    }
    rnnd_session *s = NULL;
    float *state = malloc((e->state_floats ? e->state_floats : 1) * sizeof *state);
    rnnd_gen_params gen, *defaults = NULL;
    rnnd_store_rec rec;
    rnnd_store_limits lim = {app->cfg->session_ttl_max_s, app->cfg->max_generate_tokens};
    int rc = state
        ? rnnd_store_rec_decode(a->kv, a->n, e->model, &lim, &rec, state, &gen, err, sizeof err)
        : rnnd_fail(RNND_ERR_NOMEM, err, sizeof err, "out of memory");
    if (!rc && rec.has_gen && !(defaults = malloc(sizeof *defaults)))
        rc = rnnd_fail(RNND_ERR_NOMEM, err, sizeof err, "out of memory");
    rnnd_sync_slot *slot = rc ? NULL : calloc(1, sizeof *slot);
    if (!rc && !slot)
        rc = rnnd_fail(RNND_ERR_NOMEM, err, sizeof err, "out of memory");
    if (!rc && record_idle_s(c, &rec) >= (double)rec.ttl_s) {
        /* idle past its ttl by the record's used_ms (Redis's clock): it expired; its record
         * goes now (held here at A->epoch), with the tombstone, never loaded */
        char why[48];
        snprintf(why, sizeof why, "expired %016llx", (unsigned long long)rec.owner);
        int grc = rnnd_store_gone(c->req, id, a->epoch, 0, why, c->tombstone_ms, err, sizeof err);
        rnnd_sync_note(c, grc, err);
        if (c->tombstone_ms > 0)
            rnnd_reply_error(r, RNND_E_GONE, "session %s expired; its state is lost", id);
        else
            rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id);
        free(slot);
        free(defaults);
        free(state);
        rnnd_entry_unref(e);
        return NULL;
    }
    if (!rc) {
        rnnd_session_init si = {.model = e,
                                .state_floats = e->state_floats,
                                .state = state,
                                .owner = rec.owner,
                                .steps = rec.steps,
                                .ttl_s = (double)rec.ttl_s,
                                .id = id,
                                .created = rec.created,
                                .idle_s = record_idle_s(c, &rec)};
        rc = rnnd_session_create(app->sessions, &si, &s, err, sizeof err);
    }
    if (rc) {
        if (rc != RNND_ERR_CONFLICT && rc != RNND_ERR_LIMIT && rc != RNND_ERR_NOMEM)
            RNND_LOG(&app->log, RNND_LOG_WARN, "session_dropped", "node=%s reason=invalid",
                     c->node);
        rnnd_reply_error(r,
                         rc == RNND_ERR_LIMIT          ? RNND_E_OVERLOADED
                             : rc == RNND_ERR_CONFLICT ? RNND_E_CONFLICT
                                                       : RNND_E_UNAVAILABLE,
                         "%s", err);
        free(defaults);
        free(slot);
    } else {
        if (defaults) {
            *defaults = gen;
            rnnd_session_set_ext(s, defaults, free);
        }
        slot->epoch = a->epoch;
        slot->seq = rec.seq;
        slot->held = 1;
        slot->confirmed = lapses;
        slot->lost_seen = atomic_load(&c->lost);
        rnnd_session_set_sync(s, slot);
        atomic_fetch_add(&c->stats.takeovers[a->from_dead ? 1 : 0], 1);
        RNND_LOG(&app->log, RNND_LOG_INFO, "session_taken", "node=%s from=%s", c->node,
                 a->from_dead ? "dead" : "free");
    }
    free(state);
    rnnd_entry_unref(e);
    return s;
}

/* "\nNAME DIGEST\n..." of the models this node has loaded (malloc'd), for the acquisition to
 * leave a record of any other model where it is; NULL (out of memory): no such check. */
static char *models_list(rnnd_app *app)
{
    rnnd_registry reg;
    if (rnnd_catalog_copy(&app->models, &reg))
        return NULL;
    size_t len = 2;
    for (size_t i = 0; i < reg.n; i++)
        len += strlen(reg.entries[i]->name) + strlen(reg.entries[i]->digest) + 2;
    char *list = malloc(len), *p = list;
    if (list) {
        *p++ = '\n';
        for (size_t i = 0; i < reg.n; i++)
            p += sprintf(p, "%s %s\n", reg.entries[i]->name, reg.entries[i]->digest);
        *p = '\0';
    }
    rnnd_registry_free(&reg);
    return list;
}

/* Whether this node has no room for one more session and would refuse it (session_evict =
 * reject): checked before a take, so that a full node leaves the session where it is. */
static int full(rnnd_cluster *c)
{
    const rnnd_config *cfg = c->app->cfg;
    if (cfg->session_evict == RNND_EVICT_LRU)
        return 0;
    rnnd_session_stats st;
    rnnd_session_table_stats(c->app->sessions, &st);
    return st.sessions >= (size_t)cfg->max_sessions;
}

/* Whether a holder whose lease key is missing may be taken for dead: only once Redis has
 * answered this node for lease_ms + 1 s on end. Right after an outage (a Redis restart drops
 * every lease key) the holder may be alive with steps Redis has not seen, about to take its
 * lease again and write them; until then it counts as live and is asked for a hand-over. */
static int dead_known(rnnd_cluster *c)
{
    long long since = atomic_load(&c->up_since_us);
    return atomic_load(&c->up) &&
        rnnd_mono_s() * 1e6 - (double)since >= (double)(c->lease_ms + 1000) * 1000.0;
}

/* The record of ID this node acquired at EPOCH could not be made a session here: give it
 * back untouched (its holder emptied; TTL and idle time kept), so that the next node takes
 * it, rather than holding a session nobody can reach. */
static void give_back(rnnd_cluster *c, const char *id, uint64_t epoch)
{
    char err[512] = "";
    int rc = rnnd_store_release(c->req, id, epoch, -1, -1, err, sizeof err);
    rnnd_sync_note(c, rc, err);
    if (rc && rc != 1) { /* 1: the record is gone (an expired one, deleted) */
        char q[600];
        RNND_LOG(&c->app->log, RNND_LOG_WARN, "session_give_back_failed", "node=%s msg=%s", c->node,
                 rnnd_log_quote(q, sizeof q, err));
    }
}

/* Reply 409 to a record of model NAME, DIGEST that this node cannot load (ACQ_MODEL). */
static void reply_model(rnnd_req *r, rnnd_cluster *c, const rnnd_store_acq *a)
{
    const char *id = rnnd_req_param(r, 0);
    char err[512] = "";
    rnnd_entry *e = rnnd_catalog_get(&c->app->models, a->model);
    if (!e)
        rnnd_reply_error(r, RNND_E_CONFLICT,
                         "session %s is of model \"%.64s\", which this node has not loaded", id,
                         a->model);
    else if (rnnd_state_digest_match(e->model, a->digest, err, sizeof err))
        rnnd_reply_error(r, RNND_E_CONFLICT, "%s", err);
    else /* loaded meanwhile (a reload) */
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "the session's record changed; retry");
    rnnd_entry_unref(e);
}

/* Acquire the id of R for this node (CACHED: the local copy S, not held, or NULL) and return
 * the session to serve, one reference, or NULL: replied, or, held by a live node, HOLDER
 * (RNND_STORE_HOLDER_MAX + 1 bytes) names it, not replied. Holds take_mu. */
static rnnd_session *take_locked(rnnd_req *r, rnnd_cluster *c, rnnd_session *cached, char *holder)
{
    const char *id = rnnd_req_param(r, 0);
    rnnd_sync_slot *slot = cached ? rnnd_session_sync(cached) : NULL;
    uint64_t seq = 0;
    if (slot) {
        pthread_mutex_lock(&c->mu);
        seq = slot->seq;
        pthread_mutex_unlock(&c->mu);
    }
    if (!cached && full(c)) { /* before asking anyone: the session stays where it is */
        rnnd_reply_error(r, RNND_E_OVERLOADED, "too many sessions (max_sessions = %lld)",
                         (long long)c->app->cfg->max_sessions);
        return NULL;
    }
    rnnd_store_acq a;
    char err[512] = "";
    unsigned lapses = atomic_load(&c->lapses);
    char *models = models_list(c->app);
    rnnd_store_take how = {dead_known(c), models};
    int rc = rnnd_store_acquire(c->req, id, seq, &how, &a, err, sizeof err);
    if (rc == RNND_ERR_CONFLICT) { /* our lease lapsed: take it again, then retry once */
        rnnd_cluster_lapsed(c);
        lapses = atomic_load(&c->lapses);
        rc = rnnd_store_reregister(c->lease, err, sizeof err);
        how.dead_ok = dead_known(c);
        if (!rc)
            rc = rnnd_store_acquire(c->req, id, seq, &how, &a, err, sizeof err);
    }
    free(models);
    rnnd_sync_note(c, rc, err);
    rnnd_session *s = NULL;
    if (rc) {
        reply_unavailable(r, rc, err, NULL);
    } else if (a.kind == RNND_STORE_ACQ_MODEL) {
        reply_model(r, c, &a);
    } else if (a.kind == RNND_STORE_ACQ_HELD) {
        snprintf(holder, RNND_STORE_HOLDER_MAX + 1, "%s", a.holder);
    } else if (a.kind == RNND_STORE_ACQ_MISSING) {
        if (cached)
            rnnd_session_remove(c->app->sessions, id);
        if (a.gone[0])
            rnnd_reply_error(r, RNND_E_GONE, "session %s %s; its state is lost", id,
                             strncmp(a.gone, "evicted", 7) ? "expired" : "was evicted");
        else
            rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id);
    } else if (a.kind == RNND_STORE_ACQ_CURRENT && cached) {
        pthread_mutex_lock(&c->mu);
        slot->epoch = a.epoch;
        slot->held = 1;
        slot->confirmed = lapses;
        slot->lost_seen = atomic_load(&c->lost);
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_add(&c->stats.takeovers[a.from_dead ? 1 : 0], 1);
        s = rnnd_session_ref(cached);
    } else {
        if (cached) /* changed elsewhere since: the record wins */
            rnnd_session_remove(c->app->sessions, id);
        if (a.kind == RNND_STORE_ACQ_TAKEN && !(s = from_record(r, c, &a, lapses)))
            give_back(c, id, a.epoch);
        else if (a.kind != RNND_STORE_ACQ_TAKEN)
            rnnd_reply_error(r, RNND_E_UNAVAILABLE, "the session's record changed; retry");
    }
    rnnd_store_acq_free(&a);
    return s;
}

/* Whether S (found in the table) is held here, and not being handed over: a session
 * without a slot is this node's own. */
static int held_here(rnnd_cluster *c, rnnd_session *s)
{
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!slot)
        return 1;
    pthread_mutex_lock(&c->mu);
    int held = slot->held && !slot->giving;
    pthread_mutex_unlock(&c->mu);
    return held;
}

/* Whether S's hand-over to another node is under way (its copy about to be dropped). */
static int giving(rnnd_cluster *c, rnnd_session *s)
{
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!slot)
        return 0;
    pthread_mutex_lock(&c->mu);
    int g = slot->giving;
    pthread_mutex_unlock(&c->mu);
    return g;
}

/* Whether S, held here, must be confirmed before it is served: the node lease lapsed since
 * its hold was last confirmed, or it is past the time the lease is surely ours (a pause).
 * While Redis is down nobody can take it (taking needs Redis): served from memory. */
static int needs_confirm(rnnd_cluster *c, rnnd_session *s)
{
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    if (!slot || !atomic_load(&c->up))
        return 0;
    unsigned lapses = atomic_load(&c->lapses);
    pthread_mutex_lock(&c->mu);
    int stale = slot->held && slot->confirmed != lapses;
    pthread_mutex_unlock(&c->mu);
    return stale || rnnd_mono_s() * 1e6 > (double)atomic_load(&c->lease_until_us);
}

/* Check that the record still names this node at S's epoch. Returns 1 when it does (or
 * Redis could not say: served from memory, as while Redis is down; or Redis lost its data:
 * written anew), 0 when the session was taken or deleted elsewhere: S is then dropped from
 * this node. */
static int confirm(rnnd_cluster *c, rnnd_session *s)
{
    rnnd_sync_slot *slot = rnnd_session_sync(s);
    unsigned lapses = atomic_load(&c->lapses);
    rnnd_store_acq a;
    char err[512] = "", me[RNND_STORE_HOLDER_MAX + 1];
    int rc = rnnd_store_load(c->req, rnnd_session_id(s), &a, err, sizeof err);
    rnnd_sync_note(c, rc, err);
    if (rc)
        return 1;
    if (a.kind == RNND_STORE_ACQ_MISSING && rnnd_sync_lost(c, c->req, s)) {
        /* Redis lost its data, not another node's delete: kept, and written anew */
        pthread_mutex_lock(&c->mu);
        slot->confirmed = lapses;
        pthread_mutex_unlock(&c->mu);
        return 1;
    }
    rnnd_store_holder(c->req, me);
    char holder[RNND_STORE_HOLDER_MAX + 1] = "", epoch[24] = "";
    for (size_t i = 0; a.kind == RNND_STORE_ACQ_TAKEN && i < a.n; i++) {
        if (!strcmp(a.kv[i].name, "holder"))
            snprintf(holder, sizeof holder, "%.*s", (int)a.kv[i].len, a.kv[i].val);
        else if (!strcmp(a.kv[i].name, "epoch"))
            snprintf(epoch, sizeof epoch, "%.*s", (int)a.kv[i].len, a.kv[i].val);
    }
    rnnd_store_acq_free(&a);
    char mine[24];
    pthread_mutex_lock(&c->mu);
    snprintf(mine, sizeof mine, "%llu", (unsigned long long)slot->epoch);
    int ours = slot->held && !strcmp(holder, me) && !strcmp(epoch, mine);
    if (ours)
        slot->confirmed = lapses;
    pthread_mutex_unlock(&c->mu);
    if (!ours)
        rnnd_sync_drop(c, s);
    return ours;
}

/* One acquisition of R's id (under take_mu): a rnnd_lookup value with *S, -1 (replied),
 * -2 when a live node holds it (HOLDER), or -3 while this node hands it over (wait: the
 * record may already name the asker, and acquiring now would fence the hand-over's
 * write). */
static int take_once(rnnd_req *r, rnnd_cluster *c, rnnd_session **s, char *holder)
{
    rnnd_app *app = c->app;
    const char *id = rnnd_req_param(r, 0);
    holder[0] = '\0';
    /* one take at a time: looked up again under take_mu, another request may have taken it
     * meanwhile */
    pthread_mutex_lock(&c->take_mu);
    int why = rnnd_session_get(app->sessions, id, s);
    if (why == RNND_SESSION_FOUND && giving(c, *s)) {
        rnnd_session_unref(*s);
        *s = NULL;
        why = -3;
    } else if (why == RNND_SESSION_FOUND && !held_here(c, *s)) {
        rnnd_session *t = take_locked(r, c, *s, holder);
        rnnd_session_unref(*s);
        *s = t;
        why = t ? RNND_SESSION_FOUND : -1;
    } else if (why == RNND_SESSION_MISSING) {
        *s = take_locked(r, c, NULL, holder);
        why = *s ? RNND_SESSION_FOUND : -1;
    }
    pthread_mutex_unlock(&c->take_mu);
    return why == -1 && holder[0] ? -2 : why;
}

/* R's id is not held here: take it, asking its live holder to hand it over and acquiring
 * again until it is released, or its holder's lease lapses, at most lease_ms + 1 s (the
 * request's thread waits, holding no lock). Returns a rnnd_lookup value with *S, or -1
 * (replied). */
static int take_or_ask(rnnd_req *r, rnnd_cluster *c, rnnd_session **s)
{
    const char *id = rnnd_req_param(r, 0);
    char holder[RNND_STORE_HOLDER_MAX + 1];
    double t0 = rnnd_mono_s(), asked = -1.0;
    double until = t0 + (double)(c->lease_ms + 1000) / 1000.0;
    long pause_us = 200;
    for (;;) {
        int why = take_once(r, c, s, holder);
        if (why != -2 && why != -3) {
            if (why == RNND_SESSION_FOUND && asked >= 0.0)
                atomic_fetch_add(&c->stats.handovers[1], 1);
            return why;
        }
        double now = rnnd_mono_s();
        if (now >= until) {
            if (why == -3)
                rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                                 "the session is being handed to another node; retry");
            else
                reply_unavailable(r, 0, "", holder);
            return -1;
        }
        /* asked again every 250 ms: a request published while the holder's listener
         * reconnected is lost */
        if (why == -2 && (asked < 0.0 || now - asked >= 0.25)) {
            char err[512] = "";
            int rc = rnnd_handover_ask(c, holder, id, err, sizeof err);
            if (rc) { /* nobody listens (dead: only its lease lapsing frees it), or Redis down */
                reply_unavailable(r, rc == RNND_ERR_BUSY ? 0 : rc, err,
                                  rc == RNND_ERR_BUSY ? holder : NULL);
                return -1;
            }
            asked = now;
        }
        struct timespec ts = {0, pause_us * 1000L};
        nanosleep(&ts, NULL);
        pause_us = pause_us < 20000 ? 2 * pause_us : 20000;
    }
}

/* Before R's id is taken here: RNND_SESSION_MISSING to go on and take it; RNND_SESSION_EXPIRED
 * or _EVICTED when it expired or was evicted here and its record is not deleted yet (the
 * answer the table gives below); -1, replied: Redis down, or the record is another API key's
 * (AS: the caller's owner, NULL for admin), which must not move, nor be refreshed, by a
 * request it refuses. Notes Redis's clock, to which a taken session's idle time is measured
 * (its record's used_ms). */
static int before_take(rnnd_req *r, rnnd_cluster *c, const uint64_t *as)
{
    const char *id = rnnd_req_param(r, 0);
    int gone = rnnd_sync_ended_pending(c, id);
    if (gone)
        return gone;
    char owner[17] = "", err[512] = "";
    int64_t now_ms = 0;
    int rc = rnnd_store_peek(c->req, id, owner, &now_ms, err, sizeof err);
    rnnd_sync_note(c, rc, err);
    if (rc) {
        reply_unavailable(r, rc, err, NULL);
        return -1;
    }
    atomic_store(&c->redis_offset_ms, (long long)(now_ms - (int64_t)(rnnd_mono_s() * 1000.0)));
    if (as && owner[0] && strtoull(owner, NULL, 16) != *as) {
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id);
        return -1;
    }
    return RNND_SESSION_MISSING;
}

int rnnd_cluster_lookup_quick(struct rnnd_app *app, const char *id)
{
    rnnd_cluster *c = app->cluster;
    if (!c || !rnnd_id_valid(id))
        return 1;
    rnnd_session *s = NULL;
    int why = rnnd_session_get(app->sessions, id, &s);
    if (why != RNND_SESSION_FOUND)
        return why != RNND_SESSION_MISSING; /* expired or evicted here: the table answers */
    int quick = held_here(c, s) && !needs_confirm(c, s);
    rnnd_session_unref(s);
    return quick;
}

rnnd_session *rnnd_cluster_lookup(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_cluster *c = app->cluster;
    const char *id = rnnd_req_param(r, 0);
    uint64_t owner = rnnd_req_owner(r);
    const uint64_t *as = rnnd_req_admin(r) ? NULL : &owner;
    if (!rnnd_id_valid(id)) {
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id);
        return NULL;
    }
    rnnd_session *s = NULL;
    int why = rnnd_session_get(app->sessions, id, &s);
    /* the common case, a session held here, takes no lock of the cluster's but mu */
    if (why == RNND_SESSION_FOUND &&
        (!held_here(c, s) || (needs_confirm(c, s) && !confirm(c, s)))) {
        /* not ours, or no longer: taken while this node was paused or cut off */
        rnnd_session_unref(s);
        s = NULL;
        why = RNND_SESSION_MISSING;
    }
    if (why == RNND_SESSION_MISSING && atomic_load(&c->draining)) {
        rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                         "this node is draining and takes no session; retry (another node "
                         "will)");
        return NULL;
    }
    if (why == RNND_SESSION_MISSING && (why = before_take(r, c, as)) == RNND_SESSION_MISSING)
        why = take_or_ask(r, c, &s);
    if (why == RNND_SESSION_FOUND && rnnd_session_idle_s(s) >= rnnd_session_ttl(s)) {
        /* idle past its ttl by the record's used_ms (Redis's clock): expired, as the table
         * says below (its gone hook deletes the record) */
        rnnd_session_unref(s);
        s = NULL;
        why = RNND_SESSION_EXPIRED;
    }
    if (why == RNND_SESSION_FOUND && as && rnnd_session_owner(s) != *as) {
        rnnd_session_unref(s);
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id);
        return NULL;
    }
    if (why == RNND_SESSION_FOUND || why < 0)
        return s;
    /* expired or evicted here: the table's answer, as the embedded default gives it */
    why = rnnd_session_get_as(app->sessions, id, as, &s);
    if (why == RNND_SESSION_FOUND) /* came back meanwhile */
        return s;
    if (why == RNND_SESSION_EXPIRED || why == RNND_SESSION_EVICTED)
        rnnd_reply_error(r, RNND_E_GONE, "session %s %s; its state is lost", id,
                         why == RNND_SESSION_EXPIRED ? "expired" : "was evicted");
    else
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id);
    return NULL;
}
