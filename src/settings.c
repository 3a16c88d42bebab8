/* The settings table and everything it drives: defaults, conf file, flags, help, printing. */
#include "settings.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"
#include "rnnd/store.h"

enum ctype { CT_INT, CT_SIZE, CT_STRING, CT_LIST, CT_ENUM };

struct setting {
    const char *name;
    enum ctype type;
    size_t offset;
    const char *def;          /* default as text, parsed by the same code as user input */
    int64_t min, max;         /* numbers only */
    const char *const *names; /* enum only, NULL-terminated; value = index */
    const char *arg;          /* placeholder in --help */
    const char *help;
};

static const char *const evict_names[] = {"reject", "lru", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const onoff_names[] = {"off", "on", NULL};
static const char *const compute_names[] = {"f32", "bf16", NULL}; /* enum rnnd_compute */

#define OFF(f) offsetof(rnnd_config, f)
#define KI ((int64_t)1024)

static const struct setting settings[] = {
    {"listen", CT_STRING, OFF(listen), "127.0.0.1:8080", 0, 0, NULL, "ADDR:PORT",
     "address and TCP port to listen on (IPv6 as [ADDR]:PORT); port 0 picks a free port and "
     "logs it (event=listening)"},
    {"models", CT_STRING, OFF(models), "", 0, 0, NULL, "DIR",
     "folder whose *.rnnd files are all loaded, each named by its file stem; empty = none"},
    {"model", CT_LIST, OFF(model), "", 0, 0, NULL, "NAME=FILE",
     "load FILE as model NAME; repeatable"},
    {"state_dir", CT_STRING, OFF(state_dir), "", 0, 0, NULL, "DIR",
     "folder where sessions are saved on shutdown (and every snapshot_interval_s) and "
     "restored from at start; it must exist and be writable; empty = sessions do not "
     "survive a restart"},
    {"snapshot_key_file", CT_STRING, OFF(snapshot_key_file), "", 0, 0, NULL, "FILE",
     "32-byte key that signs the snapshots (HMAC-SHA256), created 0600 at the first start; "
     "keep it outside state_dir; empty = the state_dir path + \".key\", beside the folder"},
    {"snapshot_interval_s", CT_INT, OFF(snapshot_interval_s), "0", 0, 86400, NULL, "S",
     "also save all sessions this often while serving, bounding what a crash loses; 0 = only "
     "on shutdown"},
    {"api_keys_file", CT_STRING, OFF(api_keys_file), "", 0, 0, NULL, "FILE",
     "API keys, one per line as KEY [NAME [infer|admin]]; every request but the health checks "
     "then needs Authorization: Bearer KEY; empty = no authentication"},
    {"session_store", CT_STRING, OFF(session_store), "", 0, 0, NULL, "URL",
     "cluster mode: redis://[USER@]HOST:PORT[/DB] of the Redis that holds the sessions "
     "(docs/cluster.md); a password in the URL is refused; excludes state_dir; empty = "
     "sessions in this process only"},
    {"session_store_password_file", CT_STRING, OFF(session_store_password_file), "", 0, 0, NULL,
     "FILE",
     "the Redis password (AUTH), the file's first line; a regular file, not a link, the "
     "daemon user's or root's, that others may not access nor the group write; empty = no "
     "AUTH"},
    {"store_sync_ms", CT_INT, OFF(store_sync_ms), "100", 0, 10000, NULL, "MS",
     "cluster mode: a changed session is written to Redis at most this long after the "
     "request that changed it; 0 = write-through: a step's reply waits until Redis holds it"},
    {"lease_ms", CT_INT, OFF(lease_ms), "2000", 500, 60000, NULL, "MS",
     "cluster mode: this node's lease in Redis, how long a dead or paused node keeps its "
     "sessions from the others"},
    {"drain_grace_ms", CT_INT, OFF(drain_grace_ms), "3000", 0, 60000, NULL, "MS",
     "cluster mode: at a drain, how long the node answers /readyz 503 and keeps serving the "
     "sessions it holds, taking no new ones, before it stops, so that the balancer drops it "
     "first; above the balancer's time to mark a node down"},
    {"node_name", CT_STRING, OFF(node_name), "", 0, 0, NULL, "NAME",
     "cluster mode: this node's name in leases and metrics, A-Z a-z 0-9 . _ -, at most 64 "
     "bytes; empty = the host name"},
    {"tls_cert", CT_STRING, OFF(tls_cert), "", 0, 0, NULL, "FILE",
     "PEM certificate (chain) to serve HTTPS with; needs tls_key; empty = plain HTTP"},
    {"tls_key", CT_STRING, OFF(tls_key), "", 0, 0, NULL, "FILE", "PEM private key of tls_cert"},
    {"tls_priorities", CT_STRING, OFF(tls_priorities), "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
     0, 0, NULL, "STRING",
     "GnuTLS priority string: protocol versions and ciphers offered (default: TLS 1.2 and 1.3 "
     "with GnuTLS's normal cipher list)"},
    {"cors_origins", CT_STRING, OFF(cors_origins), "", 0, 0, NULL, "LIST",
     "comma-separated origins (https://app.example.com) browsers may call from, or *; empty "
     "= no CORS headers (browsers refuse cross-origin calls)"},
    {"web_ui", CT_ENUM, OFF(web_ui), "on", 0, 1, onoff_names, "on|off",
     "the built-in web page at / (models, live charts of /metrics, a generation playground); "
     "off = / and /ui/ answer 404"},
    {"http_threads", CT_INT, OFF(http_threads), "0", 0, 256, NULL, "N",
     "request threads (libmicrohttpd's thread pool on poll()); they parse and validate, "
     "never compute; 0 = one per online core, at most 4"},
    {"workers", CT_INT, OFF(workers), "0", 0, 1024, NULL, "N",
     "compute threads; 0 = the number of online cores"},
    {"compute", CT_ENUM, OFF(compute), "f32", 0, 1, compute_names, "f32|bf16",
     "how models with bf16 weights take their products: f32 widens each weight to float; "
     "bf16 rounds the inputs to bf16 too and sums pairs as VDPBF16PS does (faster on CPUs with "
     "AVX512-BF16, other results); other models are not affected; read at start"},
    {"max_batch", CT_INT, OFF(max_batch), "64", 1, 4096, NULL, "N",
     "most sessions advanced together in one batched step"},
    {"max_batch_wait_us", CT_INT, OFF(max_batch_wait_us), "200", 0, 1000000, NULL, "US",
     "longest a worker waits for a batch to fill, only while other workers are busy"},
    {"max_infer_batch_steps", CT_INT, OFF(max_infer_batch_steps), "65536", 1, 100000000, NULL, "N",
     "most steps (over all requests) of waiting infer requests run together in one call"},
    {"max_body_bytes", CT_SIZE, OFF(max_body_bytes), "16M", 1024, 1024 * KI *KI, NULL, "BYTES",
     "largest request body (suffix K, M or G); larger bodies get 413"},
    {"max_steps_per_request", CT_INT, OFF(max_steps_per_request), "4096", 1, 10000000, NULL, "N",
     "most steps in one session step request"},
    {"max_generate_tokens", CT_INT, OFF(max_generate_tokens), "4096", 1, 10000000, NULL, "N",
     "largest max_tokens of one generate request"},
    {"sse_ping_s", CT_INT, OFF(sse_ping_s), "15", 0, 3600, NULL, "S",
     "an event stream idle this long gets a comment line, so proxies keep it open; 0 = never"},
    {"max_websockets", CT_INT, OFF(max_websockets), "64", 0, 65536, NULL, "N",
     "most WebSocket sessions open at once (one event-loop thread serves them); more get 503; "
     "0 = none"},
    {"max_websockets_per_ip", CT_INT, OFF(max_websockets_per_ip), "16", 1, 65536, NULL, "N",
     "most WebSocket sessions open at once from one client address (an IPv6 /64 is one); more "
     "get 503"},
    {"ws_max_message_bytes", CT_SIZE, OFF(ws_max_message_bytes), "1M", 1024, 1024 * KI *KI, NULL,
     "BYTES",
     "largest WebSocket message (suffix K, M or G); a larger one closes the socket (1009)"},
    {"ws_max_in_flight", CT_INT, OFF(ws_max_in_flight), "16", 1, 4096, NULL, "N",
     "most unanswered requests of one WebSocket; then the socket is not read until one is "
     "answered"},
    {"ws_idle_timeout_s", CT_INT, OFF(ws_idle_timeout_s), "300", 1, 86400, NULL, "S",
     "a WebSocket with no frame either way and no request in flight for this long is closed "
     "(1001)"},
    {"max_sequences", CT_INT, OFF(max_sequences), "256", 1, 1000000, NULL, "N",
     "most sequences in one infer request"},
    {"max_infer_steps", CT_INT, OFF(max_infer_steps), "65536", 1, 100000000, NULL, "N",
     "most steps over all sequences of one infer request"},
    {"max_json_depth", CT_INT, OFF(max_json_depth), "32", 2, 1000, NULL, "N",
     "deepest nesting of arrays and objects accepted in a request body"},
    {"max_sessions", CT_INT, OFF(max_sessions), "10000", 1, 100000000, NULL, "N",
     "most open sessions; then 429 (session_evict = reject) or eviction (lru)"},
    {"max_sessions_per_key", CT_INT, OFF(max_sessions_per_key), "0", 0, 100000000, NULL, "N",
     "most open sessions of one API key (then 429); 0 = only max_sessions applies"},
    {"max_state_bytes", CT_SIZE, OFF(max_state_bytes), "1G", 1024, 1024 * KI *KI *KI, NULL, "BYTES",
     "cap on the state memory of all sessions together (suffix K, M or G)"},
    {"max_request_memory", CT_SIZE, OFF(max_request_memory), "256M", KI *KI, 1024 * KI *KI *KI,
     NULL, "BYTES",
     "most memory one request may hold: its body, decoded JSON, arrays, work space and "
     "response (suffix K, M or G); a request that needs more gets 413 before it allocates"},
    {"memory_budget", CT_SIZE, OFF(memory_budget), "1G", KI *KI, 4096 * KI *KI *KI, NULL, "BYTES",
     "most memory all requests in flight may hold together (suffix K, M or G); one "
     "that does not fit now gets 429 with Retry-After"},
    {"session_ttl_s", CT_INT, OFF(session_ttl_s), "600", 1, 31536000, NULL, "S",
     "a session idle this long expires (a session's own ttl_s overrides)"},
    {"session_ttl_max_s", CT_INT, OFF(session_ttl_max_s), "86400", 1, 31536000, NULL, "S",
     "largest ttl_s a client may ask for"},
    {"session_evict", CT_ENUM, OFF(session_evict), "reject", 0, 1, evict_names, "POLICY",
     "when max_sessions or max_state_bytes is reached: reject (429 with Retry-After) or lru "
     "(evict the least recently used idle session of the same API key or of a key over its "
     "fair share)"},
    {"tombstone_s", CT_INT, OFF(tombstone_s), "3600", 0, 31536000, NULL, "S",
     "how long an expired or evicted session id answers 410 Gone (then 404)"},
    {"max_tombstones", CT_INT, OFF(max_tombstones), "100000", 0, 100000000, NULL, "N",
     "most remembered expired/evicted ids; the oldest are forgotten first"},
    {"retry_after_s", CT_INT, OFF(retry_after_s), "1", 0, 3600, NULL, "S",
     "Retry-After sent with 429 and 503"},
    {"sessions_page_max", CT_INT, OFF(sessions_page_max), "1000", 1, 1000000, NULL, "N",
     "largest page of GET /v1/sessions (?limit=, default 100 or this if smaller)"},
    {"request_timeout_s", CT_INT, OFF(request_timeout_s), "30", 1, 3600, NULL, "S",
     "a connection idle this long is closed, and so is a request whose headers take longer "
     "(after that, its body must keep min_body_rate)"},
    {"min_body_rate", CT_SIZE, OFF(min_body_rate), "1K", 1, 1024 * KI *KI, NULL, "BYTES",
     "slowest a request body may arrive, in bytes per second, after request_timeout_s, "
     "in every window of request_timeout_s"},
    {"shutdown_timeout_s", CT_INT, OFF(shutdown_timeout_s), "10", 0, 3600, NULL, "S",
     "on SIGTERM/SIGINT, longest wait for in-flight requests before exiting"},
    {"max_connections", CT_INT, OFF(max_connections), "1024", 1, 65536, NULL, "N",
     "most simultaneous client connections"},
    {"max_connections_per_ip", CT_INT, OFF(max_connections_per_ip), "128", 1, 65536, NULL, "N",
     "most simultaneous connections from one client address; more are closed at once"},
    {"max_header_bytes", CT_SIZE, OFF(max_header_bytes), "32K", 8 * KI, KI *KI, NULL, "BYTES",
     "memory for one request's line and headers (libmicrohttpd's connection memory); more "
     "gets 431 or 414"},
    {"max_pending_requests", CT_INT, OFF(max_pending_requests), "4096", 1, 10000000, NULL, "N",
     "most compute requests (steps, infer, generate) queued or running at once; more get "
     "429 with Retry-After instead of waiting"},
    {"log_level", CT_ENUM, OFF(log_level), "info", 0, 3, level_names, "LEVEL",
     "debug, info, warn or error"},
    {"access_log", CT_ENUM, OFF(access_log), "on", 0, 1, onoff_names, "on|off",
     "one info line per finished request (endpoint pattern, model, status, time; never "
     "session ids, bodies or state)"},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

size_t rnnd_config_count(void) { return N_SETTINGS; }
const char *rnnd_config_key(size_t i) { return i < N_SETTINGS ? settings[i].name : NULL; }
const char *rnnd_config_default(size_t i) { return i < N_SETTINGS ? settings[i].def : NULL; }

/* '-' and '_' are the same in keys, so --max-batch and max_batch both work. */
static const struct setting *find_setting(const char *key, size_t keylen)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *n = settings[i].name;
        if (strlen(n) != keylen)
            continue;
        size_t j = 0;
        for (; j < keylen; j++) {
            char a = key[j] == '-' ? '_' : key[j];
            if (a != n[j])
                break;
        }
        if (j == keylen)
            return &settings[i];
    }
    return NULL;
}

static int parse_int(const struct setting *s, const char *v, int64_t *out, char *err, size_t errlen)
{
    errno = 0;
    char *end;
    while (isspace((unsigned char)*v))
        v++;
    if (!*v || *v == '+') {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: expected a number, got \"%s\"",
                         s->name, v);
    }
    long long x = strtoll(v, &end, 10);
    if (errno == ERANGE) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: %s is out of range %" PRId64 "..%" PRId64, s->name, v, s->min,
                         s->max);
    }
    int64_t mult = 1;
    if (s->type == CT_SIZE && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K':
            mult = KI;
            end++;
            break;
        case 'M':
            mult = KI * KI;
            end++;
            break;
        case 'G':
            mult = KI * KI * KI;
            end++;
            break;
        default: break;
        }
        if (mult > 1 && (*end == 'B' || *end == 'b'))
            end++; /* accept "16M" and "16MB" */
    }
    if (*end || end == v) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: expected %s, got \"%s\"", s->name,
                         s->type == CT_SIZE ? "a size such as 16M" : "an integer", v);
    }
    if (x > 0 && x > INT64_MAX / mult) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: %s is out of range", s->name, v);
    }
    int64_t val = (int64_t)x * mult;
    if (val < s->min || val > s->max) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: %s is out of range %" PRId64 "..%" PRId64, s->name, v, s->min,
                         s->max);
    }
    *out = val;
    return RNND_OK;
}

static int apply(rnnd_config *cfg, const struct setting *s, const char *v, char *err, size_t errlen)
{
    char *base = (char *)cfg;
    switch (s->type) {
    case CT_INT:
    case CT_SIZE: return parse_int(s, v, (int64_t *)(base + s->offset), err, errlen);
    case CT_ENUM:
        for (size_t i = 0; s->names[i]; i++) {
            if (!strcmp(v, s->names[i])) {
                *(int64_t *)(base + s->offset) = (int64_t)i;
                return RNND_OK;
            }
        }
        {
            char list[128] = "";
            for (size_t i = 0; s->names[i]; i++) {
                if (i)
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, s->names[i], sizeof list - strlen(list) - 1);
            }
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: \"%s\" is not one of %s", s->name,
                             v, list);
        }
    case CT_STRING: {
        char *copy = strdup(v);
        if (!copy)
            return RNND_ERR_NOMEM;
        char **slot = (char **)(base + s->offset);
        free(*slot);
        *slot = copy;
        return RNND_OK;
    }
    case CT_LIST: {
        if (!*v)
            return RNND_OK; /* the empty default */
        const char *eq = strchr(v, '=');
        if (!eq || eq == v || !eq[1]) {
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: expected NAME=FILE, got \"%s\"",
                             s->name, v);
        }
        char ***list = (char ***)(base + s->offset);
        size_t *n = &cfg->n_model;
        char **grown = realloc(*list, (*n + 1) * sizeof *grown);
        if (!grown)
            return RNND_ERR_NOMEM;
        *list = grown;
        if (!(grown[*n] = strdup(v)))
            return RNND_ERR_NOMEM;
        (*n)++;
        return RNND_OK;
    }
    }
    return RNND_ERR_INTERNAL;
}

int rnnd_config_init(rnnd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char err[256];
    for (size_t i = 0; i < N_SETTINGS; i++) {
        int rc = apply(cfg, &settings[i], settings[i].def, err, sizeof err);
        if (rc) {
            rnnd_config_free(cfg);
            return rc;
        }
    }
    return RNND_OK;
}

void rnnd_config_free(rnnd_config *cfg)
{
    if (!cfg)
        return;
    /* every text setting, from the table: a new one cannot be forgotten here */
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].type == CT_STRING)
            free(*(char **)((char *)cfg + settings[i].offset));
    for (size_t i = 0; i < cfg->n_model; i++)
        free(cfg->model[i]);
    free(cfg->model);
    memset(cfg, 0, sizeof *cfg);
}

int rnnd_config_set(rnnd_config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    const struct setting *s = find_setting(key, strlen(key));
    if (!s) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "unknown setting \"%s\" (rnnd serve --help lists them)", key);
    }
    return apply(cfg, s, value, err, errlen);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int rnnd_config_load_file(rnnd_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return rnnd_fail(RNND_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
    }
    char line[8192];
    int lineno = 0, rc = RNND_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s:%d: line too long", path, lineno);
            break;
        }
        char *t = trim(line);
        if (!*t || *t == '#')
            continue;
        char *eq = strchr(t, '=');
        if (!eq) {
            rc = rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s:%d: expected key = value", path,
                           lineno);
            break;
        }
        *eq = '\0';
        char *key = trim(t), *value = trim(eq + 1);
        char msg[512];
        rc = rnnd_config_set(cfg, key, value, msg, sizeof msg);
        if (rc) {
            rnnd_fail(rc, err, errlen, "%s:%d: %s", path, lineno, msg);
            break;
        }
    }
    if (!rc && ferror(f)) {
        rc = rnnd_fail(RNND_ERR_IO, err, errlen, "%s: read error", path);
    }
    fclose(f);
    return rc;
}

int rnnd_config_from_args(rnnd_config *cfg, int argc, char **argv, int *action, char *err,
                          size_t errlen)
{
    *action = RNND_CONFIG_RUN;
    /* first pass: --help, --print-config and --config, so flags override the file */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *action = RNND_CONFIG_HELP;
            return RNND_OK;
        }
        if (!strcmp(a, "--print-config")) {
            *action = RNND_CONFIG_PRINT;
        } else if (!strcmp(a, "--config") || !strncmp(a, "--config=", 9)) {
            const char *path = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!path) {
                return rnnd_fail(RNND_ERR_INVALID, err, errlen, "--config needs a FILE");
            }
            int rc = rnnd_config_load_file(cfg, path, err, errlen);
            if (rc)
                return rc;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--print-config"))
            continue;
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9))
            continue;
        if (strncmp(a, "--", 2) || !a[2]) {
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "unexpected argument \"%s\" (rnnd serve --help)", a);
        }
        const char *key = a + 2, *eq = strchr(key, '='), *value;
        size_t keylen = eq ? (size_t)(eq - key) : strlen(key);
        const struct setting *s = find_setting(key, keylen);
        if (!s) {
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "unknown option \"%.*s\" (rnnd serve --help)", (int)(keylen + 2), a);
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "--%s needs a value (%s)", s->name,
                             s->arg);
        }
        int rc = apply(cfg, s, value, err, errlen);
        if (rc)
            return rc;
    }
    return rnnd_config_check(cfg, err, errlen);
}

/* The cluster settings among themselves (the password file and the host name are checked at
 * start, rnnd_store_node_name and rnnd_store_password_read: they read the system). */
static int store_check(const rnnd_config *cfg, char *err, size_t errlen)
{
    if (!*cfg->session_store) {
        if (*cfg->session_store_password_file)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "session_store_password_file is set without session_store");
        return RNND_OK;
    }
    /* in cluster mode the durable copy is Redis: two copies would disagree after a takeover */
    if (*cfg->state_dir)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "state_dir and session_store exclude each other: in cluster mode the "
                         "sessions' durable copy is Redis");
    rnnd_store_url url;
    if (rnnd_store_url_parse(cfg->session_store, &url, err, errlen))
        return RNND_ERR_INVALID;
    if (*url.user && !*cfg->session_store_password_file)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_store names a user: its password goes in "
                         "session_store_password_file");
    if (*cfg->node_name && rnnd_store_name_check(cfg->node_name, err, errlen))
        return RNND_ERR_INVALID;
    return RNND_OK;
}

int rnnd_config_check(const rnnd_config *cfg, char *err, size_t errlen)
{
    if (cfg->session_ttl_s > cfg->session_ttl_max_s) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_ttl_s (%" PRId64 ") is above session_ttl_max_s (%" PRId64 ")",
                         cfg->session_ttl_s, cfg->session_ttl_max_s);
    }
    if (!*cfg->tls_cert != !*cfg->tls_key) {
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "tls_cert and tls_key go together: set both for HTTPS, or neither");
    }
    return store_check(cfg, err, errlen);
}

static void flag_name(const struct setting *s, char *out, size_t n)
{
    snprintf(out, n, "--%s", s->name);
    for (char *p = out + 2; *p; p++)
        if (*p == '_')
            *p = '-';
}

/* Print TEXT word-wrapped to WIDTH columns, every line indented by INDENT. */
static void wrap(FILE *f, const char *text, int indent, int width)
{
    const char *p = text;
    while (*p) {
        int room = width - indent, n = (int)strlen(p);
        if (n > room) {
            n = room;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = room;
        }
        fprintf(f, "%*s%.*s\n", indent, "", n, p);
        p += n;
        while (*p == ' ')
            p++;
    }
}

void rnnd_config_help(FILE *f)
{
    fprintf(f,
            "usage: rnnd serve [--config FILE] [--models DIR] [--model NAME=FILE]...\n"
            "                  [--listen ADDR:PORT] [--SETTING VALUE]...\n"
            "\n"
            "Serve recurrent models over HTTP/JSON (docs/api.md). Settings come from their\n"
            "defaults, then the --config file (key = value lines, see conf/rnnd.conf), then\n"
            "flags. Every setting is a flag: --max-batch 32, --max_batch=32.\n"
            "\n"
            "  --config FILE          read settings from FILE\n"
            "  --print-config         print the effective settings as a conf file and exit\n"
            "  --help                 this text\n"
            "\nsettings:\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        char flag[64], text[768];
        flag_name(s, flag, sizeof flag);
        fprintf(f, "  %s %s\n", flag, s->arg);
        int n = snprintf(text, sizeof text, "%s (key %s, default \"%s\"", s->help, s->name, s->def);
        if (n > 0 && (size_t)n < sizeof text && (s->type == CT_INT || s->type == CT_SIZE))
            snprintf(text + n, sizeof text - (size_t)n, ", %" PRId64 "..%" PRId64, s->min, s->max);
        strncat(text, ")", sizeof text - strlen(text) - 1);
        wrap(f, text, 8, 90);
    }
}

static void print_size(FILE *f, int64_t v)
{
    if (v && v % (KI * KI * KI) == 0)
        fprintf(f, "%" PRId64 "G\n", v / (KI * KI * KI));
    else if (v && v % (KI * KI) == 0)
        fprintf(f, "%" PRId64 "M\n", v / (KI * KI));
    else if (v && v % KI == 0)
        fprintf(f, "%" PRId64 "K\n", v / KI);
    else
        fprintf(f, "%" PRId64 "\n", v);
}

void rnnd_config_print(const rnnd_config *cfg, FILE *f)
{
    const char *base = (const char *)cfg;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        const void *p = base + s->offset;
        switch (s->type) {
        case CT_INT: fprintf(f, "%s = %" PRId64 "\n", s->name, *(const int64_t *)p); break;
        case CT_SIZE:
            fprintf(f, "%s = ", s->name);
            print_size(f, *(const int64_t *)p);
            break;
        case CT_ENUM: fprintf(f, "%s = %s\n", s->name, s->names[*(const int64_t *)p]); break;
        case CT_STRING:
            fprintf(f, "%s = %s\n", s->name, *(char *const *)p ? *(char *const *)p : "");
            break;
        case CT_LIST:
            for (size_t j = 0; j < cfg->n_model; j++)
                fprintf(f, "%s = %s\n", s->name, cfg->model[j]);
            break;
        }
    }
}
