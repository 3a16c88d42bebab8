/* The session table: sessions by 128-bit random id, each with its state block, its step count
 * and a FIFO of jobs; idle expiry, limits (count and state memory, reject or LRU eviction)
 * and tombstones, so that an expired or evicted id answers "gone" for a while rather than
 * "never existed".
 *
 * Concurrency: the table is split in stripes, each a mutex over a hash of sessions and
 * tombstones; a session has its own mutex over its job queue, counters and times. Lock order:
 * stripe, then session, then the table's accounting mutex. No lock is held while a job runs.
 *
 * Jobs: every operation that reads or writes a session's state is a job queued on the session.
 * Jobs of one session run one at a time, in the order they were submitted; the job at the head
 * of the queue owns the state block. So two requests on one session never run at once. */
#ifndef RNND_SESSION_H
#define RNND_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

typedef struct rnnd_session rnnd_session;
typedef struct rnnd_session_table rnnd_session_table;
typedef struct rnnd_job rnnd_job;

/* rnnd_job.start's results */
enum { RNND_JOB_DONE = 0, RNND_JOB_PENDING = 1 };

struct rnnd_job {
    rnnd_job *next;        /* the session's queue (table-private) */
    rnnd_session *session; /* set by rnnd_session_submit; the submitter keeps it alive */
    /* Called (outside every lock) when the job reaches the head of the queue, on the thread
     * that made it the head. Returns RNND_JOB_DONE when it finished inline, or
     * RNND_JOB_PENDING when someone will call rnnd_session_job_done() later. */
    int (*start)(rnnd_job *job);
    /* Called once after the job left the queue: deliver the result. It may free the job
     * and drop the submitter's session reference. */
    void (*finish)(rnnd_job *job);
    /* Set by the submitter: the job is not a use of the session (cluster mode's copy for a
     * write, a hand-over): it leaves the session's last use, its idle clock, alone. */
    int not_a_use;
};

/* Why an id has no live session. */
enum rnnd_lookup {
    RNND_SESSION_FOUND = 0,
    RNND_SESSION_MISSING, /* never existed, deleted, or its tombstone is gone: 404 */
    RNND_SESSION_EXPIRED, /* idle past its ttl: 410 */
    RNND_SESSION_EVICTED, /* evicted to make room (session_evict = lru): 410 */
};

typedef struct rnnd_session_limits {
    size_t max_sessions;
    size_t max_per_owner; /* open sessions of one owner (API key); 0 = no such limit */
    size_t max_state_bytes;
    double ttl_s;       /* default idle expiry */
    double ttl_max_s;   /* largest per-session ttl */
    int evict_lru;      /* when full: 0 = refuse (RNND_ERR_LIMIT), 1 = evict LRU idle */
    double tombstone_s; /* how long an expired/evicted id stays "gone" */
    size_t max_tombstones;
} rnnd_session_limits;

/* Monotonic seconds; tests pass a fake clock. NULL = CLOCK_MONOTONIC. */
typedef double (*rnnd_clock_fn)(void *arg);

rnnd_session_table *rnnd_session_table_new(const rnnd_session_limits *limits, rnnd_clock_fn clock,
                                           void *clock_arg);
/* Unlinks every session and drops the table's references. Call when no request is in
 * flight; a session still referenced elsewhere must be released before this. */
void rnnd_session_table_free(rnnd_session_table *t);

double rnnd_session_table_now(const rnnd_session_table *t);

/* Every session holds a reference to its model: REF is called when one is made, UNREF when
 * it is freed (NULL: models are not counted). Set before the first session. */
void rnnd_session_table_set_model_refs(rnnd_session_table *t, void (*ref)(void *),
                                       void (*unref)(void *));

/* GONE (NULL: none) is called with ARG and a session the moment the table lets it go because
 * it expired or was evicted (WHY: RNND_SESSION_EXPIRED or _EVICTED), with no table lock
 * held and S still referenced (cluster mode deletes its record: store_sync.c). Set before
 * the first session. */
void rnnd_session_table_set_gone(rnnd_session_table *t,
                                 void (*gone)(void *arg, rnnd_session *s, int why), void *arg);

/* The check of a session's ttl, shared by the API (create, fork) and the snapshot restore:
 * 0 for a whole number of seconds in 1..MAX; RNND_ERR_LIMIT above MAX; RNND_ERR_INVALID for
 * anything else (below 1, a fraction, NaN, infinite). ERR names the field ttl_s. */
int rnnd_session_ttl_check(double ttl_s, int64_t max, char *err, size_t errlen);

/* What a new session starts from; a field left zero takes the default given. */
typedef struct rnnd_session_init {
    void *model;         /* opaque to the table */
    size_t state_floats; /* the state block's size */
    const float *state;  /* copied; NULL: zeros */
    uint64_t owner;      /* the API key's owner (auth.h); 0: keys are off */
    uint64_t steps;      /* the step count */
    double ttl_s;        /* idle ttl; <= 0: the table's default */
    /* re-creating a saved session (a snapshot, after a restart): */
    const char *id;  /* its old id; NULL: a fresh random one */
    int64_t created; /* its creation time (Unix seconds); 0: now */
    double idle_s;   /* seconds of its ttl already spent */
} rnnd_session_init;

/* Create the session IN describes. Returns 0 with *OUT holding one reference for the caller
 * (the table keeps its own), RNND_ERR_LIMIT when max_sessions or max_state_bytes is reached
 * and nothing can be evicted, RNND_ERR_INVALID for a ttl above the maximum or an id that is
 * malformed or in use, RNND_ERR_NOMEM or RNND_ERR_IO (no randomness). Takes the accounting
 * mutex and, when evicting, stripe locks. */
int rnnd_session_create(rnnd_session_table *t, const rnnd_session_init *in, rnnd_session **out,
                        char *err, size_t errlen);
uint64_t rnnd_session_owner(const rnnd_session *s);

/* Look ID up. RNND_SESSION_FOUND gives *OUT one reference. A session found idle past its ttl
 * is expired on the spot (so expiry is exact, whatever the sweep interval). */
int rnnd_session_get(rnnd_session_table *t, const char *id, rnnd_session **out);
/* The same as OWNER sees it (NULL: any owner): another owner's session, and the tombstone of
 * another owner's expired or evicted session, answer RNND_SESSION_MISSING, so that an id
 * reveals nothing about sessions that are not the caller's. */
int rnnd_session_get_as(rnnd_session_table *t, const char *id, const uint64_t *owner,
                        rnnd_session **out);

/* Unlink ID (DELETE): it answers 404 from now on. Queued jobs still run and reply. Returns a
 * rnnd_lookup value. */
int rnnd_session_remove(rnnd_session_table *t, const char *id);

/* Expire every idle session past its ttl and forget old tombstones. Returns how many
 * sessions expired. */
size_t rnnd_session_expire(rnnd_session_table *t);

rnnd_session *rnnd_session_ref(rnnd_session *s);
void rnnd_session_unref(rnnd_session *s); /* NULL is a no-op; frees on the last */

/* Queue JOB on S. Returns RNND_SESSION_FOUND, or the reason S left the table (the job is not
 * queued and nothing is called). When the queue was empty JOB starts on this thread. */
int rnnd_session_submit(rnnd_session *s, rnnd_job *job);

/* The head job JOB of its session is finished: it leaves the queue, its finish() is called,
 * and the next job (if any) starts on this thread. */
void rnnd_session_job_done(rnnd_job *job);

/* Accessors. The state block belongs to the head job; the rest are safe anywhere. */
const char *rnnd_session_id(const rnnd_session *s);
void *rnnd_session_model(const rnnd_session *s);
float *rnnd_session_state(rnnd_session *s);
size_t rnnd_session_state_floats(const rnnd_session *s);
uint64_t rnnd_session_steps(rnnd_session *s);
void rnnd_session_set_steps(rnnd_session *s, uint64_t steps); /* head job only */
void rnnd_session_add_steps(rnnd_session *s, uint64_t n);     /* head job only */
double rnnd_session_ttl(const rnnd_session *s);
/* Seconds since S's last use (its last job's end or submission), busy or not. */
double rnnd_session_idle_s(rnnd_session *s);

/* One attachment per session for its users (the generation defaults given at creation),
 * freed with EXT_FREE when the session is freed. Set it once, right after creation, before
 * the id is handed out: the pointer returned by rnnd_session_ext() stays valid as long as
 * the caller's reference, and its contents must not change. */
void rnnd_session_set_ext(rnnd_session *s, void *ext, void (*ext_free)(void *));
const void *rnnd_session_ext(rnnd_session *s);
/* Cluster mode's attachment (cluster.h, store_sync.c: the session's epoch in Redis and its dirty
 * mark), malloc'd, freed with free() when the session is freed; NULL: a session of this node only
 * (the embedded default, a generation's temporary session). Set once, right after creation, before
 * the id is handed out; its fields are guarded by the cluster's own mutex. */
void rnnd_session_set_sync(rnnd_session *s, void *sync);
void *rnnd_session_sync(rnnd_session *s);

typedef struct rnnd_session_info {
    char id[RNND_ID_LEN + 1];
    void *model; /* one reference (the table's model REF): release the info */
    uint64_t steps;
    int64_t created;   /* unix seconds */
    double idle_s;     /* 0 while a job is queued or running */
    double expires_in; /* seconds until idle expiry (ttl while busy) */
    double ttl_s;
    int busy;
} rnnd_session_info;

/* INFO about S now. Its model holds a reference, so it stays readable after S is gone:
 * release it with rnnd_session_info_release. */
void rnnd_session_get_info(rnnd_session *s, rnnd_session_info *info);
/* Drop the model references of N infos (the table's model UNREF; outside every lock). */
void rnnd_session_info_release(rnnd_session_table *t, rnnd_session_info *info, size_t n);

/* Up to LIMIT sessions with ids greater than AFTER ("" or NULL: from the start) in id order,
 * only of MODEL unless MODEL is NULL. Fills OUT (LIMIT entries, each holding a model
 * reference: rnnd_session_info_release them) and *MORE (whether further sessions follow).
 * Returns the number filled, or (size_t)-1 when out of memory. */
size_t rnnd_session_list(rnnd_session_table *t, const char *after, const void *model, size_t limit,
                         rnnd_session_info *out, int *more);
/* The same, only sessions of OWNER unless OWNER is NULL. */
size_t rnnd_session_list_for(rnnd_session_table *t, const char *after, const void *model,
                             const uint64_t *owner, size_t limit, rnnd_session_info *out,
                             int *more);

/* A reference to every session in the table now, in no particular order (for snapshots):
 * *OUT (free it, and unref each) holds *N. Returns 0 or RNND_ERR_NOMEM. */
int rnnd_session_collect(rnnd_session_table *t, rnnd_session ***out, size_t *n);

typedef struct rnnd_session_stats {
    size_t sessions;    /* in the table */
    size_t state_bytes; /* allocated state blocks (including unlinked, still busy) */
    size_t tombstones;
    uint64_t created, expired, evicted, deleted, rejected;
} rnnd_session_stats;

void rnnd_session_table_stats(rnnd_session_table *t, rnnd_session_stats *st);

#endif
