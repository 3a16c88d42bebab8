/* Where and how much to serve: the listen address (ADDR:PORT), the request threads, and the
 * plan that fits connections and lingering sockets under RLIMIT_NOFILE. */
#include "config.h"
#include "http_internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "rnnd/status.h"

/* Descriptors the daemon keeps for itself besides those open when it starts serving: per
 * request thread, libmicrohttpd's wake-up descriptors (at most 3, one to spare); and the
 * listening socket, the lingering thread's pipe, model files during a reload, a snapshot
 * being written, with room to spare. */
#define FDS_PER_THREAD 4
#define FDS_SPARE 40

/* "HOST:PORT" or "[V6]:PORT" into ADDR. */
int http_parse_listen(const char *spec, struct sockaddr_storage *addr, socklen_t *alen, char *host,
                      size_t hostlen, char *err, size_t errlen)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec) {
        snprintf(err, errlen, "listen: expected ADDR:PORT, got \"%s\"", spec);
        return RNND_ERR_INVALID;
    }
    size_t hn = (size_t)(colon - spec);
    const char *hs = spec;
    if (hs[0] == '[' && hn >= 2 && hs[hn - 1] == ']') {
        hs++;
        hn -= 2;
    }
    if (hn >= hostlen) {
        snprintf(err, errlen, "listen: address too long");
        return RNND_ERR_INVALID;
    }
    memcpy(host, hs, hn);
    host[hn] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || port > 65535) {
        snprintf(err, errlen, "listen: bad port in \"%s\"", spec);
        return RNND_ERR_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res = NULL;
    int gai = getaddrinfo(hn ? host : NULL, NULL, &hints, &res);
    if (gai || !res) {
        snprintf(err, errlen, "listen: cannot resolve \"%s\": %s", host, gai_strerror(gai));
        return RNND_ERR_INVALID;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *alen = res->ai_addrlen;
    freeaddrinfo(res);
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    return RNND_OK;
}

/* Descriptors open now: the daemon's own before it serves. */
static size_t open_descriptors(void)
{
    DIR *d = opendir("/proc/self/fd");
    size_t n = 0;
    if (!d) {
        for (int fd = 0; fd < 1024; fd++)
            n += fcntl(fd, F_GETFD) != -1;
        return n;
    }
    while (readdir(d))
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", ".." and the folder's own descriptor */
}

/* Fit max_connections and the lingering sockets under RLIMIT_NOFILE (linger.h). The soft
 * limit is raised towards the hard one first: systemd leaves the soft one at 1024 for
 * programs that use select(), and rnnd does not (libmicrohttpd runs on poll()). What still
 * does not fit lowers the number of connections, with a warning. */
int http_plan_descriptors(rnnd_http *h, unsigned threads, char *err, size_t errlen)
{
    const rnnd_config *cfg = h->app->cfg;
    size_t own = open_descriptors() + FDS_PER_THREAD * threads + FDS_SPARE;
    size_t max = (size_t)cfg->max_connections, per_ip = (size_t)cfg->max_connections_per_ip;
    rnnd_fd_budget_plan(UINT64_MAX, own, max, per_ip, &h->budget, err, errlen);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
    rlim_t was = rl.rlim_cur, need = (rlim_t)h->budget.need;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit up = {rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max,
                            rl.rlim_max};
        if (!setrlimit(RLIMIT_NOFILE, &up))
            rl.rlim_cur = up.rlim_cur;
    }
    uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    int rc = rnnd_fd_budget_plan(limit, own, max, per_ip, &h->budget, err, errlen);
    if (rc)
        return rc;
    int lowered = h->budget.connections < max;
    char from[48] = "";
    if (was != rl.rlim_cur)
        snprintf(from, sizeof from, " raised_from=%llu", (unsigned long long)was);
    RNND_LOG(&h->app->log, lowered ? RNND_LOG_WARN : RNND_LOG_INFO, "fd_budget",
             "rlimit_nofile=%llu%s need=%llu own=%zu max_connections=%zu linger=%zu "
             "linger_per_addr=%zu%s",
             (unsigned long long)limit, from, (unsigned long long)h->budget.need, own,
             h->budget.connections, h->budget.linger, h->budget.linger_per_addr,
             lowered ? " msg=\"max_connections lowered to fit "
                       "RLIMIT_NOFILE: raise it (ulimit -n, LimitNOFILE=)\""
                     : "");
    return RNND_OK;
}

/* http_threads, 0 resolved. Request threads beyond the cores only add context switches:
 * under bench/e2e's step load on 2 cores, 4 threads cost 1.0 switches and ~9% more server
 * CPU per request than 2 threads (0.7 switches). They never compute, so a few are enough. */
unsigned http_request_threads(const rnnd_config *cfg)
{
    if (cfg->http_threads > 0)
        return (unsigned)cfg->http_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}
