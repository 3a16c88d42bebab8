/* The WebSocket module's own header. WebSocket sessions (docs/websocket.md): GET
 * /v1/sessions/{id}/ws upgrades, and the socket then carries the session's step, generate,
 * state and reset requests as text frames (JSON) and its steps as binary frames (ws_codec.h).
 *
 * It builds on the HTTP module's internals (http_internal.h); the HTTP module calls it back
 * only through the pointers the first socket sets (rnnd_http's ws_close_all, ws_stop_all).
 * The parts, one job each:
 *   ws_handshake.c  the route's handler: the upgrade request's checks (headers, the session,
 *                   max_websockets) and the 101 reply with Sec-WebSocket-Accept;
 *   ws_loop.c       the event loops (one thread each, epoll over many sockets): when a
 *                   socket acts (readable, writable, woken, a deadline), and its wake-up;
 *   ws_conn.c       what a socket does then: framing by wslay, backpressure
 *                   (ws_max_in_flight), ping/pong, close codes, the idle timeout;
 *   ws_bridge.c     a message into a request of its own (an rnnd_req with no connection)
 *                   run by the HTTP route's handler, and its reply into a message;
 *   ws_slow.c       the slow path: a message whose session lookup may need the store
 *                   (cluster mode, a session not held here) starts on a worker of its own,
 *                   not the loop, and the socket's later messages start behind it;
 *   ws_socket.c     the socket's record: wake it, drop a reference, give back its slot;
 *   ws_codec.c      the binary frames' layout (ws_codec.h).
 *
 * Threads: the event loops' (ws_loop.c; not one a socket), each serving many sockets; a socket's
 * framing and replies are its loop's alone; a loop's slow-path workers (ws_slow.c, started by
 * the first message that needs one) start the requests the loop must not wait for. The
 * computation is the batcher's, as for HTTP steps (a socket's steps batch with other
 * sessions'), and every request is a job on the session's queue, so requests over HTTP and
 * over the socket run in one order. A socket's replies leave in the order of its requests.
 *
 * Lock order: h->wsmu, then a socket's mu (W->mu), then a stream's mu, then its loop's mu
 * (innermost: nothing is taken under it). A loop's slow_mu (ws_slow.c) is taken with none of
 * these held, and none is taken under it. A loop's own lists (its sockets, their deadlines
 * and interest, struct conn) are its thread's alone, unlocked. */
#ifndef RNND_WS_INTERNAL_H
#define RNND_WS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http_internal.h"
#include "session.h"

typedef struct rnnd_ws rnnd_ws;

/* The workers of a loop's slow path (ws_slow.c): four sockets' moved sessions are taken back
 * at once; a fifth socket's waits for one of them (the loop serves on meanwhile). */
#define WS_SLOW_THREADS 4

/* An event loop (ws_loop.c): its thread, its epoll and eventfd, and the ready list that
 * ws_conn_wake() (ws_socket.c) fills from any thread. */
struct ws_loop {
    rnnd_http *h;
    pthread_t thread;
    int ep;  /* epoll: the sockets and EFD */
    int efd; /* an eventfd: the ready list has grown while the loop slept, or quit */

    pthread_mutex_t mu; /* READY, each socket's QUEUED, SLEEPING, QUIT (innermost lock) */
    rnnd_ws *ready, *ready_tail;
    int sleeping; /* in epoll_wait with an empty ready list: a wake-up writes EFD */
    int quit;

    /* the loop thread's own */
    rnnd_ws *socks;  /* every socket of the loop, for their deadlines */
    double next_due; /* the earliest deadline of SOCKS */

    /* the slow path (ws_slow.c): sockets with messages to start on a worker, in turn */
    pthread_mutex_t slow_mu; /* SLOW_*, each socket's SLOW_* (taken alone) */
    pthread_cond_t slow_cond;
    rnnd_ws *slow, *slow_tail;
    pthread_t slow_threads[WS_SLOW_THREADS];
    size_t n_slow_threads; /* started (by the first message of the slow path) */
    int slow_quit;
    struct ws_pending *garbage; /* answered requests of the slow path, for a worker to free */
};

/* One request of a socket, from its frame to its reply (ws_bridge.c). */
struct ws_pending {
    rnnd_ws *w;
    rnnd_req *r;   /* the request; its reply is the message's body */
    int silent;    /* no reply: the frame closed the socket */
    int streaming; /* the reply is r->stream's events ("stream": true; the mutex guards it) */
    char *sbuf;    /* bytes of the stream read and not yet a whole event */
    size_t slen;
    int done;     /* its reply is set (guarded by the socket's mutex) */
    int starting; /* a slow-path worker still runs its start: the loop leaves it (the mutex) */
    int slow;     /* started on the slow path: freed there too (ws_slow_discard) */
    int binary;   /* came as a binary frame */
    int has_seq;  /* the client gave "seq" */
    int64_t seq;  /* echoed in the reply */
    char op[16];  /* the text frame's "op" */
    int depth;    /* text: its nesting, once checked on the loop: 1 within max_json_depth, -1
                   * deeper (0: not checked; ws_slow_wanted) */
    /* the reply, once made by the loop thread: MSG (owned), then BODY (in the request's own
     * reply, not copied: a long reply, WS_REPLY_INPLACE_BYTES) */
    int has_msg;
    char *msg;
    size_t msg_len;
    const char *body;
    size_t body_len;
    size_t sent; /* bytes of MSG and BODY handed to wslay (ws_conn.c) */
    int msg_binary;
    /* W's list; once answered, the loop's list of replies being sent (struct conn), or the
     * slow path's garbage (ws_slow_discard) */
    struct ws_pending *next;
};

struct rnnd_ws {
    atomic_int refs; /* the upgrade request's, the loop's, a completion's, the ready list's */
    rnnd_http *h;
    rnnd_app *app;
    rnnd_session *s; /* one reference: the socket's session */
    char id[MAX_SEGMENT + 1];
    const rnnd_key *key; /* the upgrade request's API key (NULL: keys off) */
    int fd;              /* the socket (MHD's, or its end of a pair under TLS) */
    struct MHD_UpgradeResponseHandle *urh;
    char *extra; /* bytes MHD read past the upgrade request: the first frames */
    size_t extra_len, extra_off;
    void *ctx;            /* wslay_event_context_ptr */
    struct conn *conn;    /* the loop's state of the socket (ws_conn.c) */
    struct ws_loop *loop; /* the loop that serves it (ws_loop.c) */
    int queued;           /* on the loop's ready list (under the loop's mu) */
    rnnd_ws *rnext;       /* ... its next */
    /* the loop thread's own */
    int begun;              /* taken up by the loop */
    int ending;             /* its socket is done; its requests finish */
    int conn_finishing;     /* ... and were told to stop (ws_conn_finish) */
    int ended;              /* handed back to MHD */
    uint32_t events;        /* its epoll interest */
    double deadline;        /* when it must act though nothing happens (monotonic s) */
    rnnd_ws *lprev, *lnext; /* the loop's sockets */

    pthread_mutex_t mu; /* the pending list, its flags, IN_FLIGHT, REQUESTS, STOP */
    struct ws_pending *head, *tail;
    size_t in_flight;
    uint64_t requests; /* started, for the close's log line */
    int stop;          /* close: the server drains (1001) */

    /* the slow path (ws_slow.c), under the loop's slow_mu */
    struct ws_slow_msg *slow_head, *slow_tail; /* messages to start, in order */
    int slow_queued;                           /* on the loop's slow list */
    int slow_busy;                             /* a worker is starting one of them */
    int slow_ever;      /* the loop thread's alone: a message of W went to the slow path */
    rnnd_ws *slow_next; /* the loop's slow list */

    double t0;            /* monotonic seconds at the upgrade */
    double last_io;       /* monotonic seconds of the last frame either way */
    int close_code;       /* the close we queued (0: none yet) */
    int failed;           /* out of memory for a stream's events: close (1011) */
    int session_gone;     /* a request found the session deleted or expired: close (1008) */
    rnnd_ws *prev, *next; /* h->ws_list */

    /* the client's address (AF_UNSPEC: unknown), for max_websockets_per_ip */
    struct sockaddr_storage addr;
    rnnd_ws *cprev, *cnext; /* h->ws_counted, under h->wsmu */
};

/* ---- ws_loop.c ---- */
/* Hand W to an event loop (the upgrade handler); the first socket starts the loops. Returns 0,
 * or -1 when no loop could start (the caller closes the socket and drops the loop's
 * reference). Takes h->wsmu. */
int ws_conn_start(rnnd_ws *w);
/* Every open socket finishes its requests and closes with 1001 (draining); stop_all then
 * waits for them to end and ends the loops (before MHD stops). Take wsmu. */
void rnnd_ws_close_all(rnnd_http *h);
void rnnd_ws_stop_all(rnnd_http *h);
/* ---- ws_conn.c (the loop thread) ---- */
/* W's state and wslay context. Returns -1 out of memory. */
int ws_conn_begin(rnnd_ws *w);
/* Let W act on EVENTS (epoll's; 0 for a wake-up or a deadline): read, make and send replies,
 * close. Returns 1 once the socket is done, else 0 with *WANT (EPOLLIN, EPOLLOUT) and
 * *DEADLINE (monotonic s) set. */
int ws_conn_run(rnnd_ws *w, uint32_t events, uint32_t *want, double *deadline);
/* The socket is done: its requests are cancelled and, once all are answered, its state
 * freed. Returns 1 then, 0 while some still run (call again when woken). */
int ws_conn_finish(rnnd_ws *w);

/* ---- ws_socket.c ---- */
/* Wake W's loop: a reply is ready, or W must close. Any thread, holding a reference to W;
 * takes the loop's mu. */
void ws_conn_wake(rnnd_ws *w);
/* Drop a reference to W; the last frees it, its session reference and its max_websockets
 * slot. Its socket is closed already (MHD_upgrade_action) or was never handed over. */
void ws_unref(rnnd_ws *w);
/* Give back W's max_websockets slot (ws_handshake.c took it). Takes h->wsmu. */
void ws_uncount(rnnd_ws *w);

/* ---- ws_bridge.c ---- */
/* A whole message of W (text: JSON; binary: ws_codec.h) arrived: its request joins W's list
 * (its reply's place). Returns it, to start with ws_bridge_start; or NULL with *CODE, a close
 * code (RFC 6455): the socket must close (out of memory, a binary frame of another layout).
 * The loop thread. */
struct ws_pending *ws_bridge_begin(rnnd_ws *w, int binary, const uint8_t *data, size_t len,
                                   int *code);
/* Start the request of message DATA (W's pending P, from ws_bridge_begin): run its handler,
 * or answer it at once. On the loop thread, or on a worker of the slow path (ws_slow.c). */
void ws_bridge_start(rnnd_ws *w, struct ws_pending *p, int binary, const uint8_t *data, size_t len);
/* Replies longer than this go from the request's own reply in place, as frames of 4 KiB
 * (wslay's fragmented messages), not copied into one message: a 4 MB reply (a step of 4,000
 * characters with "outputs": "all") was copied twice on the loop, ~2,000 page faults each,
 * and 32 such sockets held every other socket's replies (trial 34: a victim's p50 / p99
 * 27-32 / 294-311 ms). 16 KiB, a turn's write share: the replies of single steps stay one
 * frame, one system call. */
#define WS_REPLY_INPLACE_BYTES (16 * 1024)
/* Make the replies of the finished requests at the head of W's list, in order: stream events
 * go to SEND(W, binary, data, len), a copy; every request answered, its reply made (p->has_msg)
 * or not, goes off the list to DONE(W, p), which owns it from then on. The loop thread.
 * Returns the number of replies made. */
size_t ws_bridge_flush(rnnd_ws *w,
                       void (*send)(rnnd_ws *w, int binary, const char *data, size_t len),
                       void (*done)(rnnd_ws *w, struct ws_pending *p));
/* Free answered request P and its reply (any thread; P is off its socket's list). */
void ws_bridge_free_pending(struct ws_pending *p);
/* Answer P 503 without starting it (ws_slow.c: its socket closed, or the server drains,
 * while it waited for a worker). */
void ws_bridge_refuse(rnnd_ws *w, struct ws_pending *p);
/* Whether W's requests have all been answered. */
int ws_bridge_idle(rnnd_ws *w);
/* The socket is closing: its generations, streamed or not, stop at their next token. */
void ws_bridge_cancel(rnnd_ws *w);

/* ---- ws_slow.c ---- */
/* Text messages longer than this are decoded on the slow path: decoding JSON up to
 * ws_max_message_bytes on the loop held every socket for 50-250 ms a message. */
#define WS_SLOW_TEXT_BYTES (64 * 1024)
/* Shorter text messages whose decoding would cost more than WS_SLOW_TEXT_COST go there too
 * (rnnd_json_decode_cost: every 16 bytes 1; outside strings a comma 1 more, an opening
 * bracket 16 more). 65,435 bytes of empty objects took the loop
 * ~10 ms each (trial 32: a victim's p50 146 ms with 16 sockets), 16 KB of 8,150 zeros ~1 ms
 * (trial 33: p50 205 ms with 64 sockets); a bracket inside a string costs nothing (trial
 * 33: a prompt of 65 '{' went to the slow path and queued behind attackers), 60 KB of one
 * number ~0.55 ms as 60 KB of a string (trial 34: its digits cost nothing). A step of 512
 * floats costs 690-945; one of 4 such steps, or of 100 steps of 13 floats, goes there. */
#define WS_SLOW_TEXT_COST 2048
/* A message started on the loop counts this many bytes a unit of cost against the socket's
 * read share of the turn (ws_conn.c, READ_PER_TURN): one message of WS_SLOW_TEXT_COST takes
 * the socket's turn, so many sockets of dense messages get one each a turn. */
#define WS_COST_READ_BYTES 8
/* The slow path's workers run this much nicer than the loop (a thread's own nice value). */
#define WS_SLOW_NICE 10
/* Whether W's message P (BINARY or text, DATA of LEN bytes) must start on the slow path: a
 * text message over WS_SLOW_TEXT_BYTES or costing more than WS_SLOW_TEXT_COST to decode (*COST:
 * that cost, 0 for a binary one; the same pass sets P->depth), an earlier one of W's waits
 * there or runs (order), or the lookup of W's session may call the store
 * (rnnd_cluster_lookup_quick). The loop thread; takes the loop's slow_mu once W has used the
 * slow path or in cluster mode. */
int ws_slow_wanted(rnnd_ws *w, struct ws_pending *p, int binary, const uint8_t *data, size_t len,
                   size_t *cost);
/* Queue message DATA of W's pending P to start on a worker (ws_bridge_start), after W's
 * earlier ones; the first call starts the loop's workers. Returns 0, or -1 (out of memory, no
 * worker could start): the caller starts it itself. Takes a reference to W while queued. */
int ws_slow_post(rnnd_ws *w, struct ws_pending *p, int binary, const uint8_t *data, size_t len);
/* Init L's slow path (ws_loop.c's loop_start); end its workers once no socket is left (their
 * messages are all started then), and free it. */
void ws_slow_init(struct ws_loop *l);
void ws_slow_stop(struct ws_loop *l);
/* Free P, an answered request of the slow path, and its reply on a worker, not on the loop:
 * they were allocated by a worker, and free() on the loop would wait for that worker's malloc
 * arena, whose lock the worker, at its lower priority, may hold while it is not running
 * (trial 33: the loop blocked in 23-29% of samples, a victim's p99 76-228 ms). Frees them at
 * once when no worker runs. The loop thread. */
void ws_slow_discard(rnnd_ws *w, struct ws_pending *p);
void ws_slow_free(struct ws_loop *l);

#endif
