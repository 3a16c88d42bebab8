/* The compute workers: N threads taking tasks from one FIFO. Each worker owns a context made
 * once at start (its scratch: one rnnd_work per model), so computing never allocates.
 * Start-up waits on a barrier until every worker has built its context.
 *
 * Lock order: the pool's mutex is a leaf: a task's run() and cancel() are called without it,
 * so callers may post while holding their own locks (the batcher does). */
#ifndef RNND_POOL_H
#define RNND_POOL_H

#include <stddef.h>

typedef struct rnnd_pool rnnd_pool;
typedef struct rnnd_task rnnd_task;

struct rnnd_task {
    rnnd_task *next;                          /* the pool's queue (pool-private) */
    void (*run)(rnnd_task *task, void *wctx); /* on a worker, with its context */
    void (*cancel)(rnnd_task *task);          /* the pool stopped before running it */
};

/* Builds worker INDEX's context (NULL = failure, which fails rnnd_pool_new). */
typedef void *(*rnnd_worker_init_fn)(void *arg, size_t index);
typedef void (*rnnd_worker_fini_fn)(void *arg, void *wctx);

/* Start N threads; returns when all have built their contexts. */
int rnnd_pool_new(size_t n, rnnd_worker_init_fn init, rnnd_worker_fini_fn fini, void *arg,
                  rnnd_pool **out, char *err, size_t errlen);

/* Queue TASK. Returns 0, or RNND_ERR_UNSUPPORTED after rnnd_pool_stop() (TASK untouched). */
int rnnd_pool_post(rnnd_pool *p, rnnd_task *task);

size_t rnnd_pool_size(const rnnd_pool *p);
size_t rnnd_pool_busy(rnnd_pool *p);         /* workers running a task right now */
double rnnd_pool_busy_seconds(rnnd_pool *p); /* time all workers spent running tasks */

/* Parallel for: fn(arg, i) for every i < n, run by the caller and by up to HELPERS workers
 * that are idle right now (none are waited for: helper tasks are queued only when no task is
 * waiting, and any still queued when the caller has run out of items are withdrawn). Returns
 * when all n calls have returned; the number of calls that ran on helpers. Allocates nothing.
 * Callable from a task (the caller is then a worker itself) or from any other thread. */
#define RNND_POOL_MAX_HELPERS 8
size_t rnnd_pool_parallel(rnnd_pool *p, size_t helpers, void (*fn)(void *arg, size_t i), void *arg,
                          size_t n);

/* Calls held back on this thread until the end of a stretch of work that finishes many
 * requests at once (a batcher round): each call wakes a request thread (rnnd_req_complete's
 * resume), and made together at the end they wake it once for the lot, not once per request,
 * its sleep between them cut short. rnnd_defer_begin() opens a stretch (they nest);
 * rnnd_defer_end() makes the held calls, in order, when the outermost closes. rnnd_defer()
 * holds FN(ARG) and returns 0, or returns -1 when no stretch is open on this thread or
 * RNND_DEFER_MAX calls are held already: the caller then calls FN itself. A stretch must be
 * short: nothing it holds happens before it ends. */
#define RNND_DEFER_MAX 256
void rnnd_defer_begin(void);
int rnnd_defer(void (*fn)(void *), void *arg);
void rnnd_defer_end(void);

/* Stop taking tasks: cancel every queued task (their cancel() runs on this thread), let
 * running tasks finish, and join the workers. Idempotent. */
void rnnd_pool_stop(rnnd_pool *p);

/* Stops (if not yet) and frees. NULL is a no-op. */
void rnnd_pool_free(rnnd_pool *p);

#endif
