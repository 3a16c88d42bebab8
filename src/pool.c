#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

struct worker {
    rnnd_pool *pool;
    size_t index;
    pthread_t thread;
    void *ctx;
    int started;
};

struct rnnd_pool {
    pthread_mutex_t mu;
    pthread_cond_t work;  /* a task was queued, or stopping */
    pthread_cond_t ready; /* start-up barrier */
    rnnd_task *head, *tail;
    size_t n, busy, n_ready, n_failed;
    uint64_t busy_ns; /* time spent running tasks, all workers */
    int stopping, joined;
    struct worker *workers;
    rnnd_worker_init_fn init;
    rnnd_worker_fini_fn fini;
    void *arg;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    rnnd_pool *p = w->pool;
    w->ctx = p->init ? p->init(p->arg, w->index) : NULL;
    int ok = !p->init || w->ctx;
    pthread_mutex_lock(&p->mu);
    p->n_ready++;
    if (!ok)
        p->n_failed++;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->mu);
    if (!ok)
        return NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stopping)
            break;
        rnnd_task *t = p->head;
        p->head = t->next;
        if (!p->head)
            p->tail = NULL;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        t->next = NULL;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        t->run(t, w->ctx);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        pthread_mutex_lock(&p->mu);
        p->busy_ns +=
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
        p->busy--;
    }
    pthread_mutex_unlock(&p->mu);
    if (p->fini)
        p->fini(p->arg, w->ctx);
    return NULL;
}

int rnnd_pool_new(size_t n, rnnd_worker_init_fn init, rnnd_worker_fini_fn fini, void *arg,
                  rnnd_pool **out, char *err, size_t errlen)
{
    *out = NULL;
    rnnd_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->workers = calloc(n ? n : 1, sizeof *p->workers))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->ready, NULL);
    p->init = init;
    p->fini = fini;
    p->arg = arg;
    size_t started = 0;
    for (size_t i = 0; i < n; i++) {
        struct worker *w = &p->workers[i];
        w->pool = p;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w))
            break;
        w->started = 1;
        started++;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n_ready < started)
        pthread_cond_wait(&p->ready, &p->mu);
    int failed = p->n_failed || started < n;
    pthread_mutex_unlock(&p->mu);
    p->n = n;
    if (failed) {
        snprintf(err, errlen,
                 started < n ? "cannot start worker threads" : "out of memory for worker scratch");
        rnnd_pool_free(p);
        return started < n ? RNND_ERR_INTERNAL : RNND_ERR_NOMEM;
    }
    *out = p;
    return RNND_OK;
}

int rnnd_pool_post(rnnd_pool *p, rnnd_task *task)
{
    task->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return RNND_ERR_UNSUPPORTED;
    }
    if (p->tail)
        p->tail->next = task;
    else
        p->head = task;
    p->tail = task;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return RNND_OK;
}

/* ---- parallel for ---- */

typedef struct par_run par_run;

typedef struct par_task {
    rnnd_task task; /* first member */
    par_run *run;
} par_task;

struct par_run {
    rnnd_pool *pool;
    void (*fn)(void *arg, size_t i);
    void *arg;
    size_t n;
    atomic_size_t next;   /* the next item to claim */
    atomic_size_t helped; /* items run by helpers */
    size_t outstanding;   /* helper tasks neither finished nor withdrawn; under pool mu */
    pthread_cond_t done;  /* outstanding reached 0 */
    par_task tasks[RNND_POOL_MAX_HELPERS];
};

/* Run items until none is left; returns how many this thread ran. */
static size_t par_claim(par_run *r)
{
    size_t i, ran = 0;
    while ((i = atomic_fetch_add(&r->next, 1)) < r->n) {
        r->fn(r->arg, i);
        ran++;
    }
    return ran;
}

static void par_task_end(par_run *r)
{
    pthread_mutex_lock(&r->pool->mu);
    if (--r->outstanding == 0)
        pthread_cond_signal(&r->done);
    pthread_mutex_unlock(&r->pool->mu);
}

static void par_task_run(rnnd_task *task, void *wctx)
{
    (void)wctx;
    par_run *r = ((par_task *)task)->run;
    atomic_fetch_add(&r->helped, par_claim(r));
    par_task_end(r); /* R lives on the caller's stack: nothing after this */
}

static void par_task_cancel(rnnd_task *task) { par_task_end(((par_task *)task)->run); }

/* Take TASK out of the queue if it is still there. Called with p->mu held. */
static int withdraw_locked(rnnd_pool *p, rnnd_task *task)
{
    rnnd_task *prev = NULL;
    for (rnnd_task *t = p->head; t; prev = t, t = t->next) {
        if (t != task)
            continue;
        if (prev)
            prev->next = t->next;
        else
            p->head = t->next;
        if (p->tail == t)
            p->tail = prev;
        t->next = NULL;
        return 1;
    }
    return 0;
}

size_t rnnd_pool_parallel(rnnd_pool *p, size_t helpers, void (*fn)(void *arg, size_t i), void *arg,
                          size_t n)
{
    if (helpers > RNND_POOL_MAX_HELPERS)
        helpers = RNND_POOL_MAX_HELPERS;
    if (helpers > n - (n > 0))
        helpers = n - (n > 0);
    par_run r = {.pool = p, .fn = fn, .arg = arg, .n = n};
    atomic_init(&r.next, 0);
    atomic_init(&r.helped, 0);
    size_t posted = 0;
    if (helpers > 0) {
        pthread_cond_init(&r.done, NULL);
        pthread_mutex_lock(&p->mu);
        /* only workers that are idle now: a queued task means none is */
        size_t idle = p->n - p->busy;
        if (p->stopping || p->head)
            idle = 0;
        for (; posted < helpers && posted < idle; posted++) {
            par_task *t = &r.tasks[posted];
            t->task = (rnnd_task){.run = par_task_run, .cancel = par_task_cancel};
            t->run = &r;
            if (p->tail)
                p->tail->next = &t->task;
            else
                p->head = &t->task;
            p->tail = &t->task;
        }
        r.outstanding = posted;
        if (posted > 1)
            pthread_cond_broadcast(&p->work);
        else if (posted == 1)
            pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
    }
    par_claim(&r);
    if (helpers > 0) {
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < posted; i++)
            if (withdraw_locked(p, &r.tasks[i].task))
                r.outstanding--;
        while (r.outstanding > 0)
            pthread_cond_wait(&r.done, &p->mu);
        pthread_mutex_unlock(&p->mu);
        pthread_cond_destroy(&r.done);
    }
    return atomic_load(&r.helped);
}

size_t rnnd_pool_size(const rnnd_pool *p) { return p->n; }

double rnnd_pool_busy_seconds(rnnd_pool *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t ns = p->busy_ns;
    pthread_mutex_unlock(&p->mu);
    return ns / 1e9;
}

size_t rnnd_pool_busy(rnnd_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t b = p->busy;
    pthread_mutex_unlock(&p->mu);
    return b;
}

void rnnd_pool_stop(rnnd_pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->joined) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->stopping = 1;
    rnnd_task *queued = p->head;
    p->head = p->tail = NULL;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    while (queued) {
        rnnd_task *next = queued->next;
        queued->next = NULL;
        if (queued->cancel)
            queued->cancel(queued);
        queued = next;
    }
    for (size_t i = 0; i < p->n; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_lock(&p->mu);
    p->joined = 1;
    pthread_mutex_unlock(&p->mu);
}

void rnnd_pool_free(rnnd_pool *p)
{
    if (!p)
        return;
    rnnd_pool_stop(p);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->ready);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

/* ---- held calls (rnnd_defer) ------------------------------------------------------------- */

struct held_call {
    void (*fn)(void *);
    void *arg;
};

/* cppcheck 2.10 does not see the members used through a _Thread_local variable. */
struct held_calls {
    int depth;                              /* cppcheck-suppress unusedStructMember */
    size_t n;                               /* cppcheck-suppress unusedStructMember */
    struct held_call calls[RNND_DEFER_MAX]; /* cppcheck-suppress unusedStructMember */
};

static _Thread_local struct held_calls held;

void rnnd_defer_begin(void) { held.depth++; }

int rnnd_defer(void (*fn)(void *), void *arg)
{
    if (held.depth <= 0 || held.n >= RNND_DEFER_MAX)
        return -1;
    held.calls[held.n++] = (struct held_call){fn, arg};
    return 0;
}

void rnnd_defer_end(void)
{
    if (--held.depth > 0)
        return;
    held.depth = 0; /* a call that would hold more now makes it itself */
    for (size_t i = 0; i < held.n; i++)
        held.calls[i].fn(held.calls[i].arg);
    held.n = 0;
}
