/* The connection watcher: every open connection's record, the request deadlines it enforces
 * (slowloris), and the address reserve applied when a connection is accepted. */
#include "config.h"
#include "http_internal.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

/* libmicrohttpd's timeout (request_timeout_s) counts only silence, so a client sending a byte
 * a second holds a connection forever (slowloris). Here a request has a deadline instead:
 * its headers must be in within request_timeout_s of the connection's start or of the last
 * reply on it, and its body gets one more second per min_body_rate bytes received. Bytes
 * sent early must not buy hours of trickling after them, so past the first request_timeout_s
 * every window of that length must also carry min_body_rate bytes a second. A request past
 * its deadline has its socket shut down, which makes MHD close it. */

struct conn_rec *http_conn_rec_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A request on CONN starts arriving (AT_START) or has arrived (0); BODY bytes more of it. */
void http_conn_progress(rnnd_http *h, struct MHD_Connection *conn, int reading, size_t body)
{
    struct conn_rec *c = http_conn_rec_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&h->cmu);
    if (reading && !c->reading) {
        c->t0 = rnnd_mono_s();
        c->body = 0;
        c->w0 = 0;
        c->w0_body = 0;
    }
    c->reading = reading;
    c->body += body;
    pthread_mutex_unlock(&h->cmu);
}

/* Only as many bytes as the family has: a Unix socket's client address (socket activation)
 * is just its family, two bytes long. */
static void copy_client_addr(struct sockaddr_storage *to, const struct sockaddr *from)
{
    size_t n = from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
        : from->sa_family == AF_INET       ? sizeof(struct sockaddr_in)
                                           : sizeof from->sa_family;
    memset(to, 0, sizeof *to);
    memcpy(to, from, n);
}

void http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe)
{
    rnnd_http *h = cls;
    struct conn_rec *c = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!fd || !(c = calloc(1, sizeof *c)))
            return; /* unwatched: MHD's idle timeout still closes it */
        c->fd = fd->connect_fd;
        if (addr && addr->client_addr)
            copy_client_addr(&c->addr, addr->client_addr);
        c->reading = 1;
        c->t0 = rnnd_mono_s();
        pthread_mutex_lock(&h->cmu);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        h->nconns++;
        pthread_mutex_unlock(&h->cmu);
        *socket_context = c;
    } else if (c) {
        /* MHD closes the descriptor after this: unlinked, the watchdog no longer touches it */
        pthread_mutex_lock(&h->cmu);
        if (c->prev)
            c->prev->next = c->next;
        else
            h->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        h->nconns--;
        pthread_mutex_unlock(&h->cmu);
        free(c);
        *socket_context = NULL;
    }
}

static void *watch_main(void *arg)
{
    rnnd_http *h = arg;
    double grace = (double)h->app->cfg->request_timeout_s;
    double rate = (double)h->app->cfg->min_body_rate;
    pthread_mutex_lock(&h->cmu);
    while (!h->http_watch_stop) {
        struct timespec until; /* a quarter second: deadlines within 0.25 s */
        rnnd_mono_deadline(&until, 250000);
        pthread_cond_timedwait(&h->cwake, &h->cmu, &until);
        double now = rnnd_mono_s();
        for (struct conn_rec *c = h->conns; c; c = c->next) {
            if (!c->reading)
                continue;
            int slow = 0;
            if (!c->w0 && now - c->t0 >= grace) {
                c->w0 = now; /* the first window is the old rule's alone */
                c->w0_body = c->body;
            } else if (c->w0 && now - c->w0 >= grace) {
                slow = (double)(c->body - c->w0_body) < rate * grace;
                c->w0 = now;
                c->w0_body = c->body;
            }
            if (!slow && now - c->t0 <= grace + (double)c->body / rate)
                continue;
            c->reading = 0;
            shutdown(c->fd, SHUT_RDWR);
            RNND_LOG(&h->app->log, RNND_LOG_INFO, "request_cut",
                     "reason=%s seconds=%.1f body_bytes=%llu", slow ? "rate" : "deadline",
                     now - c->t0, (unsigned long long)c->body);
        }
    }
    pthread_mutex_unlock(&h->cmu);
    return NULL;
}

/* The last quarter of max_connections (as lowered to fit the descriptors) is kept for
 * addresses that hold no connection yet, so that a few addresses cannot take every slot
 * (max_connections_per_ip alone lets max_connections / max_connections_per_ip addresses do
 * it). Both count hosts as rnnd_same_host() does: libmicrohttpd's own per-address limit
 * keys IPv6 by all 128 bits, and a client holds a whole /64. */
enum MHD_Result http_on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    rnnd_http *h = cls;
    size_t max = h->budget.connections, per_ip = (size_t)h->app->cfg->max_connections_per_ip;
    size_t held = 0;
    pthread_mutex_lock(&h->cmu);
    for (struct conn_rec *c = h->conns; c && held < per_ip; c = c->next)
        held += rnnd_same_host(&c->addr, addr);
    int reserve = h->nconns >= max - max / 4;
    pthread_mutex_unlock(&h->cmu);
    return held >= per_ip || (reserve && held) ? MHD_NO : MHD_YES;
}

void http_watch_stop(rnnd_http *h)
{
    if (!h->watch_on)
        return;
    pthread_mutex_lock(&h->cmu);
    h->http_watch_stop = 1;
    pthread_cond_signal(&h->cwake);
    pthread_mutex_unlock(&h->cmu);
    pthread_join(h->watch, NULL);
    h->watch_on = 0;
}

int http_watch_start(rnnd_http *h)
{
    if (pthread_create(&h->watch, NULL, watch_main, h))
        return -1;
    h->watch_on = 1;
    return 0;
}
