/* The session table (see session.h for the locking and job rules). */
#include "session.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rnnd/status.h"

#define N_STRIPES 64
#define MIN_BUCKETS 16
#define EVICT_TRIES 8

struct rnnd_session {
    char id[RNND_ID_LEN + 1];
    void *model;
    size_t state_floats;
    float *state;
    rnnd_session_table *table;
    atomic_int refs;
    int64_t created;
    double ttl_s;

    pthread_mutex_t mu; /* guards everything below */
    rnnd_job *head, *tail;
    uint64_t steps;
    double last_used;
    int gone;       /* 0 while in the table, else the rnnd_lookup reason */
    uint64_t owner; /* the API key that made it (auth.h), 0 without keys */
    void *ext;      /* rnnd_session_set_ext() */
    void (*ext_free)(void *);
    void *sync; /* rnnd_session_set_sync(), freed with free() */

    rnnd_session *hnext; /* stripe hash chain, under the stripe lock */
};

struct tomb {
    char id[RNND_ID_LEN + 1];
    int reason;
    uint64_t owner; /* the session's: another owner is told "never existed" */
    double until;
    struct tomb *hnext; /* hash chain */
    struct tomb *qnext; /* age order, oldest first */
};

struct stripe {
    pthread_mutex_t mu;
    rnnd_session **buckets;
    size_t nb, n;
    struct tomb **tbuckets;
    size_t tnb, tn;
    struct tomb *qhead, *qtail;
};

struct owner_slot {
    uint64_t owner; /* 0: empty slot */
    size_t n;
};

struct rnnd_session_table {
    rnnd_session_limits lim;
    void (*model_ref)(void *), (*model_unref)(void *);
    void (*gone)(void *arg, rnnd_session *s, int why);
    void *gone_arg;
    rnnd_clock_fn clock;
    void *clock_arg;
    size_t tombs_per_stripe;
    struct stripe stripes[N_STRIPES];

    pthread_mutex_t acct; /* guards the counters below */
    size_t count, bytes;
    struct owner_slot *owners; /* open sessions per owner (open addressing; keys are few) */
    size_t owners_cap, owners_used;
    uint64_t n_created, n_expired, n_evicted, n_deleted, n_rejected;
};

static double mono_now(void *arg)
{
    (void)arg;
    return rnnd_mono_s();
}

void rnnd_session_table_set_model_refs(rnnd_session_table *t, void (*ref)(void *),
                                       void (*unref)(void *))
{
    t->model_ref = ref;
    t->model_unref = unref;
}

double rnnd_session_table_now(const rnnd_session_table *t) { return t->clock(t->clock_arg); }

/* FNV-1a: ids from clients are arbitrary hex, so hash all of it rather than trust it. */
static uint64_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < RNND_ID_LEN && id[i]; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ull;
    }
    return h;
}

static struct stripe *stripe_of(rnnd_session_table *t, uint64_t h) { return &t->stripes[h >> 58]; }

rnnd_session_table *rnnd_session_table_new(const rnnd_session_limits *limits, rnnd_clock_fn clock,
                                           void *clock_arg)
{
    rnnd_session_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->lim = *limits;
    t->clock = clock ? clock : mono_now;
    t->clock_arg = clock_arg;
    t->tombs_per_stripe = (limits->max_tombstones + N_STRIPES - 1) / N_STRIPES;
    pthread_mutex_init(&t->acct, NULL);
    for (int i = 0; i < N_STRIPES; i++) {
        struct stripe *st = &t->stripes[i];
        pthread_mutex_init(&st->mu, NULL);
        st->nb = MIN_BUCKETS;
        st->tnb = MIN_BUCKETS;
        st->buckets = calloc(st->nb, sizeof *st->buckets);
        st->tbuckets = calloc(st->tnb, sizeof *st->tbuckets);
        if (!st->buckets || !st->tbuckets) {
            for (int j = 0; j <= i; j++) {
                free(t->stripes[j].buckets);
                free(t->stripes[j].tbuckets);
                pthread_mutex_destroy(&t->stripes[j].mu);
            }
            pthread_mutex_destroy(&t->acct);
            free(t);
            return NULL;
        }
    }
    return t;
}

static void session_free(rnnd_session *s)
{
    rnnd_session_table *t = s->table;
    pthread_mutex_lock(&t->acct);
    t->bytes -= s->state_floats * sizeof(float);
    pthread_mutex_unlock(&t->acct);
    pthread_mutex_destroy(&s->mu);
    if (t->model_unref)
        t->model_unref(s->model);
    if (s->ext_free)
        s->ext_free(s->ext);
    free(s->sync);
    free(s->state);
    free(s);
}

void rnnd_session_set_ext(rnnd_session *s, void *ext, void (*ext_free)(void *))
{
    pthread_mutex_lock(&s->mu);
    void *old = s->ext;
    void (*old_free)(void *) = s->ext_free;
    s->ext = ext;
    s->ext_free = ext_free;
    pthread_mutex_unlock(&s->mu);
    if (old_free)
        old_free(old);
}

void rnnd_session_set_sync(rnnd_session *s, void *sync)
{
    pthread_mutex_lock(&s->mu);
    void *old = s->sync;
    s->sync = sync;
    pthread_mutex_unlock(&s->mu);
    free(old);
}

void *rnnd_session_sync(rnnd_session *s)
{
    pthread_mutex_lock(&s->mu);
    void *sync = s->sync;
    pthread_mutex_unlock(&s->mu);
    return sync;
}

const void *rnnd_session_ext(rnnd_session *s)
{
    pthread_mutex_lock(&s->mu);
    const void *ext = s->ext;
    pthread_mutex_unlock(&s->mu);
    return ext;
}

rnnd_session *rnnd_session_ref(rnnd_session *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void rnnd_session_unref(rnnd_session *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        session_free(s);
}

/* ---- stripe hash (callers hold the stripe lock) ------------------------------------------ */

static rnnd_session **find_slot_locked(struct stripe *st, uint64_t h, const char *id)
{
    rnnd_session **pp = &st->buckets[h & (st->nb - 1)];
    while (*pp && strcmp((*pp)->id, id))
        pp = &(*pp)->hnext;
    return pp;
}

static void grow_locked(struct stripe *st)
{
    size_t nb = st->nb * 2;
    rnnd_session **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < st->nb; i++) {
        rnnd_session *s = st->buckets[i], *next;
        for (; s; s = next) {
            next = s->hnext;
            size_t k = id_hash(s->id) & (nb - 1);
            s->hnext = b[k];
            b[k] = s;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->nb = nb;
}

/* Put S (hash H) into the free slot PP that find_slot_locked gave, growing the table first
 * when it is twice as full as it has buckets. */
static void link_locked(struct stripe *st, uint64_t h, rnnd_session *s, rnnd_session **pp)
{
    if (st->n >= st->nb * 2) {
        grow_locked(st);
        pp = find_slot_locked(st, h, s->id);
    }
    *pp = s;
    st->n++;
}

static struct tomb **find_tomb_locked(struct stripe *st, uint64_t h, const char *id)
{
    struct tomb **pp = &st->tbuckets[h & (st->tnb - 1)];
    while (*pp && strcmp((*pp)->id, id))
        pp = &(*pp)->hnext;
    return pp;
}

static void tomb_drop_oldest_locked(struct stripe *st)
{
    struct tomb *old = st->qhead;
    st->qhead = old->qnext;
    if (!st->qhead)
        st->qtail = NULL;
    struct tomb **pp = find_tomb_locked(st, id_hash(old->id), old->id);
    if (*pp == old)
        *pp = old->hnext;
    st->tn--;
    free(old);
}

static void tomb_grow_locked(struct stripe *st)
{
    size_t nb = st->tnb * 2;
    struct tomb **b = calloc(nb, sizeof *b);
    if (!b)
        return;
    for (struct tomb *x = st->qhead; x; x = x->qnext) {
        size_t k = id_hash(x->id) & (nb - 1);
        x->hnext = b[k];
        b[k] = x;
    }
    free(st->tbuckets);
    st->tbuckets = b;
    st->tnb = nb;
}

static void tomb_add_locked(rnnd_session_table *t, struct stripe *st, const char *id,
                            uint64_t owner, int reason, double now)
{
    if (!t->tombs_per_stripe || t->lim.tombstone_s <= 0)
        return;
    while (st->tn >= t->tombs_per_stripe)
        tomb_drop_oldest_locked(st);
    struct tomb *x = calloc(1, sizeof *x);
    if (!x)
        return; /* the id will answer 404 rather than 410: acceptable under OOM */
    if (st->tn >= st->tnb * 2)
        tomb_grow_locked(st);
    memcpy(x->id, id, sizeof x->id);
    x->reason = reason;
    x->owner = owner;
    x->until = now + t->lim.tombstone_s;
    size_t k = id_hash(id) & (st->tnb - 1);
    x->hnext = st->tbuckets[k];
    st->tbuckets[k] = x;
    if (st->qtail)
        st->qtail->qnext = x;
    else
        st->qhead = x;
    st->qtail = x;
    st->tn++;
}

static void tomb_purge_locked(struct stripe *st, double now)
{
    /* tombstone_s is fixed, so age order is expiry order */
    while (st->qhead && st->qhead->until <= now)
        tomb_drop_oldest_locked(st);
}

static void owner_dec_locked(rnnd_session_table *t, uint64_t owner);

void rnnd_session_table_set_gone(rnnd_session_table *t,
                                 void (*gone)(void *arg, rnnd_session *s, int why), void *arg)
{
    t->gone = gone;
    t->gone_arg = arg;
}

/* Drop the table's reference to S, unlinked (no lock held), telling the gone hook first
 * when S expired or was evicted. */
static void release_unlinked(rnnd_session_table *t, rnnd_session *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    int why = s->gone;
    pthread_mutex_unlock(&s->mu);
    if (t->gone && (why == RNND_SESSION_EXPIRED || why == RNND_SESSION_EVICTED))
        t->gone(t->gone_arg, s, why);
    rnnd_session_unref(s);
}

/* Unlink *PP (a session of stripe ST) for REASON; the caller holds the stripe lock and the
 * session's lock. The table's reference is handed to the caller through *DROP. */
static void unlink_locked(rnnd_session_table *t, struct stripe *st, rnnd_session **pp, int reason,
                          double now, rnnd_session **drop)
{
    rnnd_session *s = *pp;
    *pp = s->hnext;
    s->hnext = NULL;
    st->n--;
    s->gone = reason;
    if (reason == RNND_SESSION_EXPIRED || reason == RNND_SESSION_EVICTED)
        tomb_add_locked(t, st, s->id, s->owner, reason, now);
    pthread_mutex_lock(&t->acct);
    t->count--;
    owner_dec_locked(t, s->owner);
    if (reason == RNND_SESSION_EXPIRED)
        t->n_expired++;
    else if (reason == RNND_SESSION_EVICTED)
        t->n_evicted++;
    else
        t->n_deleted++;
    pthread_mutex_unlock(&t->acct);
    *drop = s;
}

static int idle_expired_locked(const rnnd_session *s, double now)
{
    return !s->head && now - s->last_used >= s->ttl_s;
}

/* ---- create / lookup / remove ------------------------------------------------------------ */

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The owners that hold more than their fair share of the table: max_sessions divided by the
 * number of owners with sessions open. *OVER (sorted; free it) gets *N of them. Returns 0, or
 * -1 when out of memory. Takes the accounting mutex. */
static int owners_over_share(rnnd_session_table *t, uint64_t **over, size_t *n)
{
    pthread_mutex_lock(&t->acct);
    size_t active = 0, k = 0;
    for (size_t i = 0; i < t->owners_cap; i++)
        active += t->owners[i].owner && t->owners[i].n;
    size_t share = active ? t->lim.max_sessions / active : t->lim.max_sessions;
    uint64_t *o = malloc((active ? active : 1) * sizeof *o);
    for (size_t i = 0; o && i < t->owners_cap; i++)
        if (t->owners[i].owner && t->owners[i].n > share)
            o[k++] = t->owners[i].owner;
    pthread_mutex_unlock(&t->acct);
    if (!o)
        return -1;
    qsort(o, k, sizeof *o, u64_cmp);
    *over = o;
    *n = k;
    return 0;
}

/* Evict the least recently used idle session that a creation by CREATOR may take: one of its
 * own, or one of an owner over its fair share, so that one API key's creations never push
 * out the sessions of a key within its share (without keys every session is owner 0, and
 * this is plain LRU). Returns 1 when one was evicted. */
static int evict_lru(rnnd_session_table *t, uint64_t creator)
{
    uint64_t *over;
    size_t n_over;
    if (owners_over_share(t, &over, &n_over))
        return 0;
    int evicted = 0;
    for (int attempt = 0; attempt < EVICT_TRIES && !evicted; attempt++) {
        char best[RNND_ID_LEN + 1] = "";
        double best_used = 0;
        for (int i = 0; i < N_STRIPES; i++) {
            struct stripe *st = &t->stripes[i];
            pthread_mutex_lock(&st->mu);
            for (size_t b = 0; b < st->nb; b++) {
                for (rnnd_session *s = st->buckets[b]; s; s = s->hnext) {
                    if (s->owner != creator &&
                        !bsearch(&s->owner, over, n_over, sizeof *over, u64_cmp))
                        continue;
                    pthread_mutex_lock(&s->mu);
                    if (!s->head && (!best[0] || s->last_used < best_used)) {
                        best_used = s->last_used;
                        memcpy(best, s->id, sizeof best);
                    }
                    pthread_mutex_unlock(&s->mu);
                }
            }
            pthread_mutex_unlock(&st->mu);
        }
        if (!best[0])
            break;
        uint64_t h = id_hash(best);
        struct stripe *st = stripe_of(t, h);
        rnnd_session *drop = NULL;
        pthread_mutex_lock(&st->mu);
        rnnd_session **pp = find_slot_locked(st, h, best);
        if (*pp) {
            rnnd_session *s = *pp;
            pthread_mutex_lock(&s->mu);
            /* still idle and untouched since the scan: evict it; otherwise scan again */
            if (!s->head && s->last_used == best_used)
                unlink_locked(t, st, pp, RNND_SESSION_EVICTED, t->clock(t->clock_arg), &drop);
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_unlock(&st->mu);
        if (drop) {
            release_unlinked(t, drop);
            evicted = 1;
        }
    }
    free(over);
    return evicted;
}

/* Reserve room for one more session of BYTES, evicting when allowed. */
static int reserve_global(rnnd_session_table *t, uint64_t owner, size_t bytes, char *err,
                          size_t errlen);

/* OWNER's count of open sessions (never 0 OWNER), made when missing; NULL when out of
 * memory. Called with t->acct held. */
static size_t *owner_count_locked(rnnd_session_table *t, uint64_t owner)
{
    if (t->owners_used * 2 >= t->owners_cap) {
        size_t cap = t->owners_cap ? t->owners_cap * 2 : 16;
        struct owner_slot *g = calloc(cap, sizeof *g);
        if (!g)
            return NULL;
        for (size_t i = 0; i < t->owners_cap; i++) {
            if (!t->owners[i].owner)
                continue;
            size_t k = t->owners[i].owner & (cap - 1);
            while (g[k].owner)
                k = (k + 1) & (cap - 1);
            g[k] = t->owners[i];
        }
        free(t->owners);
        t->owners = g;
        t->owners_cap = cap;
    }
    size_t k = owner & (t->owners_cap - 1);
    while (t->owners[k].owner && t->owners[k].owner != owner)
        k = (k + 1) & (t->owners_cap - 1);
    if (!t->owners[k].owner) {
        t->owners[k].owner = owner;
        t->owners_used++;
    }
    return &t->owners[k].n;
}

static void owner_dec_locked(rnnd_session_table *t, uint64_t owner)
{
    if (!owner)
        return;
    size_t *n = owner_count_locked(t, owner);
    if (n && *n)
        (*n)--;
}

static int reserve(rnnd_session_table *t, uint64_t owner, size_t bytes, char *err, size_t errlen)
{
    if (owner) {
        pthread_mutex_lock(&t->acct);
        size_t *n = owner_count_locked(t, owner);
        int over = !n || (t->lim.max_per_owner && *n >= t->lim.max_per_owner);
        if (over)
            t->n_rejected++;
        else
            (*n)++; /* taken back by unreserve if the rest fails */
        pthread_mutex_unlock(&t->acct);
        if (over) {
            if (n)
                snprintf(err, errlen,
                         "this API key has max_sessions_per_key (%zu) sessions "
                         "open",
                         t->lim.max_per_owner);
            else
                snprintf(err, errlen, "out of memory");
            return n ? RNND_ERR_LIMIT : RNND_ERR_NOMEM;
        }
    }
    int rc = reserve_global(t, owner, bytes, err, errlen);
    if (rc && owner) {
        pthread_mutex_lock(&t->acct);
        owner_dec_locked(t, owner);
        pthread_mutex_unlock(&t->acct);
    }
    return rc;
}

static int reserve_global(rnnd_session_table *t, uint64_t owner, size_t bytes, char *err,
                          size_t errlen)
{
    if (bytes > t->lim.max_state_bytes) {
        snprintf(err, errlen, "one session's state (%zu bytes) exceeds max_state_bytes", bytes);
        return RNND_ERR_LIMIT;
    }
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&t->acct);
        int full_n = t->count + 1 > t->lim.max_sessions;
        int full_b = t->bytes + bytes > t->lim.max_state_bytes;
        if (!full_n && !full_b) {
            t->count++;
            t->bytes += bytes;
            pthread_mutex_unlock(&t->acct);
            return RNND_OK;
        }
        if (!t->lim.evict_lru || attempt >= EVICT_TRIES) {
            t->n_rejected++;
            pthread_mutex_unlock(&t->acct);
            snprintf(err, errlen,
                     full_n ? "too many sessions (max_sessions = %zu)"
                            : "session state memory is full (max_state_bytes)",
                     t->lim.max_sessions);
            return RNND_ERR_LIMIT;
        }
        pthread_mutex_unlock(&t->acct);
        if (!evict_lru(t, owner)) {
            pthread_mutex_lock(&t->acct);
            t->n_rejected++;
            pthread_mutex_unlock(&t->acct);
            snprintf(err, errlen,
                     owner ? "too many sessions, and none that this API key may "
                             "evict (its own, or a key's over its fair share) is idle"
                           : "too many sessions and none is idle to evict");
            return RNND_ERR_LIMIT;
        }
    }
}

static void unreserve(rnnd_session_table *t, uint64_t owner, size_t bytes)
{
    pthread_mutex_lock(&t->acct);
    t->count--;
    t->bytes -= bytes;
    owner_dec_locked(t, owner);
    pthread_mutex_unlock(&t->acct);
}

int rnnd_session_create(rnnd_session_table *t, const rnnd_session_init *in, rnnd_session **out,
                        char *err, size_t errlen)
{
    const char *id = in->id;
    uint64_t owner = in->owner;
    size_t state_floats = in->state_floats;
    double ttl_s = in->ttl_s;
    *out = NULL;
    if (id && !rnnd_id_valid(id)) {
        snprintf(err, errlen, "bad session id");
        return RNND_ERR_INVALID;
    }
    if (ttl_s <= 0)
        ttl_s = t->lim.ttl_s;
    if (ttl_s > t->lim.ttl_max_s) {
        snprintf(err, errlen, "ttl_s: %g is above session_ttl_max_s (%g)", ttl_s, t->lim.ttl_max_s);
        return RNND_ERR_INVALID;
    }
    size_t bytes = state_floats * sizeof(float);
    int rc = reserve(t, owner, bytes, err, errlen);
    if (rc)
        return rc;
    rnnd_session *s = calloc(1, sizeof *s);
    float *state = calloc(state_floats ? state_floats : 1, sizeof *state);
    if (!s || !state) {
        free(s);
        free(state);
        unreserve(t, owner, bytes);
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    if (in->state && state_floats)
        memcpy(state, in->state, bytes);
    s->model = in->model;
    s->owner = owner;
    if (t->model_ref)
        t->model_ref(in->model);
    s->state_floats = state_floats;
    s->state = state;
    s->table = t;
    s->ttl_s = ttl_s;
    s->steps = in->steps;
    s->created = in->created ? in->created : (int64_t)time(NULL);
    s->last_used = t->clock(t->clock_arg) - in->idle_s;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->refs, 2); /* the table's and the caller's */

    for (int tries = 0;; tries++) {
        if (id) {
            snprintf(s->id, sizeof s->id, "%s", id);
            uint64_t h = id_hash(s->id);
            struct stripe *st = stripe_of(t, h);
            pthread_mutex_lock(&st->mu);
            rnnd_session **pp = find_slot_locked(st, h, s->id);
            if (*pp) {
                pthread_mutex_unlock(&st->mu);
                session_free(s);
                unreserve(t, owner, 0);
                snprintf(err, errlen, "session %s exists already", id);
                return RNND_ERR_INVALID;
            }
            link_locked(st, h, s, pp);
            pthread_mutex_unlock(&st->mu);
            break;
        }
        if (rnnd_random_id(s->id)) {
            /* not "out of memory": the kernel refused randomness */
            session_free(s);
            unreserve(t, owner, 0);
            snprintf(err, errlen, "no random source for session ids");
            return RNND_ERR_IO;
        }
        uint64_t h = id_hash(s->id);
        struct stripe *st = stripe_of(t, h);
        pthread_mutex_lock(&st->mu);
        rnnd_session **pp = find_slot_locked(st, h, s->id);
        /* a 128-bit collision will not happen; a tombstoned id is not reused either */
        if (!*pp && !*find_tomb_locked(st, h, s->id)) {
            link_locked(st, h, s, pp);
            pthread_mutex_unlock(&st->mu);
            break;
        }
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_lock(&t->acct);
    t->n_created++;
    pthread_mutex_unlock(&t->acct);
    *out = s;
    return RNND_OK;
}

uint64_t rnnd_session_owner(const rnnd_session *s) { return s->owner; }

int rnnd_session_get(rnnd_session_table *t, const char *id, rnnd_session **out)
{
    return rnnd_session_get_as(t, id, NULL, out);
}

int rnnd_session_get_as(rnnd_session_table *t, const char *id, const uint64_t *owner,
                        rnnd_session **out)
{
    *out = NULL;
    if (!rnnd_id_valid(id))
        return RNND_SESSION_MISSING;
    uint64_t h = id_hash(id);
    struct stripe *st = stripe_of(t, h);
    double now = t->clock(t->clock_arg);
    rnnd_session *drop = NULL;
    int result;
    pthread_mutex_lock(&st->mu);
    rnnd_session **pp = find_slot_locked(st, h, id);
    if (*pp) {
        rnnd_session *s = *pp;
        pthread_mutex_lock(&s->mu);
        if (idle_expired_locked(s, now)) {
            unlink_locked(t, st, pp, RNND_SESSION_EXPIRED, now, &drop);
            result = owner && s->owner != *owner ? RNND_SESSION_MISSING : RNND_SESSION_EXPIRED;
        } else if (owner && s->owner != *owner) {
            result = RNND_SESSION_MISSING;
        } else {
            *out = rnnd_session_ref(s);
            result = RNND_SESSION_FOUND;
        }
        pthread_mutex_unlock(&s->mu);
    } else {
        struct tomb **tp = find_tomb_locked(st, h, id);
        result = *tp && (*tp)->until > now ? (*tp)->reason : RNND_SESSION_MISSING;
        if (*tp && owner && (*tp)->owner != *owner)
            result = RNND_SESSION_MISSING;
        tomb_purge_locked(st, now);
    }
    pthread_mutex_unlock(&st->mu);
    release_unlinked(t, drop);
    return result;
}

int rnnd_session_remove(rnnd_session_table *t, const char *id)
{
    rnnd_session *s;
    int r = rnnd_session_get(t, id, &s);
    if (r != RNND_SESSION_FOUND)
        return r;
    uint64_t h = id_hash(id);
    struct stripe *st = stripe_of(t, h);
    rnnd_session *drop = NULL;
    pthread_mutex_lock(&st->mu);
    rnnd_session **pp = find_slot_locked(st, h, id);
    if (*pp == s) {
        pthread_mutex_lock(&s->mu);
        unlink_locked(t, st, pp, RNND_SESSION_MISSING, t->clock(t->clock_arg), &drop);
        pthread_mutex_unlock(&s->mu);
    } else {
        r = RNND_SESSION_MISSING; /* a concurrent DELETE or expiry won */
    }
    pthread_mutex_unlock(&st->mu);
    rnnd_session_unref(drop);
    rnnd_session_unref(s);
    return r;
}

size_t rnnd_session_expire(rnnd_session_table *t)
{
    size_t n = 0;
    double now = t->clock(t->clock_arg);
    for (int i = 0; i < N_STRIPES; i++) {
        struct stripe *st = &t->stripes[i];
        rnnd_session *dropped = NULL;
        pthread_mutex_lock(&st->mu);
        for (size_t b = 0; b < st->nb; b++) {
            rnnd_session **pp = &st->buckets[b];
            while (*pp) {
                rnnd_session *s = *pp, *drop = NULL;
                pthread_mutex_lock(&s->mu);
                if (idle_expired_locked(s, now))
                    unlink_locked(t, st, pp, RNND_SESSION_EXPIRED, now, &drop);
                pthread_mutex_unlock(&s->mu);
                if (drop) {
                    /* free outside the stripe lock; hnext is free to reuse now */
                    drop->hnext = dropped;
                    dropped = drop;
                    n++;
                } else {
                    pp = &s->hnext;
                }
            }
        }
        tomb_purge_locked(st, now);
        pthread_mutex_unlock(&st->mu);
        while (dropped) {
            rnnd_session *next = dropped->hnext;
            dropped->hnext = NULL;
            release_unlinked(t, dropped);
            dropped = next;
        }
    }
    return n;
}

void rnnd_session_table_free(rnnd_session_table *t)
{
    if (!t)
        return;
    for (int i = 0; i < N_STRIPES; i++) {
        struct stripe *st = &t->stripes[i];
        for (size_t b = 0; b < st->nb; b++) {
            rnnd_session *s = st->buckets[b], *next;
            for (; s; s = next) {
                next = s->hnext;
                rnnd_session_unref(s);
            }
        }
        while (st->qhead)
            tomb_drop_oldest_locked(st);
        free(st->buckets);
        free(st->tbuckets);
        pthread_mutex_destroy(&st->mu);
    }
    pthread_mutex_destroy(&t->acct);
    free(t->owners);
    free(t);
}

/* ---- jobs -------------------------------------------------------------------------------- */

/* Remove JOB (the head) from its session's queue; returns the new head. */
static rnnd_job *pop_head(rnnd_session *s, rnnd_job *job)
{
    pthread_mutex_lock(&s->mu);
    rnnd_job *next = NULL;
    if (s->head == job) {
        s->head = job->next;
        if (!s->head)
            s->tail = NULL;
        next = s->head;
    }
    if (!job->not_a_use)
        s->last_used = s->table->clock(s->table->clock_arg);
    pthread_mutex_unlock(&s->mu);
    job->next = NULL;
    return next;
}

/* Start jobs at the head one after the other while they finish inline. */
static void run_from(rnnd_job *job)
{
    while (job) {
        if (job->start(job) == RNND_JOB_PENDING)
            return;
        rnnd_job *next = pop_head(job->session, job);
        job->finish(job); /* may free JOB; NEXT keeps the session alive */
        job = next;
    }
}

int rnnd_session_submit(rnnd_session *s, rnnd_job *job)
{
    job->session = s;
    job->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->gone) {
        int why = s->gone;
        pthread_mutex_unlock(&s->mu);
        return why;
    }
    int was_empty = !s->head;
    if (s->tail)
        s->tail->next = job;
    else
        s->head = job;
    s->tail = job;
    if (!job->not_a_use)
        s->last_used = s->table->clock(s->table->clock_arg);
    pthread_mutex_unlock(&s->mu);
    if (was_empty)
        run_from(job);
    return RNND_SESSION_FOUND;
}

void rnnd_session_job_done(rnnd_job *job)
{
    rnnd_job *next = pop_head(job->session, job);
    job->finish(job);
    run_from(next);
}

/* ---- accessors --------------------------------------------------------------------------- */

const char *rnnd_session_id(const rnnd_session *s) { return s->id; }
void *rnnd_session_model(const rnnd_session *s) { return s->model; }
float *rnnd_session_state(rnnd_session *s) { return s->state; }
size_t rnnd_session_state_floats(const rnnd_session *s) { return s->state_floats; }
double rnnd_session_ttl(const rnnd_session *s) { return s->ttl_s; }

uint64_t rnnd_session_steps(rnnd_session *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->steps;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void rnnd_session_set_steps(rnnd_session *s, uint64_t steps)
{
    pthread_mutex_lock(&s->mu);
    s->steps = steps;
    pthread_mutex_unlock(&s->mu);
}

double rnnd_session_idle_s(rnnd_session *s)
{
    double now = s->table->clock(s->table->clock_arg);
    pthread_mutex_lock(&s->mu);
    double idle = now > s->last_used ? now - s->last_used : 0;
    pthread_mutex_unlock(&s->mu);
    return idle;
}

void rnnd_session_add_steps(rnnd_session *s, uint64_t n)
{
    pthread_mutex_lock(&s->mu);
    s->steps += n;
    pthread_mutex_unlock(&s->mu);
}

/* INFO's model is a reference of its own: a listing reads it after every lock is gone, when a
 * DELETE may have freed the session and, with it, the last reference to a retired model. */
static void info_locked(rnnd_session *s, double now, rnnd_session_info *info)
{
    memcpy(info->id, s->id, sizeof info->id);
    info->model = s->model;
    if (s->table->model_ref)
        s->table->model_ref(s->model);
    info->steps = s->steps;
    info->created = s->created;
    info->busy = s->head != NULL;
    info->ttl_s = s->ttl_s;
    info->idle_s = info->busy || now < s->last_used ? 0 : now - s->last_used;
    info->expires_in = s->ttl_s - info->idle_s;
    if (info->expires_in < 0)
        info->expires_in = 0;
}

void rnnd_session_get_info(rnnd_session *s, rnnd_session_info *info)
{
    double now = s->table->clock(s->table->clock_arg);
    pthread_mutex_lock(&s->mu);
    info_locked(s, now, info);
    pthread_mutex_unlock(&s->mu);
}

void rnnd_session_info_release(rnnd_session_table *t, rnnd_session_info *info, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (t->model_unref && info[i].model)
            t->model_unref(info[i].model);
        info[i].model = NULL;
    }
}

static int info_cmp(const void *a, const void *b)
{
    return strcmp(((const rnnd_session_info *)a)->id, ((const rnnd_session_info *)b)->id);
}

int rnnd_session_collect(rnnd_session_table *t, rnnd_session ***out, size_t *n_out)
{
    size_t cap = 0, n = 0;
    rnnd_session **all = NULL;
    *out = NULL;
    *n_out = 0;
    for (int i = 0; i < N_STRIPES; i++) {
        struct stripe *st = &t->stripes[i];
        pthread_mutex_lock(&st->mu);
        if (n + st->n > cap) {
            size_t ncap = (n + st->n) * 2 + 16;
            rnnd_session **g = realloc(all, ncap * sizeof *g);
            if (!g) {
                pthread_mutex_unlock(&st->mu);
                for (size_t k = 0; k < n; k++)
                    rnnd_session_unref(all[k]);
                free(all);
                return RNND_ERR_NOMEM;
            }
            all = g;
            cap = ncap;
        }
        for (size_t b = 0; b < st->nb; b++)
            for (rnnd_session *s = st->buckets[b]; s; s = s->hnext)
                all[n++] = rnnd_session_ref(s);
        pthread_mutex_unlock(&st->mu);
    }
    *out = all;
    *n_out = n;
    return RNND_OK;
}

size_t rnnd_session_list(rnnd_session_table *t, const char *after, const void *model, size_t limit,
                         rnnd_session_info *out, int *more)
{
    return rnnd_session_list_for(t, after, model, NULL, limit, out, more);
}

size_t rnnd_session_list_for(rnnd_session_table *t, const char *after, const void *model,
                             const uint64_t *owner, size_t limit, rnnd_session_info *out, int *more)
{
    *more = 0;
    if (!after)
        after = "";
    double now = t->clock(t->clock_arg);
    size_t cap = 0, n = 0;
    rnnd_session_info *all = NULL;
    for (int i = 0; i < N_STRIPES; i++) {
        struct stripe *st = &t->stripes[i];
        pthread_mutex_lock(&st->mu);
        if (n + st->n > cap) {
            size_t ncap = (n + st->n) * 2 + 16;
            rnnd_session_info *g = realloc(all, ncap * sizeof *g);
            if (!g) {
                pthread_mutex_unlock(&st->mu);
                rnnd_session_info_release(t, all, n);
                free(all);
                return (size_t)-1;
            }
            all = g;
            cap = ncap;
        }
        for (size_t b = 0; b < st->nb; b++) {
            for (rnnd_session *s = st->buckets[b]; s; s = s->hnext) {
                if (strcmp(s->id, after) <= 0 || (model && s->model != model) ||
                    (owner && s->owner != *owner))
                    continue;
                pthread_mutex_lock(&s->mu);
                info_locked(s, now, &all[n++]);
                pthread_mutex_unlock(&s->mu);
            }
        }
        pthread_mutex_unlock(&st->mu);
    }
    if (n)
        qsort(all, n, sizeof *all, info_cmp);
    size_t k = n < limit ? n : limit;
    if (k)
        memcpy(out, all, k * sizeof *out);
    *more = n > k;
    /* cppcheck-suppress knownConditionTrueFalse ; cppcheck 2.10 loses the count of n */
    if (n > k) /* the caller holds the first K; ALL is NULL when nothing matched */
        rnnd_session_info_release(t, all + k, n - k);
    free(all);
    return k;
}

void rnnd_session_table_stats(rnnd_session_table *t, rnnd_session_stats *st)
{
    size_t tombs = 0;
    for (int i = 0; i < N_STRIPES; i++) {
        pthread_mutex_lock(&t->stripes[i].mu);
        tombs += t->stripes[i].tn;
        pthread_mutex_unlock(&t->stripes[i].mu);
    }
    pthread_mutex_lock(&t->acct);
    st->sessions = t->count;
    st->state_bytes = t->bytes;
    st->tombstones = tombs;
    st->created = t->n_created;
    st->expired = t->n_expired;
    st->evicted = t->n_evicted;
    st->deleted = t->n_deleted;
    st->rejected = t->n_rejected;
    pthread_mutex_unlock(&t->acct);
}

int rnnd_session_ttl_check(double ttl_s, int64_t max, char *err, size_t errlen)
{
    if (!(ttl_s >= 1) || !isfinite(ttl_s) || ttl_s != floor(ttl_s)) {
        snprintf(err, errlen, "ttl_s: expected an integer in 1..%" PRId64 ", got %g", max, ttl_s);
        return RNND_ERR_INVALID;
    }
    if (ttl_s > (double)max) {
        snprintf(err, errlen, "ttl_s: expected an integer in 1..%" PRId64 ", got %.0f", max, ttl_s);
        return RNND_ERR_LIMIT;
    }
    return RNND_OK;
}
