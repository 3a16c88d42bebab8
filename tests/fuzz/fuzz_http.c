/* Fuzz target: the HTTP layer in-process, through the real route table.
 *
 * On the first input the harness assembles a daemon in its own process the way
 * src/cmd_serve.c does (settings defaults plus a few small limits, two models, session table,
 * sequence map, compute pool, batchers, rnnd_http_start on 127.0.0.1 port 0). Each input is
 * raw bytes a client sends: the harness connects, writes them, shuts down its write side and
 * reads the reply until the server closes or a short timeout.
 *
 * Session ids are random, so a fuzzer can never guess one: an input may say SID_TOK and
 * SID_VEC (each padded with '_' to 32 bytes, the length of an id), which the harness replaces
 * with the id of a fresh session of that model, opened before the input and closed after it.
 * API keys are on: KEY_INFER (which owns those sessions) and KEY_ADMIN.
 *
 * Findings: sanitizer reports or a crash in any daemon thread, a reply that is not HTTP, a
 * 500 (docs/api.md: nothing a client sends leads to a 5xx other than 503), or a daemon that
 * stops accepting connections. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "fuzz_common.h"
#include "http.h"
#include "rnnd/kernels.h"
#include "rnnd/status.h"
#include "routes.h"
#include "v2_seq.h"

#define SID_TOK "SID_TOK_________________________"
#define SID_VEC "SID_VEC_________________________"
#define SID_LEN 32
/* the API keys of the daemon (tests/fuzz/http.dict and the seeds use them) */
#define KEY_INFER "fuzz-infer-key-0123456789"
#define KEY_ADMIN "fuzz-admin-key-0123456789"
#define READ_TIMEOUT_MS 3000
#define REPLY_WAIT_MS 100

typedef struct fz_daemon {
    rnnd_config cfg;
    rnnd_app app;
    rnnd_http *http;
    uint16_t port;
} fz_daemon;

static double now_ms(void) { return rnnd_mono_s() * 1e3; }

/* ---- the daemon: the start-up of cmd_serve.c's serve(), copied (it is static there) ---- */

static void *worker_init(void *arg, size_t index)
{
    (void)arg;
    size_t *w = malloc(sizeof *w);
    if (w)
        *w = index;
    return w;
}

static void worker_fini(void *arg, void *wctx)
{
    (void)arg;
    free(wctx);
}

static int attach_batchers(rnnd_app *app, rnnd_registry *reg)
{
    const rnnd_config *cfg = app->cfg;
    for (size_t i = 0; i < reg->n; i++) {
        rnnd_entry *e = reg->entries[i];
        if (e->batcher)
            continue;
        if (rnnd_batcher_new(e->net, app->workers, app->pool, (size_t)cfg->max_batch,
                             (long)cfg->max_batch_wait_us, &e->batcher))
            return RNND_ERR_NOMEM;
        rnnd_batcher_set_owner(e->batcher, rnnd_entry_ref_v, rnnd_entry_unref_v, e);
        rnnd_batcher_set_infer_max_steps(e->batcher, (size_t)cfg->max_infer_batch_steps);
    }
    return RNND_OK;
}

static void setting(rnnd_config *cfg, const char *key, const char *value)
{
    char err[512];
    if (rnnd_config_set(cfg, key, value, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
}

static void write_model(const char *name, const char *arch, unsigned seed, rnnd_config *cfg)
{
    char path[4200], spec[4300];
    size_t len;
    unsigned char *img = fz_model_bytes(arch, seed, &len);
    snprintf(path, sizeof path, "%s/%s.rnnd", fz_tmpdir(), name);
    fz_write_file(path, img, len);
    free(img);
    snprintf(spec, sizeof spec, "%s=%s", name, path);
    setting(cfg, "model", spec);
}

static fz_daemon *daemon_start(void)
{
    static fz_daemon d;
    char err[1024] = "";
    /* as in rnnd_cmd_serve: no thread may die of SIGPIPE from a client that left */
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL);

    rnnd_config *cfg = &d.cfg;
    FZ_CHECK(rnnd_config_init(cfg) == 0, "settings defaults");
    setting(cfg, "listen", "127.0.0.1:0");
    setting(cfg, "http_threads", "2");
    setting(cfg, "workers", "2");
    setting(cfg, "max_body_bytes", "64K");
    /* small enough that a fuzzed body can reach both refusals (413, 429) */
    setting(cfg, "max_request_memory", "2M");
    setting(cfg, "memory_budget", "4M");
    setting(cfg, "max_steps_per_request", "64");
    setting(cfg, "max_generate_tokens", "16");
    setting(cfg, "max_sequences", "8");
    setting(cfg, "max_infer_steps", "256");
    setting(cfg, "max_sessions", "64");
    setting(cfg, "session_evict", "lru");
    setting(cfg, "sessions_page_max", "16");
    /* libmicrohttpd keeps a connection whose client half-closed inside the header block
     * until request_timeout_s: short, and room for many, so that fuzzing at a hundred
     * inputs a second does not hit the connection limits */
    setting(cfg, "request_timeout_s", "1");
    setting(cfg, "max_connections", "8192");
    setting(cfg, "max_connections_per_ip", "8192");
    setting(cfg, "shutdown_timeout_s", "1");
    setting(cfg, "sse_ping_s", "0");
    setting(cfg, "log_level", "error");
    setting(cfg, "access_log", "off");
    /* API keys on, so that authentication and per-key session ownership are fuzzed too */
    char keys[4200];
    snprintf(keys, sizeof keys, "%s/api-keys", fz_tmpdir());
    const char *key_lines = "# fuzz_http\n" KEY_INFER " user infer\n" KEY_ADMIN " root admin\n";
    fz_write_file(keys, key_lines, strlen(key_lines));
    setting(cfg, "api_keys_file", keys);
    write_model("tok", FZ_ARCH_TOK, 1, cfg);
    write_model("vec", FZ_ARCH_VEC, 2, cfg);
    FZ_CHECK(rnnd_config_check(cfg, err, sizeof err) == 0, "settings check");

    rnnd_app *app = &d.app;
    memset(app, 0, sizeof *app);
    app->cfg = cfg;
    rnnd_log_init(&app->log, (int)cfg->log_level, stderr);
    const char *route_names[RNND_METRICS_ROUTES];
    size_t nroutes = rnnd_route_names(route_names, RNND_METRICS_ROUTES);
    rnnd_metrics_init(&app->metrics, route_names, nroutes);
    atomic_init(&app->draining, 0);
    app->listen_fd = -1;
    app->infer_limits.max_sequences = (size_t)cfg->max_sequences;
    app->infer_limits.max_steps = (size_t)cfg->max_infer_steps;
    app->infer_limits.max_total_steps = (size_t)cfg->max_infer_steps;
    rnnd_membudget_init(&app->mem, (size_t)cfg->memory_budget, (size_t)cfg->max_request_memory);

    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    FZ_CHECK(k != NULL, "kernels");
    app->kernels = k;
    if (rnnd_auth_load(&app->auth, cfg->api_keys_file, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    rnnd_registry reg;
    if (rnnd_registry_load(&reg, cfg->models, cfg->model, cfg->n_model, k, (int)cfg->compute, err,
                           sizeof err)) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    rnnd_catalog_init(&app->models, &reg);
    rnnd_session_limits lim = {
        .max_sessions = (size_t)cfg->max_sessions,
        .max_per_owner = (size_t)cfg->max_sessions_per_key,
        .max_state_bytes = (size_t)cfg->max_state_bytes,
        .ttl_s = (double)cfg->session_ttl_s,
        .ttl_max_s = (double)cfg->session_ttl_max_s,
        .evict_lru = cfg->session_evict == RNND_EVICT_LRU,
        .tombstone_s = (double)cfg->tombstone_s,
        .max_tombstones = (size_t)cfg->max_tombstones,
    };
    app->sessions = rnnd_session_table_new(&lim, NULL, NULL);
    FZ_CHECK(app->sessions != NULL, "session table");
    rnnd_session_table_set_model_refs(app->sessions, rnnd_entry_ref_v, rnnd_entry_unref_v);
    app->v2_seq = rnnd_v2_seq_new(app->sessions, (size_t)cfg->max_sessions);
    FZ_CHECK(app->v2_seq != NULL, "sequence map");
    app->workers = (size_t)cfg->workers;
    if (rnnd_pool_new(app->workers, worker_init, worker_fini, app, &app->pool, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    FZ_CHECK(attach_batchers(app, &app->models.reg) == 0, "batchers");
    if (rnnd_http_start(app, rnnd_routes, rnnd_n_routes, &d.http, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    d.port = rnnd_http_port(d.http);
    /* The daemon runs until the process exits: libFuzzer ends with exit(), and tearing the
     * daemon down from an atexit handler would race the threads libFuzzer leaves running. */
    return &d;
}

/* ---- the client ---- */

/* Connect to the daemon. libFuzzer's -timeout alarm (SIGALRM, installed without SA_RESTART)
 * may land while connect() waits for the handshake on a loaded machine: the connection then
 * completes in the background, so wait for it rather than take EINTR for a dead daemon. A
 * machine that briefly runs out of ephemeral ports (EADDRNOTAVAIL) gets a few retries. */
static int dial(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int e = 0;
    for (int attempt = 0; attempt < 50; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FZ_CHECK(fd >= 0, "socket");
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        e = errno;
        if (e == EINTR || e == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int r;
            do
                r = poll(&pf, 1, READ_TIMEOUT_MS);
            while (r < 0 && errno == EINTR);
            socklen_t elen = sizeof e;
            if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == 0 && e == 0)
                return fd;
            if (r == 0)
                e = ETIMEDOUT;
        }
        close(fd);
        if (e != EADDRNOTAVAIL && e != EAGAIN)
            break;
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "fuzz_http: connect to 127.0.0.1:%u: %s\n", (unsigned)port, strerror(e));
    fz_fail(__FILE__, __LINE__, "the daemon no longer accepts connections");
}

/* Case-insensitive search for header NAME (with its colon) in the LEN bytes of a header
 * block; its value, or NULL. */
static const char *header(const char *h, size_t len, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + n <= len; i++)
        if ((i == 0 || h[i - 1] == '\n') && strncasecmp(h + i, name, n) == 0)
            return h + i + n;
    return NULL;
}

/* Whether BUF (LEN bytes) holds a whole HTTP message: head, then as much body as its
 * Content-Length says, or a chunked body's last chunk. Good enough to know when to stop
 * waiting; a wrong guess only costs time. */
static int message_complete(const char *buf, size_t len, int reply)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - buf) + 4;
    const char *v;
    if ((v = header(buf, head, "transfer-encoding:")) != NULL)
        return len - head >= 5 && memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0;
    if ((v = header(buf, head, "content-length:")) != NULL)
        return len - head >= strtoull(v, NULL, 10);
    /* a request without a body, or a reply that ends when the server closes */
    return !reply || strncmp(buf + 9, "204", 3) == 0 || strncmp(buf + 9, "304", 3) == 0;
}

/* Send LEN bytes and read the reply into OUT (at most CAP - 1 bytes kept, NUL-terminated);
 * returns the bytes kept. When the input holds a whole request, the harness waits for a whole
 * reply (up to REPLY_WAIT_MS after the last byte received) before shutting down its write
 * side: a deferred request whose client already half-closed may be taken for a client that
 * left, and then its reply (the encoders) would go untested. Then it reads until the server
 * closes, REPLY_WAIT_MS pass without a byte, or READ_TIMEOUT_MS in all. */
static size_t exchange(uint16_t port, const void *data, size_t len, char *out, size_t cap)
{
    int fd = dial(port);
    const char *p = data;
    size_t off = 0, got = 0;
    double deadline = now_ms() + READ_TIMEOUT_MS;
    while (off < len) {
        ssize_t w = send(fd, p + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && now_ms() < deadline) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 50);
            continue;
        }
        break; /* the server closed, or stopped reading: read what it said */
    }
    int half_closed = 0, eof = 0;
    double wait_until = now_ms() + REPLY_WAIT_MS;
    if (off < len || !message_complete(p, len, 0)) {
        shutdown(fd, SHUT_WR);
        half_closed = 1;
    }
    while (!eof) {
        double t = now_ms();
        if (!half_closed && (t >= wait_until || message_complete(out, got, 1))) {
            shutdown(fd, SHUT_WR);
            half_closed = 1;
            wait_until = t + REPLY_WAIT_MS;
        }
        /* after the half-close, too, silence ends the exchange: libmicrohttpd keeps a
         * half-closed connection with a partial request open until request_timeout_s */
        double left = (wait_until < deadline ? wait_until : deadline) - t;
        if (left <= 0) {
            if (half_closed)
                break;
            continue;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, (int)left + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r == 0)
            continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = 1;
            break;
        }
        size_t keep = (size_t)n < cap - 1 - got ? (size_t)n : cap - 1 - got;
        memcpy(out + got, buf, keep);
        got += keep;
        out[got] = '\0';
        wait_until = now_ms() + REPLY_WAIT_MS;
    }
    out[got] = '\0';
    close(fd);
    return got;
}

/* The first response's status, or 0 when REPLY does not start with an HTTP status line. */
static int status_of(const char *reply)
{
    unsigned code;
    char sp;
    if (strncmp(reply, "HTTP/1.", 7) || sscanf(reply + 8, "%c%3u", &sp, &code) != 2 || sp != ' ')
        return 0;
    return (int)code;
}

static int request(uint16_t port, const char *method, const char *path, const char *body,
                   char *reply, size_t cap)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                     "Authorization: Bearer " KEY_INFER "\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    FZ_CHECK(n > 0 && (size_t)n < sizeof req, "request too long");
    exchange(port, req, (size_t)n, reply, cap);
    return status_of(reply);
}

/* Open a session of MODEL; its id goes to ID (33 bytes). Returns 0, or -1 when the daemon
 * refused (earlier inputs may have filled the table with busy sessions: a 429 is no bug). */
static int open_session(uint16_t port, const char *model, char *id)
{
    char body[128], reply[8192];
    snprintf(body, sizeof body, "{\"model\": \"%s\"}", model);
    int st = request(port, "POST", "/v1/sessions", body, reply, sizeof reply);
    FZ_CHECK(st != 500 && st != 0, "the daemon failed to open a session");
    const char *at = strstr(reply, "\"id\":\"");
    if (st != 201 || !at || strlen(at + 6) <= SID_LEN || at[6 + SID_LEN] != '"')
        return -1;
    memcpy(id, at + 6, SID_LEN);
    id[SID_LEN] = '\0';
    return 0;
}

static void close_session(uint16_t port, const char *id)
{
    char path[64], reply[4096];
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    request(port, "DELETE", path, NULL, reply, sizeof reply);
}

/* Replace every PLACEHOLDER in BUF by a session of MODEL, opened on first need. Returns 1
 * when a session was opened (for the caller to close). */
static int substitute(unsigned char *buf, size_t len, const char *placeholder, const char *model,
                      uint16_t port, char *id)
{
    int opened = 0;
    for (size_t i = 0; i + SID_LEN <= len; i++) {
        if (memcmp(buf + i, placeholder, SID_LEN))
            continue;
        if (!opened && open_session(port, model, id))
            return 0;
        opened = 1;
        memcpy(buf + i, id, SID_LEN);
    }
    return opened;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_daemon *d;
    if (!d)
        d = daemon_start();
    unsigned char *buf = malloc(size ? size : 1);
    FZ_CHECK(buf != NULL, "out of memory");
    if (size)
        memcpy(buf, data, size);
    char tok_id[SID_LEN + 1], vec_id[SID_LEN + 1];
    int has_tok = substitute(buf, size, SID_TOK, "tok", d->port, tok_id);
    int has_vec = substitute(buf, size, SID_VEC, "vec", d->port, vec_id);

    static char reply[1 << 16];
    double t0 = now_ms();
    size_t n = exchange(d->port, buf, size, reply, sizeof reply);
    free(buf);
    if (getenv("RNND_FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_http: %zu bytes in, %zu out in %.1f ms: %.*s\n", size, n,
                now_ms() - t0, (int)strcspn(reply, "\r\n"), reply);
    if (n) {
        int st = status_of(reply);
        FZ_CHECK(st >= 100 && st <= 599, "the reply does not start with an HTTP status line");
        FZ_CHECK(st != 500, "a client's request led to 500");
    }
    if (has_tok)
        close_session(d->port, tok_id);
    if (has_vec)
        close_session(d->port, vec_id);
    return 0;
}
