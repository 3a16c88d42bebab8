/* Every setting of `rnnd serve` in one table (settings.c): name, type, default, bounds and help.
 * The table drives the conf file parser, the command-line flags, `--help` and
 * `--print-config`, so a setting is declared once. conf/rnnd.conf documents each key with its
 * default; a test checks the two agree. */
#ifndef RNND_SETTINGS_H
#define RNND_SETTINGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum rnnd_evict { RNND_EVICT_REJECT = 0, RNND_EVICT_LRU = 1 };

typedef struct rnnd_config {
    char *listen; /* ADDR:PORT */
    char *models; /* folder of *.rnnd files, "" = none */
    char **model; /* NAME=FILE entries */
    size_t n_model;
    char *state_dir;          /* "" = no snapshots */
    char *snapshot_key_file;  /* "" = state_dir + ".key" */
    char *api_keys_file;      /* "" = no authentication */
    char *tls_cert, *tls_key; /* "" = plain HTTP */
    char *tls_priorities;
    char *cors_origins; /* "" = no CORS */
    int64_t web_ui;     /* the page at / (api_web.c): 0 off, 1 on */
    /* cluster mode (docs/cluster.md): validated at start, sessions not yet stored */
    char *session_store;               /* "" = the embedded default */
    char *session_store_password_file; /* "" = no AUTH */
    char *node_name;                   /* "" = the host name */
    int64_t store_sync_ms;
    int64_t lease_ms;
    int64_t drain_grace_ms;
    int64_t snapshot_interval_s;
    int64_t http_threads;
    int64_t workers; /* 0 = online cores */
    int64_t compute; /* enum rnnd_compute, for bf16 models (docs/kernels.md, "bf16 compute") */
    int64_t max_batch;
    int64_t max_batch_wait_us;
    int64_t max_infer_batch_steps;
    int64_t max_body_bytes;
    int64_t max_steps_per_request;
    int64_t max_generate_tokens;
    int64_t sse_ping_s;
    int64_t max_websockets;
    int64_t max_websockets_per_ip;
    int64_t ws_max_message_bytes;
    int64_t ws_max_in_flight;
    int64_t ws_idle_timeout_s;
    int64_t max_sequences;
    int64_t max_infer_steps;
    int64_t max_json_depth;
    int64_t max_sessions;
    int64_t max_state_bytes;
    int64_t max_request_memory;
    int64_t memory_budget;
    int64_t session_ttl_s;
    int64_t session_ttl_max_s;
    int64_t session_evict; /* enum rnnd_evict */
    int64_t tombstone_s;
    int64_t max_tombstones;
    int64_t retry_after_s;
    int64_t sessions_page_max;
    int64_t request_timeout_s;
    int64_t min_body_rate;
    int64_t shutdown_timeout_s;
    int64_t max_connections;
    int64_t max_connections_per_ip;
    int64_t max_header_bytes;
    int64_t max_pending_requests;
    int64_t max_sessions_per_key;
    int64_t log_level;  /* enum rnnd_log_level */
    int64_t access_log; /* 0 off, 1 on */
} rnnd_config;

/* Fill CFG with every default. Returns 0 or RNND_ERR_NOMEM. */
int rnnd_config_init(rnnd_config *cfg);
void rnnd_config_free(rnnd_config *cfg);

/* Set one setting from text (conf file value or flag argument), checking type and bounds.
 * Returns 0 or RNND_ERR_INVALID with ERR naming the key and the reason. A list setting
 * ("model") appends. */
int rnnd_config_set(rnnd_config *cfg, const char *key, const char *value, char *err, size_t errlen);

/* Read a conf file: "key = value" lines, '#' starts a comment line, blank lines ignored.
 * Errors name the file and line. */
int rnnd_config_load_file(rnnd_config *cfg, const char *path, char *err, size_t errlen);

/* The command line of `rnnd serve` (ARGV[0] is "serve"): defaults, then --config FILE, then
 * every other flag (--key VALUE, --key=VALUE; '-' and '_' are the same in keys).
 * *ACTION is set to RNND_CONFIG_RUN, _HELP or _PRINT. Returns 0 or RNND_ERR_INVALID. */
enum { RNND_CONFIG_RUN = 0, RNND_CONFIG_HELP, RNND_CONFIG_PRINT };
int rnnd_config_from_args(rnnd_config *cfg, int argc, char **argv, int *action, char *err,
                          size_t errlen);

/* Checks between settings (session_ttl_s <= session_ttl_max_s); run by
 * rnnd_config_from_args(). Returns 0 or RNND_ERR_INVALID. */
int rnnd_config_check(const rnnd_config *cfg, char *err, size_t errlen);

/* `rnnd serve --help`: usage and every setting with its type, default, bounds and help. */
void rnnd_config_help(FILE *f);

/* The effective settings in conf file syntax (parses back to the same config). */
void rnnd_config_print(const rnnd_config *cfg, FILE *f);

/* Introspection of the table (for tests and docs). */
size_t rnnd_config_count(void);
const char *rnnd_config_key(size_t i);
const char *rnnd_config_default(size_t i); /* as text, exactly as in conf/rnnd.conf */

#endif
