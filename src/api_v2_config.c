/* What Triton clients ask a server about its models besides metadata (docs/v2.md): the model
 * configuration (GET /v2/models/{m}[/versions/{v}]/config), the statistics extension
 * (GET /v2/models[/{m}[/versions/{v}]]/stats) and the model repository index
 * (POST /v2/repository/index). All three describe what the daemon already has: the model's
 * sizes and settings, the batcher's counters, the loaded set. Nothing here is measured anew,
 * so a figure rnnd does not measure is reported as 0 and docs/v2.md says which. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "api.h"
#include "batcher.h"
#include "rnnd/state_json.h"

/* ---- GET /v2/models/{m}[/versions/{v}]/config -------------------------------------------- */

/* One entry of "input" or "output": Triton's ModelInput/ModelOutput as JSON. DIMS leave out
 * the batch dimension, as they do in Triton whenever max_batch_size > 0. */
static void config_tensor(rnnd_buf *b, const char *name, const char *type, const char *dims,
                          int optional)
{
    rnnd_buf_printf(b, "{\"name\":\"%s\",\"data_type\":\"%s\",\"dims\":[%s]%s}", name, type, dims,
                    optional ? ",\"optional\":true" : "");
}

void rnnd_api_v2_model_config(rnnd_req *r)
{
    const rnnd_entry *e = rnnd_v2_model(r);
    if (!e)
        return;
    const rnnd_config *cfg = rnnd_req_app(r)->cfg;
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    int text = e->tokenizer != NULL;
    char dims[48];
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"name\":");
    rnnd_buf_json_string(&b, e->name);
    /* a request's sequences are its batch: the infer limit is the batch limit */
    rnnd_buf_printf(&b,
                    ",\"platform\":\"rnnd\",\"backend\":\"rnnd\",\"version_policy\":"
                    "{\"latest\":{\"num_versions\":1}},\"max_batch_size\":%lld,\"input\":[",
                    (long long)cfg->max_sequences);
    if (spec->input_kind == RNND_INPUT_TOKENS) {
        config_tensor(&b, RNND_V2_INPUT, "TYPE_INT32", "-1", text);
    } else {
        snprintf(dims, sizeof dims, "-1,%d", spec->input_dim);
        config_tensor(&b, RNND_V2_INPUT, "TYPE_FP32", dims, 0);
    }
    if (text) { /* one text per sequence: either this or INPUT is sent */
        rnnd_buf_puts(&b, ",");
        config_tensor(&b, RNND_V2_TEXT, "TYPE_STRING", "1", 1);
    }
    rnnd_buf_puts(&b, "],\"output\":[");
    /* a pooled model's stateless infer has no step axis (as its metadata says) */
    snprintf(dims, sizeof dims, "%s%d", spec->pool != RNND_POOL_NONE ? "" : "-1,", e->output_dim);
    config_tensor(&b, RNND_V2_OUTPUT, "TYPE_FP32", dims, 0);
    rnnd_buf_puts(&b, "]");
    /* the sequence extension maps sequences onto sessions, which expire after session_ttl_s
     * idle: that is Triton's idle limit of a sequence */
    if (e->stateful)
        rnnd_buf_printf(&b,
                        ",\"sequence_batching\":{\"max_sequence_idle_microseconds\":%lld,"
                        "\"control_input\":[],\"state\":[]}",
                        (long long)cfg->session_ttl_s * 1000000LL);
    rnnd_buf_puts(&b, "}");
    rnnd_reply(r, 200, &b);
}

/* ---- GET /v2/models[/{m}[/versions/{v}]]/stats ------------------------------------------- */

static void duration(rnnd_buf *b, const char *name, unsigned long long count)
{
    rnnd_buf_printf(b, "\"%s\":{\"count\":%llu,\"ns\":0}", name, count);
}

/* E's $model_stat. The batcher counts computed steps, infer requests and model executions;
 * it times nothing, so every "ns" is 0 and last_inference is 0 (docs/v2.md). */
static void model_stat(rnnd_buf *b, const rnnd_entry *e)
{
    const rnnd_batcher *q = e->batcher;
    unsigned long long infers = q ? rnnd_batcher_infer_requests(q) : 0;
    unsigned long long steps = q ? rnnd_batcher_steps(q) : 0;
    unsigned long long execs = q
        ? rnnd_batcher_infer_rounds(q) + rnnd_batcher_batches(q) + rnnd_batcher_scan_rounds(q)
        : 0;
    rnnd_buf_puts(b, "{\"name\":");
    rnnd_buf_json_string(b, e->name);
    rnnd_buf_printf(b,
                    ",\"version\":\"%d\",\"last_inference\":0,\"inference_count\":%llu,"
                    "\"execution_count\":%llu,\"inference_stats\":{",
                    e->version, infers + steps, execs);
    duration(b, "success", infers + steps);
    rnnd_buf_puts(b, ",");
    duration(b, "fail", 0);
    rnnd_buf_puts(b, ",");
    duration(b, "queue", 0);
    rnnd_buf_puts(b, ",");
    duration(b, "compute_input", 0);
    rnnd_buf_puts(b, ",");
    duration(b, "compute_infer", execs);
    rnnd_buf_puts(b, ",");
    duration(b, "compute_output", 0);
    rnnd_buf_puts(b, ",");
    duration(b, "cache_hit", 0);
    /* the step rounds by the number of sessions stepped together */
    rnnd_buf_puts(b, "},\"batch_stats\":[");
    size_t max = q ? rnnd_batcher_max_batch(q) : 0;
    int first = 1;
    for (size_t k = 1; k <= max; k++) {
        unsigned long long n = rnnd_batcher_hist(q, k);
        if (!n)
            continue;
        rnnd_buf_printf(b, "%s{\"batch_size\":%zu,", first ? "" : ",", k);
        duration(b, "compute_input", 0);
        rnnd_buf_puts(b, ",");
        duration(b, "compute_infer", n);
        rnnd_buf_puts(b, ",");
        duration(b, "compute_output", 0);
        rnnd_buf_puts(b, "}");
        first = 0;
    }
    rnnd_buf_puts(b, "]}");
}

void rnnd_api_v2_model_stats(rnnd_req *r)
{
    const rnnd_entry *e = rnnd_v2_model(r);
    if (!e)
        return;
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"model_stats\":[");
    model_stat(&b, e);
    rnnd_buf_puts(&b, "]}");
    rnnd_reply(r, 200, &b);
}

/* The loaded set, with references of its own; replies on failure. */
static int loaded(rnnd_req *r, rnnd_registry *set)
{
    if (rnnd_catalog_copy(&rnnd_req_app(r)->models, set)) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for the list of models");
        return -1;
    }
    return 0;
}

void rnnd_api_v2_stats_all(rnnd_req *r)
{
    rnnd_registry set;
    if (loaded(r, &set))
        return;
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"model_stats\":[");
    for (size_t i = 0; i < set.n; i++) {
        if (i)
            rnnd_buf_puts(&b, ",");
        model_stat(&b, set.entries[i]);
    }
    rnnd_buf_puts(&b, "]}");
    rnnd_registry_free(&set);
    rnnd_reply(r, 200, &b);
}

/* ---- POST /v2/repository/index ----------------------------------------------------------- */

/* The loaded models, each READY: a model that fails to load stops the start, and on a reload
 * keeps its previous version (docs/api.md 4.8), so the set served is the set listed. A new
 * file that fails on reload is only in the log, not here: rnnd keeps no UNAVAILABLE entries.
 * {"ready": true} and {"ready": false} therefore list the same models. */
void rnnd_api_v2_repository_index(rnnd_req *r)
{
    const json_t *body = rnnd_req_body(r);
    const json_t *ready = body ? json_object_get(body, "ready") : NULL;
    if (ready && !json_is_boolean(ready)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "ready: expected true or false, got %s",
                      rnnd_json_type_desc(ready));
        return;
    }
    rnnd_registry set;
    if (loaded(r, &set))
        return;
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "[");
    for (size_t i = 0; i < set.n; i++) {
        rnnd_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        rnnd_buf_json_string(&b, set.entries[i]->name);
        rnnd_buf_printf(&b, ",\"version\":\"%d\",\"state\":\"READY\",\"reason\":\"\"}",
                        set.entries[i]->version);
    }
    rnnd_buf_puts(&b, "]");
    rnnd_registry_free(&set);
    rnnd_reply(r, 200, &b);
}
