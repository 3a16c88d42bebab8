/* A socket's record (rnnd_ws), what every part of the module does with it: wake it (its
 * loop's ready list), drop a reference, give back its max_websockets slot. Here, not in
 * ws_loop.c, so that ws_bridge.c (a request answered) reaches the wake-up without calling
 * the loop's file, which calls ws_conn.c, which calls ws_bridge.c. */
#include <stdlib.h>
#include <unistd.h>

#include "ws_internal.h"

void ws_conn_wake(rnnd_ws *w)
{
    struct ws_loop *l = w->loop;
    int write_efd = 0;
    pthread_mutex_lock(&l->mu);
    if (!w->queued) {
        w->queued = 1;
        atomic_fetch_add(&w->refs, 1); /* the ready list's, dropped by the loop */
        w->rnext = NULL;
        if (l->ready_tail)
            l->ready_tail->rnext = w;
        else
            l->ready = w;
        l->ready_tail = w;
        write_efd = l->sleeping;
        l->sleeping = 0;
    }
    pthread_mutex_unlock(&l->mu);
    if (write_efd) {
        uint64_t one = 1;
        if (write(l->efd, &one, sizeof one) < 0) {
            /* the counter is full: a wake-up is pending already */
        }
    }
}

void ws_uncount(rnnd_ws *w)
{
    rnnd_http *h = w->h;
    pthread_mutex_lock(&h->wsmu);
    h->n_ws--;
    atomic_fetch_sub_explicit(&h->app->metrics.ws_open, 1, memory_order_relaxed);
    if (w->cprev)
        w->cprev->cnext = w->cnext;
    else
        h->ws_counted = w->cnext;
    if (w->cnext)
        w->cnext->cprev = w->cprev;
    pthread_mutex_unlock(&h->wsmu);
}

void ws_unref(rnnd_ws *w)
{
    if (!w || atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    ws_uncount(w);
    rnnd_session_unref(w->s);
    pthread_mutex_destroy(&w->mu);
    free(w->extra);
    free(w);
}
