#include "pool.h"

#include <pthread.h>
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
    pthread_cond_t work;        /* a task was queued, or stopping */
    pthread_cond_t ready;       /* start-up barrier */
    rnnd_task *head, *tail;
    size_t n, busy, n_ready, n_failed;
    uint64_t busy_ns;           /* time spent running tasks, all workers */
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
        p->busy_ns += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
                                 (t1.tv_nsec - t0.tv_nsec));
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
        snprintf(err, errlen, started < n ? "cannot start worker threads"
                                          : "out of memory for worker scratch");
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

size_t rnnd_pool_size(const rnnd_pool *p)
{
    return p->n;
}

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
