/* The WebSockets' slow path: a message whose request may wait on the session store, or a
 * long text message (its JSON decoding), starts on a worker, not on the event loop, which
 * serves every socket of the node.
 *
 * In cluster mode (docs/cluster.md) a request's session lookup takes a session this node does
 * not hold from Redis, asking its holder for it and waiting at most lease_ms + 1 s
 * (cluster_take.c). Run by the loop, that wait held every socket of the node (a moved
 * session's frame, with its holder paused: another socket's step 925 ms late). So the loop
 * asks first (rnnd_cluster_lookup_quick) and hands such a message to this file's workers.
 *
 * Order: a session's requests run in the order the daemon read them, and a socket's replies
 * leave in the order of its requests (ws_bridge.c's pending list). So once one message of a
 * socket is on the slow path, every later one of that socket follows it there, until the
 * socket has none waiting or starting; a socket's messages are started one at a time, in
 * order, by whichever worker takes the socket. Sockets take turns: a worker starts one
 * message of a socket, then puts the socket back at the end of the list.
 *
 * The workers are WS_SLOW_THREADS threads of the loop, started by the first message that
 * needs them, ended by ws_slow_stop once the loop's sockets have all ended. A worker only starts a request (the lookup, the checks, the job on
 * the session's queue): the computation stays the batcher's, the reply the loop's, which
 * leaves the request alone until the worker is done with it (ws_pending's STARTING: a handler
 * reads its request after queuing its job, which may complete it meanwhile). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cluster.h"
#include "rnnd/json_depth.h"
#include "ws_internal.h"

/* A message waiting to start (a copy: wslay's buffer is gone by then). */
struct ws_slow_msg {
    struct ws_slow_msg *next;
    struct ws_pending *p;
    int binary;
    size_t len;
    uint8_t data[];
};

/* Put W at the end of L's slow list. L's slow_mu held. */
static void list_push_locked(struct ws_loop *l, rnnd_ws *w)
{
    w->slow_queued = 1;
    w->slow_next = NULL;
    if (l->slow_tail)
        l->slow_tail->slow_next = w;
    else
        l->slow = w;
    l->slow_tail = w;
    pthread_cond_signal(&l->slow_cond);
}

/* Free the requests of list G (ws_slow_discard). */
static void free_garbage(struct ws_pending *g)
{
    while (g) {
        struct ws_pending *p = g;
        g = g->next;
        ws_bridge_free_pending(p);
    }
}

void ws_slow_discard(rnnd_ws *w, struct ws_pending *p)
{
    struct ws_loop *l = w->loop;
    pthread_mutex_lock(&l->slow_mu);
    int workers = l->n_slow_threads > 0 && !l->slow_quit;
    if (workers) {
        p->next = l->garbage;
        l->garbage = p;
        pthread_cond_signal(&l->slow_cond);
    }
    pthread_mutex_unlock(&l->slow_mu);
    if (!workers) {
        p->next = NULL;
        free_garbage(p);
    }
}

static void *slow_main(void *arg)
{
    struct ws_loop *l = arg;
    /* below the loop: what a worker does is waiting on the store or decoding a client's long
     * JSON, and the loop's turn for every other socket must not queue behind that on a busy
     * machine (Linux: a thread's own nice value; a failure leaves it as it was) */
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    if (errno == 0)
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), prio + WS_SLOW_NICE);
    pthread_mutex_lock(&l->slow_mu);
    for (;;) {
        while (!l->slow && !l->garbage && !l->slow_quit)
            pthread_cond_wait(&l->slow_cond, &l->slow_mu);
        if (l->garbage) {
            struct ws_pending *g = l->garbage;
            l->garbage = NULL;
            pthread_mutex_unlock(&l->slow_mu);
            free_garbage(g);
            pthread_mutex_lock(&l->slow_mu);
            continue;
        }
        if (!l->slow)
            break;
        rnnd_ws *w = l->slow;
        l->slow = w->slow_next;
        if (!l->slow)
            l->slow_tail = NULL;
        w->slow_queued = 0;
        struct ws_slow_msg *m = w->slow_head;
        w->slow_head = m->next;
        if (!w->slow_head)
            w->slow_tail = NULL;
        w->slow_busy = 1;
        pthread_mutex_unlock(&l->slow_mu);
        /* not started once its socket closed or the server drains: a queue of long messages
         * (or of lookups that wait on the store) must not hold the close or the shutdown */
        if ((atomic_load(&m->p->r->flags) & F_GONE) || atomic_load(&w->app->draining))
            ws_bridge_refuse(w, m->p);
        else
            ws_bridge_start(w, m->p, m->binary, m->data, m->len);
        /* the handler has read what it needs of the decoded body (handlers parse it before
         * they queue their job); freed by the request, it was the loop that walked a long
         * message's tree again (trial 32: 330,000 objects, the loop busy 3-6 s in 10) */
        rnnd_req_drop_body(m->p->r);
        pthread_mutex_lock(&w->mu);
        m->p->starting = 0; /* the loop may now send its reply and free it */
        pthread_mutex_unlock(&w->mu);
        ws_conn_wake(w);
        free(m);
        pthread_mutex_lock(&l->slow_mu);
        w->slow_busy = 0;
        if (w->slow_head) /* its next message, after the other sockets' turns */
            list_push_locked(l, w);
        pthread_mutex_unlock(&l->slow_mu);
        ws_unref(w); /* the message's */
        pthread_mutex_lock(&l->slow_mu);
    }
    pthread_mutex_unlock(&l->slow_mu);
    return NULL;
}

int ws_slow_wanted(rnnd_ws *w, struct ws_pending *p, int binary, const uint8_t *data, size_t len,
                   size_t *cost)
{
    *cost = 0;
    if (!binary && len <= WS_SLOW_TEXT_BYTES) {
        int deep;
        *cost = rnnd_json_decode_cost((const char *)data, len, (long)w->app->cfg->max_json_depth,
                                      &deep);
        p->depth = deep ? -1 : 1;
    }
    if (!binary && (len > WS_SLOW_TEXT_BYTES || *cost > WS_SLOW_TEXT_COST))
        return 1;
    if (!w->app->cluster && !w->slow_ever)
        return 0; /* no lookup waits, and no message of W is on the slow path */
    struct ws_loop *l = w->loop;
    pthread_mutex_lock(&l->slow_mu);
    int behind = w->slow_head || w->slow_busy;
    pthread_mutex_unlock(&l->slow_mu);
    return behind || (w->app->cluster && !rnnd_cluster_lookup_quick(w->app, w->id));
}

int ws_slow_post(rnnd_ws *w, struct ws_pending *p, int binary, const uint8_t *data, size_t len)
{
    struct ws_loop *l = w->loop;
    w->slow_ever = 1;
    struct ws_slow_msg *m = malloc(sizeof *m + len);
    if (!m)
        return -1;
    p->slow = 1;
    m->next = NULL;
    m->p = p;
    m->binary = binary;
    m->len = len;
    if (len) /* an empty message's DATA is wslay's NULL, which memcpy may not get */
        memcpy(m->data, data, len);
    /* the loop must not free P while a worker starts it: its handler returns after its job
     * may have completed it (ws_bridge_flush waits) */
    pthread_mutex_lock(&w->mu);
    p->starting = 1;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&l->slow_mu);
    while (l->n_slow_threads < WS_SLOW_THREADS && !l->slow_quit &&
           !pthread_create(&l->slow_threads[l->n_slow_threads], NULL, slow_main, l))
        l->n_slow_threads++;
    if (!l->n_slow_threads || l->slow_quit) {
        pthread_mutex_unlock(&l->slow_mu);
        pthread_mutex_lock(&w->mu);
        p->starting = 0;
        pthread_mutex_unlock(&w->mu);
        free(m);
        return -1;
    }
    atomic_fetch_add(&w->refs, 1); /* the message's, dropped by the worker */
    if (w->slow_tail)
        w->slow_tail->next = m;
    else
        w->slow_head = m;
    w->slow_tail = m;
    if (!w->slow_queued && !w->slow_busy)
        list_push_locked(l, w);
    pthread_mutex_unlock(&l->slow_mu);
    return 0;
}

void ws_slow_init(struct ws_loop *l)
{
    pthread_mutex_init(&l->slow_mu, NULL);
    pthread_cond_init(&l->slow_cond, NULL);
}

void ws_slow_stop(struct ws_loop *l)
{
    pthread_mutex_lock(&l->slow_mu);
    l->slow_quit = 1;
    pthread_cond_broadcast(&l->slow_cond);
    size_t n = l->n_slow_threads;
    pthread_mutex_unlock(&l->slow_mu);
    for (size_t i = 0; i < n; i++)
        pthread_join(l->slow_threads[i], NULL);
    l->n_slow_threads = 0;
    pthread_mutex_lock(&l->slow_mu); /* what came after the workers' last look */
    struct ws_pending *g = l->garbage;
    l->garbage = NULL;
    pthread_mutex_unlock(&l->slow_mu);
    free_garbage(g);
}

void ws_slow_free(struct ws_loop *l)
{
    pthread_cond_destroy(&l->slow_cond);
    pthread_mutex_destroy(&l->slow_mu);
}
