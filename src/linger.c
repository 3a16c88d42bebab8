/* Lingering close: read and drop the rest of a refused body, within bounds (see linger.h). */
#include "linger.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rnnd/status.h"

#define LINGER_TIME_S 30.0
#define LINGER_IDLE_S 5.0
#define LINGER_MIN_BYTES ((uint64_t)64 << 20)
/* reads of one socket per wake-up, so a fast sender does not starve the others */
#define READS_PER_WAKE 16

struct lsock {
    int fd;
    struct sockaddr_storage addr; /* the client's, for the per-host bound */
    double t0, last;              /* handed over; last data (monotonic seconds) */
    uint64_t bytes;               /* dropped */
    int done;                     /* the client closed, an error, or past the byte bound */
};

struct rnnd_linger {
    rnnd_linger_limits lim;
    pthread_mutex_t mu; /* guards n, stop and socks[n..max); the thread alone removes */
    struct lsock *socks;
    size_t n, max, per_addr;
    int stop;
    struct pollfd *pfd; /* the thread's: the wake pipe, then socks[0..n) */
    int wake[2];        /* a pipe: an add or the stop interrupts the thread's poll */
    pthread_t thread;
};

void rnnd_linger_limits_default(rnnd_linger_limits *lim, uint64_t max_body_bytes,
                                double request_timeout_s)
{
    lim->time_s = LINGER_TIME_S;
    lim->idle_s = request_timeout_s < LINGER_IDLE_S ? request_timeout_s : LINGER_IDLE_S;
    lim->bytes = max_body_bytes > LINGER_MIN_BYTES ? max_body_bytes : LINGER_MIN_BYTES;
}

int rnnd_linger_spent(const rnnd_linger_limits *lim, double elapsed_s, double idle_s,
                      uint64_t bytes)
{
    return elapsed_s >= lim->time_s || idle_s >= lim->idle_s || bytes > lim->bytes;
}

int rnnd_fd_budget_plan(uint64_t limit, size_t own, size_t max_connections, size_t max_per_ip,
                        rnnd_fd_budget *b, char *err, size_t errlen)
{
    b->need = (uint64_t)own + max_connections + max_connections / 4;
    b->connections = max_connections;
    if (limit < b->need) {
        /* c + c / 4 <= what is left after the daemon's own */
        b->connections = limit > own ? (size_t)((limit - own) * 4 / 5) : 0;
        if (b->connections < RNND_FD_MIN_CONNECTIONS) {
            snprintf(err, errlen,
                     "RLIMIT_NOFILE is %llu descriptors: the daemon needs %zu of "
                     "its own and %d for connections (raise it: ulimit -n, LimitNOFILE=)",
                     (unsigned long long)limit, own, RNND_FD_MIN_CONNECTIONS * 5 / 4);
            return RNND_ERR_LIMIT;
        }
    }
    b->linger = b->connections / 4;
    size_t of = max_per_ip < b->linger ? max_per_ip : b->linger;
    b->linger_per_addr = of / 4 ? of / 4 : 1;
    return RNND_OK;
}

int rnnd_same_host(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (a->ss_family != b->sa_family)
        return 0;
    if (b->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
            ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (b->sa_family == AF_INET6) {
        /* one IPv6 host holds a whole /64 (SLAAC, privacy addresses): its 2^64 addresses
         * are one host here; an IPv4 address mapped into IPv6 is its own host */
        const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
        const struct in6_addr *y = &((const struct sockaddr_in6 *)b)->sin6_addr;
        size_t n = IN6_IS_ADDR_V4MAPPED(x) || IN6_IS_ADDR_V4MAPPED(y) ? sizeof *x : 8;
        return !memcmp(x, y, n);
    }
    return 1; /* a Unix socket (socket activation): one host */
}

/* Read and drop what S has for us. Returns 1 when S is done: the client closed, an error, or
 * the byte bound passed. */
static int drain(rnnd_linger *l, struct lsock *s, char *buf, size_t len, double now)
{
    for (int i = 0; i < READS_PER_WAKE; i++) {
        ssize_t k = recv(s->fd, buf, len, MSG_DONTWAIT);
        if (k > 0) {
            s->bytes += (uint64_t)k;
            s->last = now;
            if (s->bytes > l->lim.bytes)
                return 1;
        } else if (k == 0) {
            return 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        } else if (errno != EINTR) {
            return 1;
        }
    }
    return 0;
}

/* Milliseconds until the first socket's bound falls due; -1 when none lingers. */
static int wait_ms_locked(const rnnd_linger *l, double now)
{
    double first = -1;
    for (size_t i = 0; i < l->n; i++) {
        double a = l->socks[i].t0 + l->lim.time_s, b = l->socks[i].last + l->lim.idle_s;
        double due = a < b ? a : b;
        if (first < 0 || due < first)
            first = due;
    }
    if (first < 0)
        return -1;
    double ms = (first - now) * 1e3 + 1; /* +1: wake after the bound, not just before */
    return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

static void remove_locked(rnnd_linger *l, size_t i)
{
    close(l->socks[i].fd);
    l->socks[i] = l->socks[--l->n];
}

static void *linger_main(void *arg)
{
    rnnd_linger *l = arg;
    char sink[65536]; /* every socket's bytes land here and are forgotten */
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        size_t n = l->n;
        int timeout = wait_ms_locked(l, rnnd_mono_s());
        l->pfd[0] = (struct pollfd){.fd = l->wake[0], .events = POLLIN};
        for (size_t i = 0; i < n; i++)
            l->pfd[i + 1] = (struct pollfd){.fd = l->socks[i].fd, .events = POLLIN};
        pthread_mutex_unlock(&l->mu);
        poll(l->pfd, n + 1, timeout);
        ssize_t got = l->pfd[0].revents ? 1 : 0;
        while (got > 0)
            got = read(l->wake[0], sink, sizeof sink);
        /* unlocked: adds only append, so socks[0..n) are this thread's alone meanwhile */
        double now = rnnd_mono_s();
        for (size_t i = 0; i < n; i++)
            l->socks[i].done =
                l->pfd[i + 1].revents && drain(l, &l->socks[i], sink, sizeof sink, now);
        pthread_mutex_lock(&l->mu);
        /* walking down, a removal moves in a socket visited already or added since */
        for (size_t i = n; i-- > 0;) {
            const struct lsock *s = &l->socks[i];
            if (s->done || rnnd_linger_spent(&l->lim, now - s->t0, now - s->last, s->bytes))
                remove_locked(l, i);
        }
    }
    while (l->n)
        remove_locked(l, l->n - 1);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int rnnd_linger_new(const rnnd_linger_limits *lim, size_t max, size_t per_addr, rnnd_linger **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    int rc = RNND_ERR_NOMEM;
    rnnd_linger *l = calloc(1, sizeof *l);
    if (!l || !(l->socks = calloc(max ? max : 1, sizeof *l->socks)) ||
        !(l->pfd = calloc(max + 1, sizeof *l->pfd))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    l->lim = *lim;
    l->max = max;
    l->per_addr = per_addr;
    rc = RNND_ERR_IO;
    if (pipe2(l->wake, O_NONBLOCK | O_CLOEXEC)) {
        snprintf(err, errlen, "lingering close: pipe: %s", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&l->mu, NULL);
    int e = pthread_create(&l->thread, NULL, linger_main, l);
    if (e) {
        snprintf(err, errlen, "lingering close: cannot start its thread: %s", strerror(e));
        pthread_mutex_destroy(&l->mu);
        close(l->wake[0]);
        close(l->wake[1]);
        goto fail;
    }
    *out = l;
    return RNND_OK;
fail:
    if (l) {
        free(l->pfd);
        free(l->socks);
        free(l);
    }
    return rc;
}

/* Whether ADDR's host may have one more socket lingering. */
static int host_room_locked(const rnnd_linger *l, const struct sockaddr_storage *addr)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n && n < l->per_addr; i++)
        n += rnnd_same_host(&l->socks[i].addr, (const struct sockaddr *)addr);
    return n < l->per_addr;
}

int rnnd_linger_add(rnnd_linger *l, int fd)
{
    struct lsock s = {.fd = fd, .t0 = rnnd_mono_s()};
    s.last = s.t0;
    socklen_t alen = sizeof s.addr;
    if (getpeername(fd, (struct sockaddr *)&s.addr, &alen))
        s.addr.ss_family = AF_UNSPEC; /* gone already: the thread sees the end at once */
    pthread_mutex_lock(&l->mu);
    int room = !l->stop && l->n < l->max && host_room_locked(l, &s.addr);
    if (room)
        l->socks[l->n++] = s;
    pthread_mutex_unlock(&l->mu);
    if (!room) {
        close(fd);
        return RNND_ERR_LIMIT;
    }
    ssize_t w = write(l->wake[1], "", 1); /* a full pipe has a wake-up pending already */
    (void)w;
    return RNND_OK;
}

size_t rnnd_linger_count(rnnd_linger *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

void rnnd_linger_free(rnnd_linger *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_mutex_unlock(&l->mu);
    ssize_t w = write(l->wake[1], "", 1);
    (void)w;
    pthread_join(l->thread, NULL);
    pthread_mutex_destroy(&l->mu);
    close(l->wake[0]);
    close(l->wake[1]);
    free(l->pfd);
    free(l->socks);
    free(l);
}
