/* The /v1/sessions resource: create, list, inspect, delete, step, reset, fork, export and
 * import state. Everything that reads or writes a session's state is a job on the session
 * (session.h), so it runs in request order and never alongside another request on the same
 * session; steps go through the model's batcher (batcher.h). */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cluster.h"
#include "rnnd/sample.h"
#include "rnnd/state_json.h"
#include "rnnd/step_scan.h"
#include "rnnd/status.h"
#include "rnnd/tokenizer.h"
#include "ws_codec.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* An optional integer field in [lo, hi]; *out untouched when absent. */
static int int_field(rnnd_req *r, const json_t *body, const char *name, int64_t lo, int64_t hi,
                     int64_t *out)
{
    const json_t *v = json_object_get(body, name);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "%s: expected an integer in %" PRId64 "..%" PRId64 ", got %s", name, lo,
                         hi, json_is_integer(v) ? "one out of range" : rnnd_json_type_desc(v));
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* "ttl_s" of BODY, when present, into *OUT: an integer that rnnd_session_ttl_check (the
 * snapshot restore's check too) accepts. */
static int ttl_field(rnnd_req *r, const json_t *body, int64_t max, int64_t *out)
{
    const json_t *v = json_object_get(body, "ttl_s");
    if (!v)
        return 0;
    char why[160];
    if (!json_is_integer(v)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "ttl_s: expected an integer in 1..%" PRId64 ", got %s", max,
                         rnnd_json_type_desc(v));
        return -1;
    }
    if (rnnd_session_ttl_check((double)json_integer_value(v), max, why, sizeof why)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", why);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static rnnd_entry *entry_of(rnnd_session *s) { return rnnd_session_model(s); }

static void session_summary(rnnd_buf *b, const rnnd_session_info *info)
{
    const rnnd_entry *e = info->model;
    rnnd_buf_printf(b, "{\"id\":\"%s\",\"model\":", info->id);
    rnnd_buf_json_string(b, e->name);
    rnnd_buf_printf(b, ",\"model_version\":%d", e->version);
    rnnd_buf_printf(b,
                    ",\"steps\":%" PRIu64 ",\"created\":%" PRId64 ",\"idle_s\":%.3f"
                    ",\"expires_in\":%.3f,\"ttl_s\":%.0f,\"busy\":%s}",
                    info->steps, info->created, info->idle_s, info->expires_in, info->ttl_s,
                    info->busy ? "true" : "false");
}

/* Parse the body's optional "state" into a new block (NULL when absent), after checking its
 * "digest": checked whenever given, required with a state (rnnd_state_digest_check, the one
 * check of every path that accepts a state). Replies on error. */
static int state_field(rnnd_req *r, const json_t *body, const rnnd_entry *e, float **out)
{
    *out = NULL;
    json_t *v = json_object_get(body, "state");
    char err[512];
    int rc = rnnd_state_digest_check(e->model, json_object_get(body, "digest"), v != NULL, err,
                                     sizeof err);
    if (rc) {
        rnnd_reply_error(r, rnnd_errcode_of(rc), "%s", err);
        return -1;
    }
    if (!v)
        return 0;
    float *st = malloc((e->state_floats ? e->state_floats : 1) * sizeof *st);
    if (!st) {
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    if (rnnd_state_parse_at(e->model, v, st, "state", err, sizeof err)) {
        free(st);
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", err);
        return -1;
    }
    *out = st;
    return 0;
}

/* Create a session and reply 201 (or 429/400/503). */
/* DEFAULTS (generation defaults, may be NULL) is taken over. */
static void create_and_reply(rnnd_req *r, rnnd_entry *e, const float *init, uint64_t steps,
                             double ttl, const char *parent, rnnd_gen_params *defaults)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_session *s;
    char err[256];
    rnnd_session_init si = {.model = e,
                            .state_floats = e->state_floats,
                            .state = init,
                            .owner = rnnd_req_owner(r),
                            .steps = steps,
                            .ttl_s = ttl};
    int rc = rnnd_session_create(app->sessions, &si, &s, err, sizeof err);
    if (rc)
        free(defaults);
    else if (defaults)
        rnnd_session_set_ext(s, defaults, free);
    /* cluster mode: the record is written before the id is handed out (its next request may
     * reach another node) */
    if (!rc && (rc = rnnd_sync_created(app->cluster, s, defaults, err, sizeof err))) {
        rnnd_session_remove(app->sessions, rnnd_session_id(s));
        rnnd_session_unref(s);
        rnnd_cluster_reply_store(r, err);
        return;
    }
    if (rc == RNND_ERR_LIMIT) {
        rnnd_reply_error(r, RNND_E_OVERLOADED, "%s", err);
        return;
    }
    if (rc) {
        rnnd_reply_error(r, rc == RNND_ERR_INVALID ? RNND_E_INVALID_REQUEST : RNND_E_UNAVAILABLE,
                         "%s", err);
        return;
    }
    rnnd_session_info info;
    rnnd_session_get_info(s, &info);
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_printf(&b, "{\"id\":\"%s\",\"model\":", info.id);
    rnnd_buf_json_string(&b, e->name);
    rnnd_buf_printf(&b, ",\"expires_in\":%.0f,\"ttl_s\":%.0f,\"steps\":%" PRIu64, info.expires_in,
                    info.ttl_s, info.steps);
    rnnd_session_info_release(app->sessions, &info, 1);
    if (parent)
        rnnd_buf_printf(&b, ",\"parent\":\"%s\"", parent);
    rnnd_buf_puts(&b, "}");
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/sessions/%s", info.id);
    rnnd_reply_header(r, "Location", loc);
    rnnd_reply(r, 201, &b);
    rnnd_session_unref(s);
}

/* ---- POST /v1/sessions ------------------------------------------------------------------- */

void rnnd_api_sessions_create(rnnd_req *r)
{
    static const char *const fields[] = {"model", "ttl_s", "state", "digest", "generate", NULL};
    rnnd_app *app = rnnd_req_app(r);
    json_t *body = rnnd_req_body(r);
    if (!body) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the request body is empty: expected "
                         "{\"model\": NAME}");
        return;
    }
    if (rnnd_api_check_fields(r, body, fields))
        return;
    const json_t *m = json_object_get(body, "model");
    if (!json_is_string(m)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "model: expected a model name (string), got %s",
                         m ? rnnd_json_type_desc(m) : "nothing");
        return;
    }
    rnnd_entry *e = rnnd_api_model(r, json_string_value(m));
    if (!e)
        return;
    if (!e->stateful) {
        rnnd_reply_error(r, RNND_E_UNSUPPORTED,
                         "model %s has reverse or bidirectional layers, so "
                         "it cannot be fed step by step: use POST /v1/models/%s/infer",
                         e->name, e->name);
        return;
    }
    int64_t ttl = app->cfg->session_ttl_s;
    if (ttl_field(r, body, app->cfg->session_ttl_max_s, &ttl))
        return;
    float *init;
    if (state_field(r, body, e, &init))
        return;
    rnnd_gen_params *defaults;
    if (rnnd_api_gen_defaults(r, e, json_object_get(body, "generate"), &defaults)) {
        free(init);
        return;
    }
    create_and_reply(r, e, init, 0, (double)ttl, NULL, defaults);
    free(init);
}

/* ---- GET /v1/sessions -------------------------------------------------------------------- */

void rnnd_api_sessions_list(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    int64_t max = app->cfg->sessions_page_max, limit = max < 100 ? max : 100;
    const char *q = rnnd_req_query(r, "limit");
    if (q) {
        char *end;
        long long v = strtoll(q, &end, 10);
        if (!*q || *end || v < 1 || v > max) {
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "limit: expected an integer in 1..%" PRId64,
                             max);
            return;
        }
        limit = v;
    }
    const char *after = rnnd_req_query(r, "after");
    if (after && *after && !rnnd_id_valid(after)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "after: expected a session id");
        return;
    }
    const rnnd_entry *model = NULL;
    const char *mq = rnnd_req_query(r, "model");
    if (mq && !(model = rnnd_api_model(r, mq)))
        return;
    rnnd_session_info *infos = malloc((size_t)limit * sizeof *infos);
    int more = 0;
    uint64_t owner = rnnd_req_owner(r);
    size_t n = infos
        ? rnnd_session_list_for(app->sessions, after, model, rnnd_req_admin(r) ? NULL : &owner,
                                (size_t)limit, infos, &more)
        : (size_t)-1;
    if (n == (size_t)-1) {
        free(infos);
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"sessions\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            rnnd_buf_puts(&b, ",");
        session_summary(&b, &infos[i]);
    }
    rnnd_buf_puts(&b, "],\"next\":");
    if (more && n)
        rnnd_buf_printf(&b, "\"%s\"", infos[n - 1].id);
    else
        rnnd_buf_puts(&b, "null");
    rnnd_buf_puts(&b, "}");
    rnnd_session_info_release(app->sessions, infos, n);
    free(infos);
    rnnd_reply(r, 200, &b);
}

/* ---- GET / DELETE /v1/sessions/{id} ------------------------------------------------------ */

void rnnd_api_session_get(rnnd_req *r)
{
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    rnnd_session_info info;
    rnnd_session_get_info(s, &info);
    rnnd_session_unref(s); /* the info holds the model it names */
    rnnd_buf b;
    rnnd_buf_init(&b);
    session_summary(&b, &info);
    rnnd_session_info_release(rnnd_req_app(r)->sessions, &info, 1);
    rnnd_reply(r, 200, &b);
}

void rnnd_api_session_delete(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_session *s = rnnd_api_session_lookup(r); /* another key's: 404 */
    if (!s)
        return;
    char err[512];
    int deleted = 0;
    int rc = rnnd_sync_delete(app->cluster, s, &deleted, err, sizeof err);
    rnnd_session_unref(s);
    if (rc) {
        rnnd_cluster_reply_store(r, err);
        return;
    }
    int why = rnnd_session_remove(app->sessions, rnnd_req_param(r, 0));
    if (why == RNND_SESSION_FOUND || deleted)
        rnnd_reply_empty(r, 204);
    else
        rnnd_api_reply_left(r, why);
}

/* ---- POST /v1/sessions/{id}/step --------------------------------------------------------- */

struct step_req {
    rnnd_step_job sj; /* first member */
    rnnd_req *r;
    rnnd_session *s; /* one reference */
    int32_t *tokens;
    float *vectors, *out;
    int logits;   /* include the raw outputs */
    size_t top_k; /* 0: no top-k lists */
};

static void step_free(void *arg)
{
    struct step_req *q = arg;
    rnnd_session_unref(q->s);
    free(q->tokens);
    free(q->vectors);
    free(q->out);
    free(q);
}

/* ROWS rows of O outputs: one list when LAST_ONLY, else a list per step. */
static void rows_json(rnnd_buf *b, const float *out, size_t rows, size_t O, int last_only)
{
    if (last_only) {
        rnnd_buf_floats(b, out, O);
        return;
    }
    rnnd_buf_puts(b, "[");
    for (size_t i = 0; i < rows; i++) {
        if (i)
            rnnd_buf_puts(b, ",");
        rnnd_buf_floats(b, out + i * O, O);
    }
    rnnd_buf_puts(b, "]");
}

/* "top_k": the k most likely next tokens of each row with their probabilities (and text when
 * the model has a tokenizer), in the same shape as "outputs". Returns -1 out of memory. */
static int top_k_json(rnnd_buf *b, const struct step_req *q, const rnnd_entry *e, size_t rows,
                      int comma)
{
    size_t O = (size_t)e->output_dim, k = q->top_k;
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    int norm = spec->has_head ? spec->head_norm : RNND_NORM_NONE;
    rnnd_sampler *sm = rnnd_sampler_new(O);
    int32_t *ids = malloc(k * sizeof *ids);
    float *probs = malloc(k * sizeof *probs);
    if (!sm || !ids || !probs) {
        rnnd_sampler_free(sm);
        free(ids);
        free(probs);
        return -1;
    }
    rnnd_buf_puts(b, comma ? ",\"top_k\":" : "\"top_k\":");
    if (!q->sj.last_only)
        rnnd_buf_puts(b, "[");
    for (size_t i = 0; i < rows; i++) {
        size_t got = rnnd_top_k(sm, q->out + i * O, O, norm, k, ids, probs);
        rnnd_buf_puts(b, i ? ",[" : "[");
        for (size_t t = 0; t < got; t++) {
            rnnd_buf_printf(b, "%s{\"token\":%" PRId32 ",\"p\":", t ? "," : "", ids[t]);
            rnnd_buf_float(b, probs[t]);
            if (e->tokenizer) {
                size_t len;
                const char *piece = rnnd_tokenizer_piece(e->tokenizer, ids[t], &len);
                rnnd_buf_puts(b, ",\"text\":");
                rnnd_buf_json_stringn(b, piece, len);
            }
            rnnd_buf_puts(b, "}");
        }
        rnnd_buf_puts(b, "]");
    }
    if (!q->sj.last_only)
        rnnd_buf_puts(b, "]");
    rnnd_sampler_free(sm);
    free(ids);
    free(probs);
    return 0;
}

/* 409 conflict for an if_steps that is not the session's STEPS, with the count beside the
 * error so that the client can resend from there (docs/api.md, 4.4); into B (empty). */
static void reply_steps_conflict(rnnd_req *r, rnnd_buf *b, int64_t if_steps, uint64_t steps,
                                 const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg,
             "if_steps is %" PRId64 " but the session has %" PRIu64 " steps; nothing was %s",
             if_steps, steps, what);
    rnnd_buf_printf(b,
                    "{\"error\":{\"code\":\"%s\",\"message\":", rnnd_errcode_name(RNND_E_CONFLICT));
    rnnd_buf_json_string(b, msg);
    rnnd_buf_printf(b, ",\"steps\":%" PRIu64 "}}", steps);
    rnnd_reply(r, rnnd_errcode_http(RNND_E_CONFLICT), b);
}

/* The step job left its session's queue: encode the reply and send it. Any thread. */
static void step_finish(rnnd_job *job)
{
    struct step_req *q = (struct step_req *)job;
    rnnd_step_job *j = &q->sj;
    rnnd_req *r = q->r;
    const rnnd_entry *e = entry_of(q->s);
    rnnd_cluster *cl = rnnd_req_app(r)->cluster;
    if (j->done)
        rnnd_sync_dirty(cl, q->s);
    if (j->done && j->outcome != RNND_STEP_FAILED && rnnd_sync_left(cl, q->s, j->steps)) {
        /* queued behind a hand-over: it ran on the copy this node let go of */
        rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                         "the session moved to another node while this request waited; its "
                         "steps were not kept; retry");
        rnnd_req_complete(r);
        return;
    }
    switch (j->outcome) {
    case RNND_STEP_CONFLICT: {
        rnnd_buf b;
        rnnd_buf_init(&b);
        reply_steps_conflict(r, &b, j->if_steps, j->steps, "run");
        break;
    }
    case RNND_STEP_STOPPED:
        rnnd_reply_error(r, RNND_E_UNAVAILABLE,
                         "the server is shutting down; %zu of %zu steps were "
                         "applied (the session has %" PRIu64 " steps)",
                         j->done, j->n_steps, j->steps);
        break;
    case RNND_STEP_FAILED: rnnd_reply_error(r, rnnd_errcode_of(j->status), "%s", j->err); break;
    default:
        if (j->first_nonfinite >= 0) {
            rnnd_reply_error(r, RNND_E_NUMERIC_ERROR,
                             "inputs[%ld]: the output is NaN or infinite; "
                             "the session advanced to %" PRIu64 " steps",
                             j->first_nonfinite, j->steps);
        } else if (rnnd_req_binary(r)) {
            /* a WebSocket's binary frame: the same floats, raw (ws_codec.h) */
            rnnd_buf b;
            rnnd_buf_init(&b);
            rnnd_ws_reply_put(&b, j->steps, j->last_only ? 1 : j->n_steps, (size_t)e->output_dim,
                              j->out);
            rnnd_reply_header(r, "Content-Type", "application/octet-stream");
            rnnd_reply(r, 200, &b);
        } else {
            size_t O = (size_t)e->output_dim;
            rnnd_buf b;
            rnnd_buf_init(&b);
            size_t rows = j->last_only ? 1 : j->n_steps;
            rnnd_buf_puts(&b, "{");
            if (q->logits) {
                rnnd_buf_puts(&b, "\"outputs\":");
                rows_json(&b, j->out, rows, O, j->last_only);
            }
            if (q->top_k && top_k_json(&b, q, e, rows, q->logits)) {
                rnnd_buf_free(&b);
                rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
                break;
            }
            rnnd_buf_printf(&b, "%s\"steps\":%" PRIu64 "}", q->logits || q->top_k ? "," : "",
                            j->steps);
            rnnd_reply(r, 200, &b);
        }
        break;
    }
    /* store_sync_ms = 0: the reply waits until Redis holds the steps */
    rnnd_sync_complete(j->done ? rnnd_req_app(r)->cluster : NULL, q->s, r);
}

/* Validate "inputs" into flat arrays of Q. Replies on error. */
static int parse_inputs(rnnd_req *r, const json_t *inputs, const rnnd_entry *e, struct step_req *q,
                        size_t *n_out)
{
    rnnd_app *app = rnnd_req_app(r);
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    if (!json_is_array(inputs)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "inputs: expected a list of steps, got %s",
                         inputs ? rnnd_json_type_desc(inputs) : "nothing");
        return -1;
    }
    size_t n = json_array_size(inputs);
    if (!n) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "inputs: empty; give at least one step");
        return -1;
    }
    if (n > (size_t)app->cfg->max_steps_per_request) {
        rnnd_reply_error(r, RNND_E_LIMIT_EXCEEDED,
                         "inputs: %zu steps, more than "
                         "max_steps_per_request (%lld)",
                         n, (long long)app->cfg->max_steps_per_request);
        return -1;
    }
    if (spec->input_kind == RNND_INPUT_TOKENS) {
        q->tokens = malloc(n * sizeof *q->tokens);
        if (!q->tokens)
            goto oom;
        for (size_t i = 0; i < n; i++) {
            char why[128];
            if (rnnd_json_token(json_array_get(inputs, i), spec->vocab_size, &q->tokens[i], why,
                                sizeof why)) {
                rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "inputs[%zu]: %s", i, why);
                return -1;
            }
        }
    } else {
        size_t D = (size_t)spec->input_dim;
        q->vectors = malloc(n * D * sizeof *q->vectors);
        if (!q->vectors)
            goto oom;
        for (size_t i = 0; i < n; i++) {
            char path[48], err[256];
            snprintf(path, sizeof path, "inputs[%zu]", i);
            if (rnnd_json_step(json_array_get(inputs, i), q->vectors + i * D, D, path, err,
                               sizeof err)) {
                rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s", err);
                return -1;
            }
        }
    }
    *n_out = n;
    return 0;
oom:
    rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu steps", n);
    return -1;
}

/* The JSON around a step reply's rows ("outputs", "steps", brackets): a generous bound. */
#define STEP_FRAME 1024
/* One top-k entry's text besides its piece: {"token":N,"p":F,"text":""} and a comma. */
#define TOP_K_TEXT 64

/* What a step request of N steps holds until its reply is sent (membudget.h): its inputs
 * (token ids also as the scanner's 64-bit values), its output rows, and its reply's text. */
static size_t step_bytes(const rnnd_entry *e, size_t n, int last_only, int logits, size_t top_k)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    size_t O = e->output_dim ? (size_t)e->output_dim : 1, rows = last_only ? 1 : n;
    size_t in = spec->input_kind == RNND_INPUT_TOKENS ? sizeof(int32_t) + sizeof(int64_t)
                                                      : (size_t)spec->input_dim * sizeof(float);
    size_t bytes = rnnd_sat_mul(n, in);
    bytes = rnnd_sat_add(bytes, rnnd_sat_mul(rnnd_sat_mul(rows, O), sizeof(float)));
    if (logits) /* each float's text, and each row's brackets and comma */
        bytes = rnnd_sat_add(bytes,
                             rnnd_sat_mul(rows, rnnd_sat_add(rnnd_sat_mul(O, RNND_FLOAT_TEXT), 3)));
    if (top_k) { /* the sampler's candidates, and each entry's text (a piece escaped) */
        size_t entry = rnnd_sat_add(TOP_K_TEXT, rnnd_sat_mul(6, rnnd_gen_max_piece(e)));
        bytes = rnnd_sat_add(bytes, rnnd_sat_mul(O, 16));
        bytes = rnnd_sat_add(bytes, rnnd_sat_mul(rnnd_sat_mul(rows, top_k), entry));
    }
    return rnnd_sat_add(bytes, STEP_FRAME);
}

/* The inputs SC scanned (rnnd/step_scan.h) into Q, when they are what parse_inputs would
 * accept for E's model. Returns 1 when taken, 0 when they do not fit (the jansson path then
 * says why), -1 after replying out of memory. */
static int take_scanned(rnnd_req *r, rnnd_step_scan *sc, const rnnd_entry *e, struct step_req *q)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    size_t n = sc->n_steps;
    if (n > (size_t)rnnd_req_app(r)->cfg->max_steps_per_request)
        return 0;
    if (spec->input_kind == RNND_INPUT_TOKENS) {
        if (sc->width)
            return 0;
        for (size_t i = 0; i < n; i++)
            if (sc->ids[i] < 0 || sc->ids[i] >= spec->vocab_size)
                return 0;
        q->tokens = malloc(n * sizeof *q->tokens);
        if (!q->tokens)
            goto oom;
        for (size_t i = 0; i < n; i++)
            q->tokens[i] = (int32_t)sc->ids[i];
    } else {
        if (sc->width != (size_t)spec->input_dim)
            return 0;
        q->vectors = sc->vectors; /* taken over */
        sc->vectors = NULL;
    }
    return 1;
oom:
    rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu steps", n);
    return -1;
}

/* What a step body asks for, from the scanner or from the decoded JSON. */
struct step_args {
    rnnd_step_scan *sc; /* scanned inputs, or NULL: INPUTS/TEXT of the JSON body */
    const json_t *inputs, *text;
    int last_only, logits;
    int64_t top_k, if_steps;
};

/* Look the session up and queue the step job. Replies on error. */
static void step_submit(rnnd_req *r, const struct step_args *a)
{
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    const rnnd_entry *e = entry_of(s);
    struct step_req *q = calloc(1, sizeof *q);
    if (!q) {
        rnnd_session_unref(s);
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    q->s = s;
    q->r = r;
    q->logits = a->logits;
    rnnd_req_on_free(r, step_free, q); /* from here on the request owns Q and the ref */
    if (a->top_k) {
        const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
        if (spec->input_kind != RNND_INPUT_TOKENS || e->output_dim != spec->vocab_size) {
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                             "top_k: model %s's output is not a "
                             "distribution over its vocabulary",
                             e->name);
            return;
        }
        q->top_k =
            (size_t)a->top_k < (size_t)e->output_dim ? (size_t)a->top_k : (size_t)e->output_dim;
    }
    size_t n = 0, pre = 0;
    int taken = a->sc ? take_scanned(r, a->sc, e, q) : 0;
    if (taken < 0)
        return;
    if (taken) {
        n = a->sc->n_steps;
    } else if (a->text) {
        /* the fewest steps the text can make are charged before it is encoded */
        size_t least = rnnd_api_least_tokens(r, e, a->text);
        pre = least ? step_bytes(e, least, a->last_only, q->logits, q->top_k) : 0;
        if ((pre && rnnd_api_charge(r, pre)) ||
            rnnd_api_tokens(r, e, a->text, "text", &q->tokens, &n))
            return;
    } else {
        const json_t *inputs = a->inputs;
        if (a->sc) {
            /* scanned, but not right for this model: the JSON path words the error */
            if (rnnd_req_decode(r))
                return;
            inputs = json_object_get(rnnd_req_body(r), "inputs");
        }
        if (parse_inputs(r, inputs, e, q, &n))
            return;
    }
    /* the inputs are bounded by the body; the output rows and the reply are not (a 28 KB
     * body of 4,096 steps asked for a 212 MB reply), so they are charged before they exist */
    size_t bytes = step_bytes(e, n, a->last_only, q->logits, q->top_k);
    if (bytes > pre && rnnd_api_charge(r, bytes - pre))
        return;
    size_t rows = a->last_only ? 1 : n;
    q->out = malloc((e->output_dim ? (size_t)e->output_dim : 1) * rows * sizeof *q->out);
    if (!q->out) {
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu steps", n);
        return;
    }
    rnnd_step_job_init(&q->sj, e->batcher);
    q->sj.job.finish = step_finish;
    q->sj.n_steps = n;
    q->sj.tokens = q->tokens;
    q->sj.vectors = q->vectors;
    q->sj.last_only = a->last_only;
    q->sj.out = q->out;
    q->sj.if_steps = a->if_steps;
    rnnd_req_defer(r);
    int why = rnnd_session_submit(s, &q->sj.job);
    if (why != RNND_SESSION_FOUND) {
        rnnd_api_reply_left(r, why);
        rnnd_req_complete(r);
    }
}

/* The fields of a decoded body into A. Replies on error. */
static int step_fields(rnnd_req *r, json_t *body, struct step_args *a)
{
    static const char *const fields[] = {"inputs", "text",     "outputs", "logits",
                                         "top_k",  "if_steps", NULL};
    if (!body) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the request body is empty: expected "
                         "{\"inputs\": [STEP, ...]}");
        return -1;
    }
    const json_t *text = json_object_get(body, "text");
    if (text && json_object_get(body, "inputs")) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "give either inputs or text, not both");
        return -1;
    }
    if (text && !json_is_string(text)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "text: expected a string, got %s",
                         rnnd_json_type_desc(text));
        return -1;
    }
    const json_t *lg = json_object_get(body, "logits");
    if (lg && !json_is_boolean(lg)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "logits: expected true or false");
        return -1;
    }
    if (int_field(r, body, "top_k", 1, 65536, &a->top_k))
        return -1;
    if (rnnd_api_check_fields(r, body, fields))
        return -1;
    const json_t *o = json_object_get(body, "outputs");
    if (o) {
        const char *os = json_string_value(o);
        if (!os || (strcmp(os, "all") && strcmp(os, "last"))) {
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "outputs: expected \"all\" or \"last\"");
            return -1;
        }
        a->last_only = !strcmp(os, "last");
    }
    if (int_field(r, body, "if_steps", 0, INT64_MAX, &a->if_steps))
        return -1;
    a->text = text;
    a->inputs = json_object_get(body, "inputs");
    a->logits = !json_is_false(lg);
    return 0;
}

/* At most what rnnd_step_scan_parse() allocates for a body of LEN bytes: a number takes at
 * least two bytes with its comma, so at most LEN / 2 + 1 of them, 4 bytes each as floats,
 * 8 as ids (of which at most MAX_STEPS); the array grows by doubling from 1,024. */
static size_t scan_cost(size_t len, size_t max_steps)
{
    size_t n = len / 2 + 1, ids = n < max_steps ? n : max_steps;
    size_t floats = rnnd_sat_mul(n, 2 * sizeof(float));
    size_t idb = rnnd_sat_mul(ids, 2 * sizeof(int64_t));
    return rnnd_sat_add(floats > idb ? floats : idb, 1024 * sizeof(int64_t));
}

int rnnd_api_session_step_text(rnnd_req *r, const char *body, size_t len)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_step_scan sc;
    /* the scanner's arrays are charged before it runs, from the body's length since the
     * model (its input width) is not known yet; a body whose bound does not fit takes the
     * JSON path, whose decoding is metered as it goes */
    size_t cost = scan_cost(len, (size_t)app->cfg->max_steps_per_request);
    if (!len || rnnd_mem_charge(rnnd_req_mem(r), cost, NULL, 0))
        return 1;
    if (rnnd_step_scan_parse(body, len, (long)app->cfg->max_json_depth,
                             (size_t)app->cfg->max_steps_per_request, &sc)) {
        rnnd_mem_uncharge(rnnd_req_mem(r), cost);
        return 1;
    }
    rnnd_api_session_step_scanned(r, &sc);
    return 0;
}

void rnnd_api_session_step(rnnd_req *r)
{
    /* The common body goes through the scanner; anything it declines, and every error, takes
     * the JSON path, so both give the same result (tests/check_step_scan.c). */
    struct step_args a = {.logits = 1, .if_steps = -1};
    size_t len;
    const char *raw = rnnd_req_raw_body(r, &len);
    if (raw && !rnnd_api_session_step_text(r, raw, len))
        return;
    if (rnnd_req_decode(r) || rnnd_api_admit(r))
        return;
    if (step_fields(r, rnnd_req_body(r), &a))
        return;
    step_submit(r, &a);
}

void rnnd_api_session_step_scanned(rnnd_req *r, rnnd_step_scan *sc)
{
    struct step_args a = {.sc = sc,
                          .logits = 1,
                          .last_only = sc->last_only,
                          .if_steps = sc->if_steps};
    if (rnnd_api_admit(r) == 0)
        step_submit(r, &a);
    rnnd_step_scan_clear(sc);
}

/* ---- reset, fork, state: jobs that run inline when they reach the head ------------------- */

enum ctl_kind { CTL_RESET, CTL_FORK, CTL_EXPORT, CTL_IMPORT };

struct ctl_req {
    rnnd_job job; /* first member */
    int kind;
    rnnd_req *r;
    rnnd_session *s;  /* one reference */
    float *state;     /* reset/import: the new state, NULL = zeros */
    uint64_t steps;   /* import: the new step count */
    int64_t if_steps; /* reset: < 0 none */
    int64_t ttl;      /* fork */
};

static void ctl_free(void *arg)
{
    struct ctl_req *c = arg;
    rnnd_session_unref(c->s);
    free(c->state);
    free(c);
}

static int ctl_start(rnnd_job *job)
{
    struct ctl_req *c = (struct ctl_req *)job;
    rnnd_session *s = c->s;
    rnnd_entry *e = entry_of(s); /* a fork takes a reference */
    float *state = rnnd_session_state(s);
    size_t bytes = e->state_floats * sizeof(float);
    rnnd_buf b;
    rnnd_buf_init(&b);
    switch (c->kind) {
    case CTL_RESET:
    case CTL_IMPORT: {
        uint64_t now = rnnd_session_steps(s);
        if (c->if_steps >= 0 && (uint64_t)c->if_steps != now) {
            reply_steps_conflict(c->r, &b, c->if_steps, now, "changed");
            break;
        }
        uint64_t steps = c->kind == CTL_IMPORT ? c->steps : 0;
        rnnd_cluster *cl = rnnd_req_app(c->r)->cluster;
        if (cl) {
            /* the store first: the change is refused whole when Redis cannot take it */
            char err[512];
            float *zeros = c->state ? NULL : calloc(e->state_floats ? e->state_floats : 1, 4);
            int rc = c->state || zeros
                ? rnnd_sync_write_now(cl, s, c->state ? c->state : zeros, steps, err, sizeof err)
                : rnnd_fail(RNND_ERR_NOMEM, err, sizeof err, "out of memory");
            free(zeros);
            if (rc) {
                rnnd_cluster_reply_store(c->r, err);
                break;
            }
        }
        if (c->state)
            memcpy(state, c->state, bytes);
        else
            memset(state, 0, bytes);
        rnnd_session_set_steps(s, steps);
        rnnd_buf_printf(&b, "{\"id\":\"%s\",\"model\":", rnnd_session_id(s));
        rnnd_buf_json_string(&b, e->name);
        rnnd_buf_printf(&b, ",\"steps\":%" PRIu64 "}", steps);
        rnnd_reply(c->r, 200, &b);
        break;
    }
    case CTL_EXPORT:
        rnnd_buf_printf(&b, "{\"id\":\"%s\",\"model\":", rnnd_session_id(s));
        rnnd_buf_json_string(&b, e->name);
        rnnd_buf_printf(&b, ",\"digest\":\"%s\",\"steps\":%" PRIu64 ",\"state\":", e->digest,
                        rnnd_session_steps(s));
        rnnd_state_write(e->model, state, &b);
        rnnd_buf_puts(&b, "}");
        if (b.nonfinite) {
            rnnd_buf_free(&b);
            rnnd_reply_error(c->r, RNND_E_NUMERIC_ERROR, "the session's state holds NaN or Inf");
        } else {
            rnnd_reply(c->r, 200, &b);
        }
        break;
    case CTL_FORK: {
        const rnnd_gen_params *pd = rnnd_session_ext(s);
        rnnd_gen_params *defaults = pd ? malloc(sizeof *defaults) : NULL;
        if (pd && !defaults) {
            rnnd_reply_error(c->r, RNND_E_OUT_OF_MEMORY, "out of memory");
            break;
        }
        if (pd)
            *defaults = *pd;
        /* without a ttl_s of its own a fork keeps its parent's, as it keeps the defaults */
        double ttl = c->ttl > 0 ? (double)c->ttl : rnnd_session_ttl(s);
        create_and_reply(c->r, e, state, rnnd_session_steps(s), ttl, rnnd_session_id(s), defaults);
        break;
    }
    }
    return RNND_JOB_DONE;
}

static void ctl_finish(rnnd_job *job) { rnnd_req_complete(((struct ctl_req *)job)->r); }

/* Look the session up, check its model matches what was parsed, and queue C. */
static void ctl_submit(rnnd_req *r, struct ctl_req *c)
{
    c->job.start = ctl_start;
    c->job.finish = ctl_finish;
    c->r = r;
    rnnd_req_on_free(r, ctl_free, c);
    rnnd_req_defer(r);
    int why = rnnd_session_submit(c->s, &c->job);
    if (why != RNND_SESSION_FOUND) {
        rnnd_api_reply_left(r, why);
        rnnd_req_complete(r);
    }
}

static struct ctl_req *ctl_new(rnnd_req *r, int kind, rnnd_session *s)
{
    struct ctl_req *c = calloc(1, sizeof *c);
    if (!c) {
        rnnd_session_unref(s);
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    c->kind = kind;
    c->s = s;
    c->if_steps = -1;
    return c;
}

void rnnd_api_session_reset(rnnd_req *r)
{
    static const char *const fields[] = {"state", "digest", "if_steps", NULL};
    json_t *body = rnnd_req_body(r);
    if (body && rnnd_api_check_fields(r, body, fields))
        return;
    int64_t if_steps = -1;
    if (body && int_field(r, body, "if_steps", 0, INT64_MAX, &if_steps))
        return;
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    float *state = NULL;
    if (body && state_field(r, body, entry_of(s), &state)) {
        rnnd_session_unref(s);
        return;
    }
    struct ctl_req *c = ctl_new(r, CTL_RESET, s);
    if (!c) {
        free(state);
        return;
    }
    c->state = state;
    c->if_steps = if_steps;
    ctl_submit(r, c);
}

void rnnd_api_session_fork(rnnd_req *r)
{
    static const char *const fields[] = {"ttl_s", NULL};
    rnnd_app *app = rnnd_req_app(r);
    json_t *body = rnnd_req_body(r);
    if (body && rnnd_api_check_fields(r, body, fields))
        return;
    int64_t ttl = 0; /* none given: the parent's (ctl_start) */
    if (body && ttl_field(r, body, app->cfg->session_ttl_max_s, &ttl))
        return;
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    struct ctl_req *c = ctl_new(r, CTL_FORK, s);
    if (!c)
        return;
    c->ttl = ttl;
    ctl_submit(r, c);
}

/* The JSON around one layer's state ({"h":[..],"c":[..]} and commas) and around the whole
 * export (id, model name, digest, keys): generous bounds. */
#define STATE_LAYER_TEXT 32
#define EXPORT_FRAME 1024

void rnnd_api_state_get(rnnd_req *r)
{
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    /* the state as text is ~4x its floats: charged before the job writes it */
    const rnnd_entry *e = entry_of(s);
    size_t layers = (size_t)rnnd_model_get_spec(e->model)->n_layers + 1;
    size_t text = rnnd_sat_add(rnnd_sat_mul(e->state_floats, RNND_FLOAT_TEXT),
                               rnnd_sat_add(rnnd_sat_mul(layers, STATE_LAYER_TEXT),
                                            EXPORT_FRAME + strlen(e->name)));
    if (rnnd_api_charge(r, text)) {
        rnnd_session_unref(s);
        return;
    }
    struct ctl_req *c = ctl_new(r, CTL_EXPORT, s);
    if (c)
        ctl_submit(r, c);
}

void rnnd_api_state_put(rnnd_req *r)
{
    /* "id" is accepted (and ignored) so an exported document can be PUT back as it is */
    static const char *const fields[] = {"state", "digest",   "model", "steps",
                                         "id",    "if_steps", NULL};
    json_t *body = rnnd_req_body(r);
    if (!body) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the request body is empty: expected "
                         "{\"digest\": ..., \"state\": STATE} as GET .../state gives");
        return;
    }
    if (rnnd_api_check_fields(r, body, fields))
        return;
    const json_t *m = json_object_get(body, "model");
    if (m && !json_is_string(m)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "model: expected a string, got %s",
                         rnnd_json_type_desc(m));
        return;
    }
    const json_t *id = json_object_get(body, "id");
    if (id && !json_is_string(id)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "id: expected a string, got %s",
                         rnnd_json_type_desc(id));
        return;
    }
    if (!json_object_get(body, "state")) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "state: missing");
        return;
    }
    int64_t steps = 0, if_steps = -1;
    if (int_field(r, body, "steps", 0, INT64_MAX, &steps) ||
        int_field(r, body, "if_steps", 0, INT64_MAX, &if_steps))
        return;
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    float *state;
    if (state_field(r, body, entry_of(s), &state)) {
        rnnd_session_unref(s);
        return;
    }
    struct ctl_req *c = ctl_new(r, CTL_IMPORT, s);
    if (!c) {
        free(state);
        return;
    }
    c->state = state;
    c->steps = (uint64_t)steps;
    c->if_steps = if_steps;
    ctl_submit(r, c);
}
