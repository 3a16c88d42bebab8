/* The WebSockets' event loops: WS_LOOPS threads, each running epoll over many sockets, instead
 * of a thread a socket (which slept in poll() for the client's frame, then again for its
 * reply, woken by an eventfd of its own: ~2.5 context switches a step).
 *
 * A loop waits in epoll_wait() for its sockets' readiness and for its one eventfd. Another
 * thread (a worker that finished a request, a stream's writer, shutdown) wakes a socket with
 * ws_conn_wake() (ws_socket.c): the socket joins its loop's ready list and, only when the
 * loop is asleep, the eventfd is written; so the replies of a batch of 64 sessions cost one
 * wake-up, and the loop then sends every ready socket's replies. What a socket does when it is ready is ws_conn.c's
 * (ws_conn_run); this file only says when. A socket's interest (EPOLLIN off under
 * backpressure, EPOLLOUT while replies wait) and its next deadline (idle timeout, close wait)
 * come back from ws_conn_run. */
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "rnnd/status.h"
#include "ws_internal.h"

/* One loop serves every socket: measured (docs/performance.md), a loop spends a few us a step
 * of its own, far from a core's worth at 64 sockets; two (http_threads on 2 cores) measured
 * no better. */
#define WS_LOOPS 1
/* How often a socket that is finishing (its requests still running) is looked at, beside its
 * wake-ups */
#define FINISH_POLL_S 0.1

/* W's socket has ended and its requests are answered: hand the socket back to MHD, which
 * closes it, and drop the loop's reference. */
static void sock_end(struct ws_loop *l, rnnd_ws *w)
{
    w->ended = 1;
    if (w->lprev)
        w->lprev->lnext = w->lnext;
    else
        l->socks = w->lnext;
    if (w->lnext)
        w->lnext->lprev = w->lprev;
    MHD_upgrade_action(w->urh, MHD_UPGRADE_ACTION_CLOSE);
    rnnd_http *h = w->h;
    pthread_mutex_lock(&h->wsmu);
    if (w->prev)
        w->prev->next = w->next;
    else
        h->ws_list = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&h->wsmu);
    ws_unref(w);
    pthread_mutex_lock(&h->wsmu);
    h->ws_open--;
    pthread_cond_broadcast(&h->ws_cond);
    pthread_mutex_unlock(&h->wsmu);
}

/* Let W act on EVENTS (epoll's; 0 for a wake-up or a deadline). */
static void sock_step(struct ws_loop *l, rnnd_ws *w, uint32_t events)
{
    if (w->ended) /* a wake-up that came as it ended */
        return;
    if (!w->begun) { /* a new socket: its first wake-up */
        w->begun = 1;
        w->lnext = l->socks;
        if (l->socks)
            l->socks->lprev = w;
        l->socks = w;
        struct epoll_event ev = {.events = 0, .data.ptr = w};
        if (ws_conn_begin(w) || epoll_ctl(l->ep, EPOLL_CTL_ADD, w->fd, &ev))
            w->ending = 1;
    }
    if (!w->ending) {
        uint32_t want = 0;
        if (ws_conn_run(w, events, &want, &w->deadline)) {
            w->ending = 1;
            epoll_ctl(l->ep, EPOLL_CTL_DEL, w->fd, NULL);
        } else if (want != w->events) {
            struct epoll_event ev = {.events = want, .data.ptr = w};
            epoll_ctl(l->ep, EPOLL_CTL_MOD, w->fd, &ev);
            w->events = want;
        }
    }
    if (w->ending) {
        if (ws_conn_finish(w)) {
            sock_end(l, w);
            return;
        }
        w->deadline = rnnd_mono_s() + FINISH_POLL_S;
    }
    if (w->deadline < l->next_due)
        l->next_due = w->deadline;
}

/* Step the sockets whose deadline has come; find the next one. */
static void sock_deadlines(struct ws_loop *l, double now)
{
    l->next_due = now + 1.0;
    for (rnnd_ws *w = l->socks, *next; w; w = next) {
        next = w->lnext;
        if (w->deadline <= now)
            sock_step(l, w, 0); /* may end W; it updates next_due itself */
        else if (w->deadline < l->next_due)
            l->next_due = w->deadline;
    }
}

static void *loop_main(void *arg)
{
    struct ws_loop *l = arg;
    struct epoll_event evs[64];
    /* named, so that its CPU time can be told apart from the request threads' (top -H,
     * ps -L): trials measure it under attack */
    pthread_setname_np(pthread_self(), "rnnd-ws-loop");
    l->next_due = rnnd_mono_s() + 1.0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int quit = l->quit && !l->socks;
        int idle = !l->ready;
        l->sleeping = idle;
        pthread_mutex_unlock(&l->mu);
        if (quit)
            break;
        double left = l->next_due - rnnd_mono_s();
        int ms = !idle || left <= 0 ? 0 : (int)(left * 1000) + 1;
        int n = epoll_wait(l->ep, evs, (int)(sizeof evs / sizeof evs[0]), ms);
        pthread_mutex_lock(&l->mu);
        l->sleeping = 0;
        rnnd_ws *ready = l->ready; /* each stays QUEUED, linked by RNEXT, until taken below */
        l->ready = l->ready_tail = NULL;
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < n; i++) {
            rnnd_ws *w = evs[i].data.ptr;
            if (!w) {
                uint64_t v;
                if (read(l->efd, &v, sizeof v) < 0) {
                    /* read already */
                }
            } else {
                sock_step(l, w, evs[i].events);
            }
        }
        for (rnnd_ws *w = ready, *next; w; w = next) {
            pthread_mutex_lock(&l->mu);
            next = w->rnext;
            w->queued = 0; /* a wake-up from now on queues it again */
            pthread_mutex_unlock(&l->mu);
            sock_step(l, w, 0);
            ws_unref(w); /* the ready list's */
        }
        double now = rnnd_mono_s();
        if (now >= l->next_due)
            sock_deadlines(l, now);
    }
    return NULL;
}

static void loop_free(struct ws_loop *l)
{
    ws_slow_stop(l); /* ended already, unless the loops were never stopped */
    ws_slow_free(l);
    if (l->ep >= 0)
        close(l->ep);
    if (l->efd >= 0)
        close(l->efd);
    pthread_mutex_destroy(&l->mu);
}

static int loop_start(struct ws_loop *l, rnnd_http *h)
{
    l->h = h;
    pthread_mutex_init(&l->mu, NULL);
    ws_slow_init(l);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (l->ep < 0 || l->efd < 0 || epoll_ctl(l->ep, EPOLL_CTL_ADD, l->efd, &ev) ||
        pthread_create(&l->thread, NULL, loop_main, l)) {
        loop_free(l);
        return -1;
    }
    return 0;
}

/* Free H's loops, their threads ended (rnnd_ws_stop_all), with MHD stopped: no request of a
 * socket is left to wake one. A wake-up after the loop ended left a reference on its list. */
static void loops_free(rnnd_http *h)
{
    for (size_t i = 0; i < h->n_ws_loops; i++) {
        struct ws_loop *l = &h->ws_loops[i];
        for (rnnd_ws *w = l->ready, *next; w; w = next) {
            next = w->rnext;
            ws_unref(w);
        }
        loop_free(l);
    }
    free(h->ws_loops);
    h->ws_loops = NULL;
    h->n_ws_loops = 0;
}

int ws_conn_start(rnnd_ws *w)
{
    rnnd_http *h = w->h;
    pthread_mutex_lock(&h->wsmu);
    if (h->ws_loops_ended) { /* shutting down: MHD stops next */
        pthread_mutex_unlock(&h->wsmu);
        return -1;
    }
    if (!h->ws_loops) { /* the first socket starts the loops */
        struct ws_loop *loops = calloc(WS_LOOPS, sizeof *loops);
        size_t n = 0;
        while (loops && n < WS_LOOPS && !loop_start(&loops[n], h))
            n++;
        if (!n) {
            free(loops);
            pthread_mutex_unlock(&h->wsmu);
            return -1;
        }
        h->ws_loops = loops;
        h->n_ws_loops = n;
        h->ws_free = loops_free;
    }
    w->loop = &h->ws_loops[h->ws_next_loop++ % h->n_ws_loops];
    w->stop = atomic_load(&w->app->draining);
    h->ws_open++;
    w->next = h->ws_list;
    if (h->ws_list)
        h->ws_list->prev = w;
    h->ws_list = w;
    pthread_mutex_unlock(&h->wsmu);
    ws_conn_wake(w); /* the loop takes it up (sock_step) */
    return 0;
}

void rnnd_ws_close_all(rnnd_http *h)
{
    pthread_mutex_lock(&h->wsmu);
    for (rnnd_ws *w = h->ws_list; w; w = w->next) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_mutex_unlock(&w->mu);
        ws_conn_wake(w);
    }
    pthread_mutex_unlock(&h->wsmu);
}

void rnnd_ws_stop_all(rnnd_http *h)
{
    rnnd_ws_close_all(h);
    pthread_mutex_lock(&h->wsmu);
    while (h->ws_open)
        pthread_cond_wait(&h->ws_cond, &h->wsmu);
    /* the loops end; their memory stays until loops_free: a request's completion may still
     * be waking its socket, whose reference it holds */
    h->ws_loops_ended = 1;
    struct ws_loop *loops = h->ws_loops;
    size_t n = h->n_ws_loops;
    pthread_mutex_unlock(&h->wsmu);
    for (size_t i = 0; i < n; i++) {
        struct ws_loop *l = &loops[i];
        pthread_mutex_lock(&l->mu);
        l->quit = 1;
        pthread_mutex_unlock(&l->mu);
        uint64_t one = 1;
        if (write(l->efd, &one, sizeof one) < 0) {
            /* a wake-up is pending already */
        }
        pthread_join(l->thread, NULL);
        ws_slow_stop(l); /* no socket is left: every message of the slow path has started */
    }
}
