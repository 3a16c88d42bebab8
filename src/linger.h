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
#include <sys/socket.h>

/* How long and how much of a refused body is read and dropped before the socket closes. */
typedef struct rnnd_linger_limits {
    double time_s;  /* in all, from the refusal */
    double idle_s;  /* without data from the client */
    uint64_t bytes; /* dropped */
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

/* How the process's descriptor limit (RLIMIT_NOFILE) is shared. A lingering socket has left
 * libmicrohttpd, so max_connections does not bound it: without a share of its own, one
 * address took a daemon to 1023 of 1024 descriptors in the audit, and libmicrohttpd then
 * failed every accept. */
typedef struct rnnd_fd_budget {
    uint64_t need;          /* own + max_connections + max_connections / 4 */
    size_t connections;     /* libmicrohttpd's limit: max_connections, or fewer to fit */
    size_t linger;          /* sockets lingering at once: a quarter of connections */
    size_t linger_per_addr; /* of them from one address: a quarter of linger, or of
                             * max_connections_per_ip when that is smaller */
} rnnd_fd_budget;

/* The fewest connections the daemon starts with. */
#define RNND_FD_MIN_CONNECTIONS 8

/* Share LIMIT descriptors: OWN for the daemon itself, then connections and a quarter as many
 * lingering sockets. Returns RNND_ERR_LIMIT when fewer than RNND_FD_MIN_CONNECTIONS fit. */
int rnnd_fd_budget_plan(uint64_t limit, size_t own, size_t max_connections, size_t max_per_ip,
                        rnnd_fd_budget *b, char *err, size_t errlen);

/* 1 when A and B are the same client host, whatever the port: the same IPv4 address (also
 * when mapped into IPv6), or IPv6 addresses in the same /64; every other family (a Unix
 * socket) is one host. */
int rnnd_same_host(const struct sockaddr_storage *a, const struct sockaddr *b);

typedef struct rnnd_linger rnnd_linger;

/* Start the lingering thread, for at most MAX sockets at once and PER_ADDR of one host. */
int rnnd_linger_new(const rnnd_linger_limits *lim, size_t max, size_t per_addr, rnnd_linger **out,
                    char *err, size_t errlen);

/* Hand over FD, a connected socket whose reply has been sent (its write side is not touched
 * here); it is ours from now on in every case. Returns RNND_ERR_LIMIT, and closes FD at once,
 * when MAX sockets already linger, or PER_ADDR of its host, or the thread is stopping. Any
 * thread. */
int rnnd_linger_add(rnnd_linger *l, int fd);

/* Sockets lingering now. Any thread. */
size_t rnnd_linger_count(rnnd_linger *l);

/* Stop the thread and close every lingering socket. NULL is a no-op. */
void rnnd_linger_free(rnnd_linger *l);

#endif
