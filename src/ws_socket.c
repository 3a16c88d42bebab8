/* A socket's record (rnnd_ws), what every part of the module does with it: drop a reference,
 * give back its max_websockets slot. */
#include <stdlib.h>

#include "ws_internal.h"

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
    pthread_mutex_destroy(&w->mu);
    free(w->extra);
    free(w);
}
