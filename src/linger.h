/* Lingering close, as nginx does it. When a reply goes out before the request body was read
 * (a 413 for a body declared over max_body_bytes), the client may still be writing that body.
 * Closing the socket with unread data makes the kernel reset the connection, and a client
 * that writes its whole body before reading (Python's http.client, requests) then sees a
 * broken pipe instead of the reply. So the socket is handed here once the reply is sent and
 * the stream ended (libmicrohttpd shuts the write side, or sends TLS's close_notify, as it
 * closes its own descriptor): what the client still sends is read and dropped until it stops
 * or a bound is reached; then the socket is closed. One thread with one 64 KiB buffer serves
 * every lingering socket: nothing a client sends is kept. */
#ifndef RNND_LINGER_H
#define RNND_LINGER_H

#include <stddef.h>
#include <stdint.h>

/* How long and how much of a refused body is read and dropped before the socket closes. */
typedef struct rnnd_linger_limits {
    double time_s;          /* in all, from the refusal */
    double idle_s;          /* without data from the client */
    uint64_t bytes;         /* dropped */
} rnnd_linger_limits;

/* The daemon's bounds: nginx's lingering_time (30 s) and lingering_timeout (5 s, or
 * REQUEST_TIMEOUT_S when that is shorter), and 64 MiB or MAX_BODY_BYTES, whichever is larger,
 * so that a body up to four times the default limit still gets its reply. */
void rnnd_linger_limits_default(rnnd_linger_limits *lim, uint64_t max_body_bytes,
                                double request_timeout_s);

/* 1 when a refused body is done with: ELAPSED_S seconds since the refusal, IDLE_S seconds
 * since the client last sent anything, BYTES dropped. */
int rnnd_linger_spent(const rnnd_linger_limits *lim, double elapsed_s, double idle_s,
                      uint64_t bytes);

typedef struct rnnd_linger rnnd_linger;

/* Start the lingering thread, for at most MAX sockets at once. */
int rnnd_linger_new(const rnnd_linger_limits *lim, size_t max, rnnd_linger **out, char *err,
                    size_t errlen);

/* Hand over FD, a connected socket whose reply has been sent (its write side is not touched
 * here); it is ours from now on in every case. Returns RNND_ERR_LIMIT, and closes FD at once,
 * when MAX sockets already linger or the thread is stopping. Any thread. */
int rnnd_linger_add(rnnd_linger *l, int fd);

/* Sockets lingering now. Any thread. */
size_t rnnd_linger_count(rnnd_linger *l);

/* Stop the thread and close every lingering socket. NULL is a no-op. */
void rnnd_linger_free(rnnd_linger *l);

#endif
