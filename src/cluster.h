/* Cluster mode in the daemon (docs/cluster.md): the Redis store wired into the session table.
 * Nothing here runs without `session_store`: app->cluster stays NULL and every hook below is
 * a no-op for a NULL cluster, so the embedded default does not change.
 *
 * The jobs, one file each: cluster.c starts and stops it (the stores, the node lease and its
 * renewal thread, readiness); store_sync.c writes sessions to Redis (at once on create, reset,
 * import, delete; behind, from its own thread, after steps); cluster_take.c answers a request
 * for a session this node does not hold (takeover from Redis, or hand-over from its live
 * holder); cluster_handover.c gives this node's sessions to the nodes that ask for them.
 *
 * Threads and stores: a store (rnnd/store.h) is one connection under one mutex. Four are
 * opened: REQ for request handlers and session jobs (hand-over writes included), LEASE for the
 * lease thread, SYNC for the write-behind thread, so that neither background thread waits
 * behind a request's round trip nor a request behind theirs, and SUB, subscribed to this
 * node's hand-over channel, used by the hand-over thread alone. All name the same holder
 * "NAME INCARNATION".
 *
 * Lock order: take_mu (one takeover at a time on this node), then the session table's locks
 * (stripe, session, accounting: session.h), then mu; every store's mutex is a leaf below all
 * of them. mu is never held across a store call or a session table call; take_mu is (a
 * takeover's acquisition and the session's creation happen as one step), but never while a
 * request waits for a hand-over (between its acquisitions it holds no lock). The hand-over
 * thread holds no lock of the cluster's while it listens (only SUB's mutex), and its job on a
 * session runs as every job does, with no lock held, taking REQ's mutex for its write and mu
 * for the slot, one after the other. */
#ifndef RNND_CLUSTER_H
#define RNND_CLUSTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "rnnd/buf.h"
#include "rnnd/store.h"
#include "session.h"

struct rnnd_app;
struct rnnd_req;
struct rnnd_gen_params;

/* A stored session's cluster state (rnnd_session_sync), guarded by rnnd_cluster.mu. */
typedef struct rnnd_sync_slot {
    uint64_t epoch; /* the fencing token of our hold */
    uint64_t seq;   /* the record's seq after our last write (a take's cached copy) */
    int held;       /* 0: let go (handed over, or dropped); a copy only until it leaves the table */
    int dirty;      /* in the dirty list, waiting for the write-behind thread */
    /* once not held (handed over, or dropped after a refused write): the step count the node
     * let it go at; a step that ends past it ran on a copy nobody keeps */
    uint64_t gone_steps;
    unsigned confirmed; /* rnnd_cluster.lapses when the hold was last taken or confirmed */
    /* a hand-over's write is under way: once Redis has it the asker may take the session
     * before this node dropped its copy, so a request here waits for the drop */
    int giving;
    /* Redis lost its data (rnnd_cluster.lost): the record is written anew, whole, by the next
     * write-behind round; LOST_SEEN is rnnd_cluster.lost when the hold was taken or restored */
    int restore;
    unsigned lost_seen;
} rnnd_sync_slot;

/* The kinds of fenced write counted in rnnd_store_writes_total (cluster_metrics.c). */
enum rnnd_cw_kind { RNND_CW_STEP, RNND_CW_CREATE, RNND_CW_NOW, RNND_CW_DELETE, RNND_CW_RELEASE };
#define RNND_CW_KINDS 5
#define RNND_CW_BUCKETS 12 /* write-round duration histogram buckets, +Inf included */

/* Counters for /metrics, bumped lock-free where the work happens. */
typedef struct rnnd_cluster_stats {
    atomic_uint_least64_t takeovers[2]; /* from a free record, from a dead node */
    atomic_uint_least64_t writes[RNND_CW_KINDS];
    atomic_uint_least64_t write_failures[3]; /* unreachable, refused (fenced), error */
    atomic_uint_least64_t rounds[RNND_CW_BUCKETS], round_us;
    atomic_uint_least64_t renewals, renewal_failures;
    atomic_uint_least64_t handovers[2]; /* given to another node, taken from one */
} rnnd_cluster_stats;

typedef struct rnnd_cluster {
    struct rnnd_app *app;
    rnnd_store *req, *lease, *sync, *sub; /* see the top */
    char node[RNND_STORE_NAME_MAX + 1];
    int64_t lease_ms, sync_ms, tombstone_ms;
    pthread_mutex_t take_mu;
    pthread_mutex_t mu;   /* everything below, and every rnnd_sync_slot */
    pthread_cond_t cond;  /* on CLOCK_MONOTONIC (rnnd_mono_deadline) */
    int stop;             /* the threads' stop request */
    rnnd_session **dirty; /* one reference each */
    size_t n_dirty, cap_dirty;
    struct rnnd_sync_job *ready; /* write-behind jobs that own their session */
    /* write-through (sync_ms 0): step requests whose reply waits for the next round's end */
    struct rnnd_sync_waiter *waiters;
    size_t outstanding; /* write-behind jobs submitted, not yet written */
    /* sessions expired or evicted here whose record the write-behind thread deletes next
     * (rnnd_sync_ended), and its sweep of rnnd:idx: the next page's cursor, when */
    struct rnnd_sync_end *ended;
    char sweep_cursor[32];
    double next_sweep;
    /* Redis's clock minus this node's monotonic clock, in ms, at the last peek (0: none yet):
     * a taken session's idle time is measured from the record's used_ms */
    atomic_llong redis_offset_ms;
    pthread_t lease_thread, sync_thread, handover_thread;
    int lease_started, sync_started, handover_started;
    size_t giving;         /* hand-over jobs queued on sessions, not yet finished */
    atomic_int registered; /* the node lease was taken once: ready */
    atomic_int up;         /* the last Redis call succeeded */
    /* monotonic µs since which Redis has answered every call (up): a holder whose lease key
     * is missing is taken for dead only once this is lease_ms + 1 s old (cluster_take.c) */
    atomic_llong up_since_us;
    /* Redis's data marker as this node last saw it (rnnd:data; "" before the first), under
     * mu; LOST counts the losses of Redis's data seen (FLUSHALL, a restart without its AOF) */
    char token[RNND_STORE_TOKEN_MAX + 1];
    atomic_uint lost;
    atomic_int draining; /* the drain's grace began: no new sessions, /readyz 503 */
    /* confirmation (cluster_take.c): every lapse of the node lease seen raises LAPSES, and a
     * held session whose slot has not confirmed since, or any held session past
     * LEASE_UNTIL_US (monotonic µs, the lease store's lease_until), is checked against its
     * record before a request is served from it */
    atomic_uint lapses;
    atomic_llong lease_until_us;
    /* drain (cluster_drain.c), under mu: the POST /v1/admin/drain waiting for its counts */
    struct rnnd_req *drain_req;
    int drained; /* every session written and released, the lease dropped */
    size_t drain_written, drain_failed;
    rnnd_cluster_stats stats;
} rnnd_cluster;

/* ---- cluster.c ---- */

/* With session_store set: open the stores, take the node lease (waiting up to lease_ms for a
 * previous incarnation of the name; Redis down is not fatal: the lease thread keeps trying),
 * start the lease and write-behind threads; app->cluster is set. Without: 0, nothing done.
 * Returns 0 or a negative code with ERR (a bad setting, the name held by a live node). */
int rnnd_cluster_start(struct rnnd_app *app, char *err, size_t errlen);
/* Shutdown, once nothing else runs: the write-behind thread's last round, every held session
 * written exactly and released, the node lease dropped, everything freed. Returns how many
 * sessions could not be written (Redis down): 0 is a clean stop. NULL cluster: 0. */
size_t rnnd_cluster_stop(struct rnnd_app *app);
/* The node lease lapsed (a renewal or an acquisition found it gone): every held session is
 * confirmed before it is served again. */
void rnnd_cluster_lapsed(rnnd_cluster *c);
/* Readiness: 0 until the node lease was first taken (a node without a lease can neither
 * create nor take sessions), else 1; *UP whether Redis answered the last call. */
int rnnd_cluster_ready(rnnd_cluster *c, int *up);

/* ---- store_sync.c ---- */

/* Record Redis's state after a call that returned RC (log store_down / store_up once). */
void rnnd_sync_note(rnnd_cluster *c, int rc, const char *err);

/* S was just created on this node (create, fork) with generation defaults GEN (NULL: none):
 * write its record at once, free, and remove S from the session table: this node keeps no
 * copy (S stays valid for the caller's reply; the id's first request takes it from Redis).
 * Returns 0, or RNND_ERR_IO (Redis down) / RNND_ERR_CONFLICT with ERR; the caller then
 * removes S. */
int rnnd_sync_created(rnnd_cluster *c, rnnd_session *s, const struct rnnd_gen_params *gen,
                      char *err, size_t errlen);
/* A request changed S's state (a step, a generate): write it within sync_ms. Any thread, no
 * lock held. A session without a slot, or a NULL cluster: nothing. */
void rnnd_sync_dirty(rnnd_cluster *c, rnnd_session *s);
/* A step request R on S ended with its reply set: complete R now, or, with store_sync_ms = 0
 * and S held here (marked dirty by rnnd_sync_dirty already), once the write-behind thread's
 * next round wrote S. NULL cluster: completed now. */
void rnnd_sync_complete(rnnd_cluster *c, rnnd_session *s, struct rnnd_req *r);
/* From S's head job: write STATE and STEPS as S's now, fenced, before the job applies them
 * (reset, import). Returns 0 (also for a session without a slot); RNND_ERR_CONFLICT when the
 * session moved (S is then dropped from this node); RNND_ERR_IO; ERR says why. */
int rnnd_sync_write_now(rnnd_cluster *c, rnnd_session *s, const float *state, uint64_t steps,
                        char *err, size_t errlen);
/* Delete S's record, fenced (DELETE). Returns 0 (also when already gone), RNND_ERR_CONFLICT
 * (moved; S dropped here) or RNND_ERR_IO; *DELETED says whether this call deleted the record
 * (the request then answers 204 even if S left the table meanwhile: a hand-over's write that
 * found the record gone). */
int rnnd_sync_delete(rnnd_cluster *c, rnnd_session *s, int *deleted, char *err, size_t errlen);
/* The session table's gone hook (rnnd_session_table_set_gone, ARG the cluster): S expired or
 * was evicted here (WHY): the write-behind thread deletes its record and writes the tombstone
 * (gone.lua), so that no node takes it back. */
void rnnd_sync_ended(void *arg, rnnd_session *s, int why);
/* Whether ID expired or was evicted here and its record is not deleted yet: the
 * rnnd_lookup reason (RNND_SESSION_EXPIRED / _EVICTED), else 0. */
int rnnd_sync_ended_pending(rnnd_cluster *c, const char *id);
/* Free the records still to delete (shutdown: Redis did not answer). */
void rnnd_sync_ended_free(rnnd_cluster *c);
/* Drop S from this node after a refused write: its slot is no longer held, its id leaves the
 * table (the next request takes it from Redis, or hears who holds it). */
void rnnd_sync_drop(rnnd_cluster *c, rnnd_session *s);
/* Redis lost its data: every held session is written anew, whole, by the next round. */
void rnnd_sync_restore_all(rnnd_cluster *c);
/* S's record is missing: whether Redis lost its data since S was taken (its marker is not the
 * one this node knows, or a loss was seen since), asked on STORE. Then S is marked to be
 * written anew and dirty, and 1 returned: S is kept. 0: deleted elsewhere (or Redis could not
 * say). */
int rnnd_sync_lost(rnnd_cluster *c, rnnd_store *store, rnnd_session *s);
int rnnd_sync_thread_start(rnnd_cluster *c);
/* Stop the thread after its current round and one last round. */
void rnnd_sync_thread_stop(rnnd_cluster *c);
/* Write every held session exactly and release it (nothing else may run). Returns how many
 * failed; *WRITTEN (may be NULL) how many were written and released. */
size_t rnnd_sync_release_all(rnnd_cluster *c, size_t *written);

/* From S's head job: write S's exact state and step count with release = 1 and drop S from
 * this node (a hand-over: the asking node takes it next). Returns 0 (given), 1 (not held
 * here: nothing done), RNND_ERR_CONFLICT (it had moved: dropped), RNND_ERR_IO. */
int rnnd_sync_give(rnnd_cluster *c, rnnd_session *s, char *err, size_t errlen);
/* Whether a step that brought S to STEPS ran after S left this node (handed over or
 * dropped): its reply must not claim steps that no record holds. NULL cluster: 0. */
int rnnd_sync_left(rnnd_cluster *c, rnnd_session *s, uint64_t steps);
/* Whether S is no longer held here (handed over, or dropped): a job that starts on it now
 * runs on a copy nobody keeps (a generate's check, before its first step and before each
 * token). A session the request found is held (rnnd_cluster_lookup), so this is the
 * queue's order only. NULL cluster, or a session without a slot: 0. */
int rnnd_sync_gone(rnnd_cluster *c, rnnd_session *s);

/* ---- cluster_handover.c ---- */

/* The hand-over thread: listens on this node's channel and queues, on each session asked
 * for that this node holds, a job (after the requests already queued) that gives it
 * (rnnd_sync_give). Stopped by c->stop with the other threads (rnnd_handover_thread_stop
 * waits for the jobs it queued). */
int rnnd_handover_thread_start(rnnd_cluster *c);
void rnnd_handover_thread_stop(rnnd_cluster *c);
/* Ask the live HOLDER of ID to hand it over (its channel). Returns 0 when someone listens
 * there, RNND_ERR_BUSY when nobody does (the holder died or lost Redis: only its lease
 * lapsing frees the session), RNND_ERR_IO (Redis) with ERR. */
int rnnd_handover_ask(rnnd_cluster *c, const char *holder, const char *id, char *err,
                      size_t errlen);

/* ---- cluster_drain.c ---- */

/* POST /v1/admin/drain (admin scope): in cluster mode the request is deferred and SIGTERM
 * raised, so the main thread drains as at a signal and then answers it with the counts
 * (rnnd_cluster_drain); without session_store, 409. */
void rnnd_api_admin_drain(struct rnnd_req *r);
/* The drain's first part (the grace): /readyz 503, no session created or taken here; the
 * sessions held are served as before. NULL cluster: nothing. */
void rnnd_cluster_begin_drain(rnnd_cluster *c);
/* How many requests besides the running ones the shutdown must not wait for: 1 while a drain
 * request waits for its answer, else 0. NULL cluster: 0. */
size_t rnnd_cluster_drain_waiting(rnnd_cluster *c);
/* (cluster.c) Once no request runs: stop the threads, write every held session exactly and release
 * it, drop the node lease, answer a waiting drain request. Returns how many sessions could not be
 * written. A second call, or a NULL cluster: 0 and nothing done. */
size_t rnnd_cluster_drain(struct rnnd_app *app);

/* ---- cluster_metrics.c ---- */

/* One fenced write of KIND ended with RC (rnnd_store_write's codes). */
void rnnd_cluster_count_write(rnnd_cluster *c, enum rnnd_cw_kind kind, int rc);
/* One round trip of writes (one write, or a pipeline of them) took from T0 (rnnd_mono_s) to
 * now. */
void rnnd_cluster_count_round(rnnd_cluster *c, double t0);
/* Append the cluster's metrics (docs/cluster.md, "Metrics") in Prometheus text. NULL: none. */
void rnnd_cluster_metrics(rnnd_cluster *c, rnnd_buf *out);

/* ---- cluster_take.c ---- */

/* The session the request's path names, as rnnd_api_session_lookup gives it, in cluster
 * mode: a session this node holds, else one taken from Redis (free, or its holder's lease
 * lapsed), else a reply: 404 / 410, 409 (another model digest), 503 (Redis down, or held by
 * a live node). Returns one reference or NULL (replied). */
rnnd_session *rnnd_cluster_lookup(struct rnnd_req *r);

/* Whether rnnd_cluster_lookup() of session ID would answer from this node's table alone, with
 * no call to the store (Redis): not in cluster mode, a session held here whose hold needs no
 * confirming, or one the table says expired or was evicted. 0: it may take the session from
 * Redis or confirm its hold there, and wait up to lease_ms + 1 s (the WebSocket loop hands
 * such a request to its slow path, ws_slow.c). Any thread; takes the cluster's mu. */
int rnnd_cluster_lookup_quick(struct rnnd_app *app, const char *id);

/* Reply 503 to R for ERR, a failed store call's message: an outage's without the server's
 * address (rnnd_store_reason), which the log has (event=store_down). */
void rnnd_cluster_reply_store(struct rnnd_req *r, const char *err);

#endif
