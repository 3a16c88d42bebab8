/* A socket's record (rnnd_ws), what every part of the module does with it: wake its thread,
 * drop a reference. Here, not in ws_conn.c, so that ws_bridge.c (a request answered) and
 * ws_handshake.c reach them without calling the thread's file, which calls ws_bridge.c. */
#include <stdlib.h>
#include <unistd.h>

#include "ws_internal.h"

void ws_conn_wake(rnnd_ws *w)
{
    uint64_t one = 1;
    if (write(w->wake, &one, sizeof one) < 0) {
        /* the counter is full: a wake-up is pending already */
    }
}

void ws_uncount(rnnd_ws *w)
{
    rnnd_http *h = w->h;
    pthread_mutex_lock(&h->wsmu);
    h->n_ws--;
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
    if (w->wake >= 0)
        close(w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w->extra);
    free(w);
}
