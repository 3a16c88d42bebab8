/* What a WebSocket does when its event loop (ws_loop.c) finds it readable, writable, woken or
 * at its deadline: framing by wslay on the upgraded socket, and the socket's limits
 * (docs/websocket.md):
 *
 * - ws_max_message_bytes: a longer message closes the socket with 1009, at the header of the
 *   frame that declares it so (frame_check);
 * - ws_max_in_flight: with that many requests unanswered the loop stops reading the socket
 *   (EPOLLIN off; and with ws_max_message_bytes of replies unsent, pongs included, or
 *   MAX_QUEUED_REPLIES of them), so a client that sends faster than the session computes,
 *   or reads slower, fills its own TCP window, not our memory; the messages
 *   already read when the limit is reached (at most one read's worth) wait parked;
 * - fairness: the loop reads at most READ_PER_TURN and writes at most WRITE_PER_TURN of a
 *   socket in one turn before it serves the others;
 * - ws_idle_timeout_s: no frame either way and nothing in flight for that long closes with
 *   1001; a client's ping counts (wslay answers it with a pong);
 * - protocol errors close with 1002 (wslay), an unknown binary layout with 1003, a socket
 *   whose session is gone with 1008 (ws_bridge.c), an internal failure with 1011, and a
 *   draining server with 1001 once the requests in flight are answered. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "rnnd/status.h"
#include "ws_internal.h"

/* How long a socket that sent its close waits for the client's (RFC 6455 7.1.1). */
#define CLOSE_WAIT_S 2.0

/* A message read while ws_max_in_flight requests were unanswered. */
struct parked {
    int binary;
    size_t len;
    struct parked *next;
    uint8_t data[];
};

/* The socket's state, its loop thread's alone (W's fields shared with other threads are
 * under W->mu). */
struct conn {
    rnnd_ws *w;
    wslay_event_context_ptr ctx;
    struct parked *parked, *parked_tail;
    double close_t0;    /* when our close was queued */
    double stop_t0;     /* when the loop saw the server drain (W->stop) */
    const char *reason; /* our close's, while it waits for the replies before it */
    int close_queued;   /* handed to wslay */
    int failed;         /* out of memory for a parked message */
    int cancelled;      /* the client's close came: its streams were told to stop */
    uint8_t head[16];   /* a frame's header taken from wslay, not sent yet (on_send) */
    size_t head_len;
    /* the frames read so far, followed header by header (frame_check) */
    uint8_t fhead[10]; /* the current frame's header bytes so far, up to its length */
    size_t fhead_len;  /* how many */
    uint64_t fleft;    /* payload bytes of the current frame still to come */
    uint64_t fmsg;     /* payload bytes declared so far by the current message's frames */
    int fin_open;      /* a fragmented message was begun and not finished */
    int bad_frame;     /* a frame refused at its header: we close with this code (1002, 1009) */
    /* long replies queued to wslay as fragmented messages, read from in place (read_reply),
     * in their order; and their bytes not yet handed to wslay */
    struct ws_pending *sending, *sending_tail;
    size_t sending_bytes;
    size_t turn_read; /* bytes read in this turn of the loop (READ_PER_TURN) */
    size_t turn_sent; /* bytes written in this turn, SEND_COST more a write (WRITE_PER_TURN) */
};

/* At most this many bytes are read from one socket in one turn of the event loop, which then
 * serves the other sockets before it reads on (epoll reports the socket again): a client
 * flooding frames that need no reply (unsolicited pongs, empty continuation frames) held the
 * loop, and every other socket, for as long as it sent (trial 25 F1: 4 s of flood, a victim's
 * step 4,011 ms late). 16 KiB: four JSON steps of H = 512, or ~2,700 empty frames. */
#define READ_PER_TURN (16 * 1024)
/* Each frame read counts this many bytes more against READ_PER_TURN: a frame costs wslay
 * and the loop far more than its bytes, and a flood of 1-byte continuation frames (7 bytes
 * each on the wire, 2,300 a turn) held the loop as the empty pongs had (trial 32: a
 * victim's p99 160-327 ms). */
#define FRAME_READ_COST 64

/* At most this many bytes are written to one socket in one turn of the event loop, each write
 * (a system call: one a frame, the header going with its payload) counted SEND_COST bytes more;
 * the loop then serves the other sockets and writes on at its next turn (epoll reports the
 * socket writable again). A write begun goes whole: the share is checked between writes. A
 * client flooding empty pings and reading its pongs had the loop write thousands of them in a
 * turn, one sendmsg each, while every other socket waited (trial 25 F3: a victim's step p50
 * 5.3-6.6 ms, p99 34-35 ms, against 0.4-0.7 ms). 16 KiB and 1 KiB a write: 16 small frames
 * (pongs, steps' replies), or four 4 KiB replies, a turn; measured (tests/test_websocket.py,
 * Limits): 256 a write (64 frames) left the victim's p50 at 6-7 ms, 1 KiB at 2 ms. */
#define WRITE_PER_TURN (16 * 1024)
#define SEND_COST 1024

/* At most this many replies (pongs included) wait unsent before the socket is no longer read:
 * an empty pong costs memory (wslay's message, about 100 bytes) but no byte of
 * ws_max_message_bytes. */
#define MAX_QUEUED_REPLIES 1024

/* How many of the N bytes read at BUF wslay may have: all of them, or those before a frame
 * header that wslay's framing refuses (a fragmented control frame, one over 125 bytes, a
 * length not in its shortest form or with its top bit set). wslay answers those by dropping
 * the connection without a close frame (wslay_frame_recv's WSLAY_ERR_PROTO), so such a frame
 * is kept from it and the loop closes with 1002 itself (RFC 6455 7.4.1). A data frame whose
 * declared length takes its message over ws_max_message_bytes is kept from wslay too, and
 * the loop closes with 1009 at its header (wslay would only once the payload came). Everything
 * else is left to wslay. */
static size_t frame_check(struct conn *c, const uint8_t *buf, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (c->fleft) {
            size_t k = c->fleft < n - i ? (size_t)c->fleft : n - i;
            c->fleft -= k;
            i += k;
            continue;
        }
        c->fhead[c->fhead_len++] = buf[i++];
        if (c->fhead_len < 2)
            continue;
        uint8_t b0 = c->fhead[0], len7 = c->fhead[1] & 0x7f;
        if ((b0 & 0x08) && (!(b0 & 0x80) || len7 > 125)) {
            c->bad_frame = WSLAY_CODE_PROTOCOL_ERROR;
            return i - 1; /* wslay sees at most the first byte: it waits for the second */
        }
        size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        if (c->fhead_len < 2 + ext)
            continue;
        uint64_t plen = len7;
        if (ext) {
            plen = 0;
            for (size_t k = 0; k < ext; k++)
                plen = plen << 8 | c->fhead[2 + k];
            if (plen < (ext == 2 ? 126u : 65536u) || plen >> 63) {
                c->bad_frame = WSLAY_CODE_PROTOCOL_ERROR;
                return i - 1;
            }
        }
        /* a data frame that begins a message (text, binary) or goes on with one (continuation);
         * one out of order is left to wslay, whose close is 1002 */
        unsigned op = b0 & 0x0f;
        if ((op == 1 || op == 2) ? !c->fin_open : op == 0 && c->fin_open) {
            c->fmsg = op ? plen : c->fmsg + plen; /* fmsg is under the limit: no overflow */
            if (c->fmsg > (uint64_t)c->w->app->cfg->ws_max_message_bytes) {
                c->bad_frame = WSLAY_CODE_MESSAGE_TOO_BIG;
                return i - 1;
            }
            c->fin_open = !(b0 & 0x80);
        }
        c->fleft = plen + ((c->fhead[1] & 0x80) ? 4 : 0); /* the mask key, then the payload */
        c->fhead_len = 0;
        c->turn_read += FRAME_READ_COST;
    }
    return n;
}

/* Whether the replies waiting to be sent (pongs included) are a message's worth, or
 * MAX_QUEUED_REPLIES of them: the socket is not read until they have gone. */
static int replies_full(const struct conn *c)
{
    return wslay_event_get_queued_msg_length(c->ctx) + c->sending_bytes >
        (size_t)c->w->app->cfg->ws_max_message_bytes ||
        wslay_event_get_queued_msg_count(c->ctx) > MAX_QUEUED_REPLIES;
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    struct conn *c = user;
    rnnd_ws *w = c->w;
    if (c->parked || c->bad_frame || replies_full(c) || c->turn_read >= READ_PER_TURN) {
        /* backpressure: nothing more is read until the parked messages have started, nor
         * while a message's worth of replies waits: wslay_event_recv reads on until a read
         * would block, queuing a pong for each ping, so a client that pings and never reads
         * would otherwise grow the queue without bound */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (w->extra_off < w->extra_len) {
        size_t n = w->extra_len - w->extra_off < len ? w->extra_len - w->extra_off : len;
        memcpy(buf, w->extra + w->extra_off, n);
        w->extra_off += n;
        c->turn_read += n;
        n = frame_check(c, buf, n);
        if (!n) {
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        return (ssize_t)n;
    }
    ssize_t n;
    do
        n = recv(w->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    c->turn_read += (size_t)n;
    n = (ssize_t)frame_check(c, buf, (size_t)n);
    if (!n) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct conn *c = user;
    if (!c->head_len && c->turn_sent >= WRITE_PER_TURN) {
        /* this turn's share is written: the rest at the next (a frame's header kept here
         * goes with its payload first) */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    /* a frame's header and payload come as two calls (the header's with WSLAY_MSG_MORE): the
     * header is kept and goes with the payload in one sendmsg, one system call a reply */
    if ((flags & WSLAY_MSG_MORE) && !c->head_len && len <= sizeof c->head) {
        memcpy(c->head, data, len);
        c->head_len = len;
        return (ssize_t)len;
    }
    struct iovec iov[2] = {{c->head, c->head_len}, {(void *)(uintptr_t)data, len}};
    struct msghdr mh = {.msg_iov = c->head_len ? iov : iov + 1, .msg_iovlen = c->head_len ? 2 : 1};
    int more = (flags & WSLAY_MSG_MORE) ? MSG_MORE : 0;
    ssize_t n;
    do
        n = sendmsg(c->w->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT | more);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        wslay_event_set_error(ctx,
                              errno == EAGAIN || errno == EWOULDBLOCK ? WSLAY_ERR_WOULDBLOCK
                                                                      : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    c->turn_sent += (size_t)n + SEND_COST;
    c->w->last_io = rnnd_mono_s(); /* a client reading a long reply is not idle */
    if (c->head_len) {
        size_t h = (size_t)n < c->head_len ? (size_t)n : c->head_len;
        memmove(c->head, c->head + h, c->head_len - h);
        c->head_len -= h;
        n -= (ssize_t)h;
        if (!n) { /* none of DATA went: wslay offers it again once the socket is writable */
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
    }
    return n;
}

/* Close with CODE: nothing more starts from now on, and the close frame goes once the
 * replies queued before it are sent (wslay sends control frames ahead of data). */
static void queue_close(struct conn *c, int code, const char *reason)
{
    rnnd_ws *w = c->w;
    if (w->close_code)
        return;
    w->close_code = code;
    c->reason = reason;
    c->close_t0 = rnnd_mono_s();
}

static void send_close(struct conn *c)
{
    if (c->close_queued || !c->w->close_code || wslay_event_get_queued_msg_count(c->ctx))
        return;
    c->close_queued = 1;
    c->close_t0 = rnnd_mono_s();
    wslay_event_queue_close(c->ctx, (uint16_t)c->w->close_code, (const uint8_t *)c->reason,
                            strlen(c->reason));
}

static size_t in_flight(rnnd_ws *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->in_flight;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Start MSG's request, or close the socket as the bridge says. A request whose session lookup
 * may wait on the store, a long text message (or one behind such a request of the socket)
 * starts on the slow path (ws_slow.c): the loop serves every socket and must not wait. */
static void start(struct conn *c, int binary, const uint8_t *data, size_t len)
{
    rnnd_ws *w = c->w;
    int code;
    struct ws_pending *p = ws_bridge_begin(w, binary, data, len, &code);
    if (!p) {
        queue_close(c, code,
                    code == WSLAY_CODE_UNSUPPORTED_DATA
                        ? "a binary frame must follow docs/websocket.md's layout"
                        : "internal error");
        return;
    }
    size_t cost;
    if (ws_slow_wanted(w, p, binary, data, len, &cost) && !ws_slow_post(w, p, binary, data, len))
        return;
    c->turn_read += cost * WS_COST_READ_BYTES; /* its decoding is this turn's work */
    ws_bridge_start(w, p, binary, data, len);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    struct conn *c = user;
    rnnd_ws *w = c->w;
    w->last_io = rnnd_mono_s();
    int binary = arg->opcode == WSLAY_BINARY_FRAME;
    if (arg->opcode != WSLAY_TEXT_FRAME && !binary)
        return; /* control frames are wslay's */
    rnnd_metrics_ws_message(&w->app->metrics, 0, binary);
    if (w->close_code)
        return; /* after our close nothing more starts */
    size_t max = (size_t)w->app->cfg->ws_max_in_flight;
    if (!c->parked && in_flight(w) < max) {
        start(c, binary, arg->msg, arg->msg_length);
        return;
    }
    struct parked *p = malloc(sizeof *p + arg->msg_length);
    if (!p) {
        c->failed = 1;
        return;
    }
    p->binary = binary;
    p->len = arg->msg_length;
    p->next = NULL;
    if (arg->msg_length) /* an empty message's msg is NULL, which memcpy may not get */
        memcpy(p->data, arg->msg, arg->msg_length);
    if (c->parked_tail)
        c->parked_tail->next = p;
    else
        c->parked = p;
    c->parked_tail = p;
}

/* Start the parked messages that fit under ws_max_in_flight now. */
static void unpark(struct conn *c)
{
    size_t max = (size_t)c->w->app->cfg->ws_max_in_flight;
    while (c->parked && !c->w->close_code && in_flight(c->w) < max) {
        struct parked *p = c->parked;
        c->parked = p->next;
        if (!c->parked)
            c->parked_tail = NULL;
        start(c, p->binary, p->data, p->len);
        free(p);
    }
}

/* Free P, answered, its reply sent or not to be: one started on the slow path is freed there
 * (ws_slow_discard). */
static void dispose(rnnd_ws *w, struct ws_pending *p)
{
    if (p->slow)
        ws_slow_discard(w, p);
    else
        ws_bridge_free_pending(p);
}

/* The next bytes of long reply P (SOURCE) for wslay's frame of at most LEN (4 KiB): its
 * envelope, then its body in place. P goes once the last is read. */
static ssize_t read_reply(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                          const union wslay_event_msg_source *source, int *eof, void *user)
{
    (void)ctx;
    struct conn *c = user;
    struct ws_pending *p = source->data;
    size_t n = 0;
    if (p->sent < p->msg_len) {
        n = p->msg_len - p->sent < len ? p->msg_len - p->sent : len;
        memcpy(buf, p->msg + p->sent, n);
        p->sent += n;
    }
    if (n < len) { /* the envelope is all read */
        size_t off = p->sent - p->msg_len;
        size_t k = p->body_len - off < len - n ? p->body_len - off : len - n;
        memcpy(buf + n, p->body + off, k);
        p->sent += k;
        n += k;
    }
    c->sending_bytes -= n;
    if (p->sent == p->msg_len + p->body_len) {
        *eof = 1;
        c->sending = p->next; /* P is the first: wslay sends its messages in order */
        if (!c->sending)
            c->sending_tail = NULL;
        dispose(c->w, p);
    }
    return (ssize_t)n;
}

/* A finished request P (ws_bridge_flush's DONE): its reply, if made, queued as one message,
 * or a long one as fragments read from in place (read_reply); P freed at once, or once
 * its reply is read. */
static void reply_done(rnnd_ws *w, struct ws_pending *p)
{
    struct conn *c = w->conn;
    int op = p->msg_binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
    if (!w->ctx || !p->has_msg) {
        dispose(w, p); /* no reply; or no context: none was made, no request either */
        return;
    }
    w->last_io = rnnd_mono_s();
    if (!p->body_len) {
        struct wslay_event_msg m = {(uint8_t)op, (const uint8_t *)p->msg, p->msg_len};
        if (!wslay_event_queue_msg(w->ctx, &m))
            rnnd_metrics_ws_message(&w->app->metrics, 1, p->msg_binary);
        dispose(w, p);
        return;
    }
    struct wslay_event_fragmented_msg m = {.opcode = (uint8_t)op,
                                           .source.data = p,
                                           .read_callback = read_reply};
    if (wslay_event_queue_fragmented_msg(w->ctx, &m)) {
        dispose(w, p); /* our close went before it: nothing more is sent */
        return;
    }
    rnnd_metrics_ws_message(&w->app->metrics, 1, p->msg_binary);
    if (c->sending_tail)
        c->sending_tail->next = p;
    else
        c->sending = p;
    c->sending_tail = p;
    c->sending_bytes += p->msg_len + p->body_len;
}

/* A stream's event, queued as one message (ws_bridge_flush's SEND). */
static void send_event(rnnd_ws *w, int binary, const char *data, size_t len)
{
    if (!w->ctx)
        return; /* none was made: no request either */
    struct wslay_event_msg m = {binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                                (const uint8_t *)data, len};
    if (!wslay_event_queue_msg(w->ctx, &m))
        rnnd_metrics_ws_message(&w->app->metrics, 1, binary);
    w->last_io = rnnd_mono_s();
}

/* The step: read while under the limits, send what is queued, until both sides closed. */
int ws_conn_run(rnnd_ws *w, uint32_t events, uint32_t *want, double *deadline)
{
    struct conn *c = w->conn;
    const rnnd_config *cfg = w->app->cfg;
    if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN))
        return 1;
    c->turn_read = c->turn_sent = 0;
    if ((events & EPOLLIN) && wslay_event_recv(c->ctx))
        return 1;
    if ((events & EPOLLOUT) && wslay_event_send(c->ctx))
        return 1;
    for (;;) {
        /* the replies go at once: no wait for EPOLLOUT first on a socket that is writable */
        if (ws_bridge_flush(w, send_event, reply_done) && wslay_event_want_write(c->ctx) &&
            wslay_event_send(c->ctx))
            return 1;
        if (w->session_gone)
            queue_close(c, WSLAY_CODE_POLICY_VIOLATION, "the session is gone");
        unpark(c);
        if (!c->cancelled && wslay_event_get_close_received(c->ctx)) {
            /* the client's close ends the socket as a closed HTTP connection ends: its
             * generations, streamed or not, stop at their next token (other requests finish) */
            c->cancelled = 1;
            ws_bridge_cancel(w);
        }
        if (c->bad_frame && !w->close_code) {
            queue_close(c, c->bad_frame,
                        c->bad_frame == WSLAY_CODE_MESSAGE_TOO_BIG
                            ? "a message over ws_max_message_bytes"
                            : "a control frame must be whole and at most 125 bytes, a length "
                              "in its shortest form under 2^63");
            wslay_event_shutdown_read(c->ctx); /* nothing after it can be read as frames */
        }
        if (c->failed || w->failed)
            queue_close(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        size_t busy = w->in_flight;
        pthread_mutex_unlock(&w->mu);
        double now = rnnd_mono_s();
        if (stop && !c->stop_t0)
            c->stop_t0 = now;
        if (stop && !busy && !c->parked)
            queue_close(c, WSLAY_CODE_GOING_AWAY, "the server is shutting down");
        if (!busy && !c->parked && now - w->last_io >= (double)cfg->ws_idle_timeout_s)
            queue_close(c, WSLAY_CODE_GOING_AWAY, "idle timeout (ws_idle_timeout_s)");
        send_close(c);
        int want_write = wslay_event_want_write(c->ctx);
        /* once our close is queued, reading only waits for the client's close */
        int want_read = wslay_event_want_read(c->ctx) && !replies_full(c) &&
            (w->close_code || (!stop && !c->parked && busy < (size_t)cfg->ws_max_in_flight));
        /* our close waits for the replies before it, and then for the client's close, 2 s;
         * while the server drains, the replies of a client reading them slowly get as long as
         * HTTP replies do, shutdown_timeout_s (trial 35: long replies were cut after 2 s) */
        double close_end = c->close_t0 + CLOSE_WAIT_S;
        if (stop && !c->close_queued && c->stop_t0 + (double)cfg->shutdown_timeout_s > close_end)
            close_end = c->stop_t0 + (double)cfg->shutdown_timeout_s;
        if (w->close_code && (now >= close_end || (!want_write && !wslay_event_want_read(c->ctx))))
            return 1; /* our close is sent and the client's came; or a client too slow to read
                       * what was left to send, or to answer the close */
        if (!w->close_code && !wslay_event_want_read(c->ctx) && !want_write && !busy)
            return 1; /* the client closed, and its close was answered */
        int turn_left = c->turn_read < READ_PER_TURN;
        if (want_read && w->extra_off < w->extra_len && turn_left) {
            if (wslay_event_recv(c->ctx))
                return 1;
            continue;
        }
        *want = (want_read ? EPOLLIN : 0) | (want_write ? EPOLLOUT : 0);
        double left =
            w->close_code ? close_end - now : (double)cfg->ws_idle_timeout_s - (now - w->last_io);
        if (!w->close_code && (busy || c->parked))
            left = 1.0; /* not idle: a reply's wake-up comes through the loop */
        if (want_read && w->extra_off < w->extra_len)
            left = 0; /* bytes read with the upgrade wait: the next turn (epoll knows none) */
        *deadline = now + (left < 0 ? 0 : left > 1.0 ? 1.0 : left);
        return 0;
    }
}

int ws_conn_begin(rnnd_ws *w)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->w = w;
    w->conn = c;
    struct wslay_event_callbacks cb = {.recv_callback = on_recv,
                                       .send_callback = on_send,
                                       .on_msg_recv_callback = on_msg};
    if (wslay_event_context_server_init(&c->ctx, &cb, c))
        return -1;
    w->ctx = c->ctx;
    wslay_event_config_set_max_recv_msg_length(c->ctx, (uint64_t)w->app->cfg->ws_max_message_bytes);
    w->last_io = rnnd_mono_s();
    return 0;
}

int ws_conn_finish(rnnd_ws *w)
{
    struct conn *c = w->conn;
    if (!w->conn_finishing) { /* the requests' completions touch W: wait for every one */
        w->conn_finishing = 1;
        ws_bridge_cancel(w);
    }
    ws_bridge_flush(w, send_event, reply_done);
    if (!ws_bridge_idle(w))
        return 0;
    if (c && c->ctx) {
        /* who closed, and how: ours (wslay's own for 1002, 1007 and 1009: a close sent, none
         * received before it; 1006 when ours never went, the replies before it unread), else
         * the client's (1006: the connection just ended) */
        int sent = wslay_event_get_close_sent(c->ctx);
        int received = wslay_event_get_close_received(c->ctx);
        int ours = (w->close_code && (sent || !received)) || (sent && !received);
        int code = WSLAY_CODE_ABNORMAL_CLOSURE;
        if (w->close_code && sent)
            code = w->close_code;
        else if (sent && !received)
            code = wslay_event_get_status_code_sent(c->ctx);
        else if (received)
            code = wslay_event_get_status_code_received(c->ctx);
        rnnd_metrics_ws_close(&w->app->metrics, code);
        RNND_LOG(&w->app->log, RNND_LOG_INFO, "ws_closed",
                 "key=%s requests=%llu code=%d by=%s secs=%.3f", w->key ? w->key->name : "-",
                 (unsigned long long)w->requests, code, ours ? "server" : "client",
                 rnnd_mono_s() - w->t0);
        wslay_event_context_free(c->ctx);
    }
    w->ctx = NULL;
    while (c && c->sending) { /* replies not wholly sent: wslay frees only its own part */
        struct ws_pending *p = c->sending;
        c->sending = p->next;
        dispose(w, p);
    }
    while (c && c->parked) {
        struct parked *p = c->parked;
        c->parked = p->next;
        free(p);
    }
    free(c);
    w->conn = NULL;
    return 1;
}
