/* POST /v1/sessions/{id}/generate and POST /v1/models/{model}/generate: validate, start the
 * generation engine (generate.h), and deliver its tokens either as one JSON reply or as
 * server-sent events (sse.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "gen_http.h"
#include "generate.h"
#include "sse.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "rnnd/tokenizer.h"

static const char *const finish_names[] = {"length", "stop", "cancelled", "error"};

/* ---- validation -------------------------------------------------------------------------- */

/* Can E's model generate? Replies 409 when not. */
static int gen_capable(rnnd_req *r, const rnnd_entry *e)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    if (spec->input_kind != RNND_INPUT_TOKENS || e->output_dim != spec->vocab_size) {
        rnnd_reply_error(r, RNND_E_UNSUPPORTED,
                         "model %s cannot generate: it needs token input and "
                         "an output over its vocabulary (it has %s input and %d outputs)",
                         e->name, spec->input_kind == RNND_INPUT_TOKENS ? "token" : "vector",
                         e->output_dim);
        return -1;
    }
    if (!e->stateful) {
        rnnd_reply_error(r, RNND_E_UNSUPPORTED,
                         "model %s has reverse or bidirectional layers, so "
                         "it cannot generate",
                         e->name);
        return -1;
    }
    return 0;
}

/* The sampling fields of V over *P (holding the defaults). Replies on error. */
static int parse_params(rnnd_req *r, const rnnd_entry *e, const json_t *v, rnnd_gen_params *p)
{
    char err[256];
    int rc =
        rnnd_gen_params_parse(v, rnnd_req_app(r)->cfg->max_generate_tokens, p, err, sizeof err);
    if (rc) {
        rnnd_reply_error(r, rc == RNND_ERR_LIMIT ? RNND_E_LIMIT_EXCEEDED : RNND_E_INVALID_REQUEST,
                         "%s", err);
        return -1;
    }
    if (p->n_stop && !e->tokenizer) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "stop: model %s has no tokenizer, so its output "
                         "has no text to match",
                         e->name);
        return -1;
    }
    return 0;
}

int rnnd_api_gen_defaults(rnnd_req *r, const rnnd_entry *e, json_t *v, rnnd_gen_params **out)
{
    static const char *const fields[] = {"max_tokens", "temperature", "top_k", "top_p",
                                         "seed",       "stop",        NULL};
    *out = NULL;
    if (!v)
        return 0;
    if (!json_is_object(v)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "generate: expected an object of sampling "
                         "defaults, got %s",
                         rnnd_json_type_desc(v));
        return -1;
    }
    if (gen_capable(r, e) || rnnd_api_check_fields(r, v, fields))
        return -1;
    rnnd_gen_params *p = malloc(sizeof *p);
    if (!p) {
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    rnnd_gen_params_default(p);
    if (parse_params(r, e, v, p)) {
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

size_t rnnd_api_least_tokens(rnnd_req *r, const rnnd_entry *e, const json_t *v)
{
    if (!json_is_string(v) || !e->tokenizer)
        return 0;
    size_t least = rnnd_tokenizer_min_ids(e->tokenizer, json_string_length(v));
    return least <= (size_t)rnnd_req_app(r)->cfg->max_steps_per_request ? least : 0;
}

int rnnd_api_tokens(rnnd_req *r, const rnnd_entry *e, const json_t *v, const char *name,
                    int32_t **ids, size_t *n)
{
    rnnd_app *app = rnnd_req_app(r);
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    size_t max = (size_t)app->cfg->max_steps_per_request;
    *ids = NULL;
    *n = 0;
    if (json_is_string(v)) {
        if (!e->tokenizer) {
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                             "%s: model %s has no tokenizer: give token "
                             "ids",
                             name, e->name);
            return -1;
        }
        size_t len = json_string_length(v);
        /* room for the ids the limit allows, not one per byte of a text that is refused */
        int32_t *t = malloc((len ? (len < max ? len : max) : 1) * sizeof *t);
        if (!t) {
            rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
            return -1;
        }
        char err[256];
        int rc = rnnd_tokenizer_encode(e->tokenizer, json_string_value(v), len, t,
                                       len < max ? len : max, n, err, sizeof err);
        if (rc) {
            free(t);
            if (rc == RNND_ERR_LIMIT)
                rnnd_reply_error(r, RNND_E_LIMIT_EXCEEDED,
                                 "%s: more than max_steps_per_request "
                                 "(%zu) tokens",
                                 name, max);
            else
                rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s: %s", name, err);
            return -1;
        }
        *ids = t;
    } else if (json_is_array(v)) {
        size_t k = json_array_size(v);
        if (k > max) {
            rnnd_reply_error(r, RNND_E_LIMIT_EXCEEDED,
                             "%s: %zu tokens, more than "
                             "max_steps_per_request (%zu)",
                             name, k, max);
            return -1;
        }
        int32_t *t = malloc((k ? k : 1) * sizeof *t);
        if (!t) {
            rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < k; i++) {
            char why[128];
            if (rnnd_json_token(json_array_get(v, i), spec->vocab_size, &t[i], why, sizeof why)) {
                free(t);
                rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "%s[%zu]: %s", name, i, why);
                return -1;
            }
        }
        *ids = t;
        *n = k;
    } else {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "%s: expected text (a string) or a list of token "
                         "ids, got %s",
                         name, v ? rnnd_json_type_desc(v) : "nothing");
        return -1;
    }
    if (!*n) {
        free(*ids);
        *ids = NULL;
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "%s: empty; give at least one token (the "
                         "session keeps no output to continue from)",
                         name);
        return -1;
    }
    return 0;
}

/* ---- delivery ---------------------------------------------------------------------------- */

static void usage_json(rnnd_buf *b, const rnnd_gen_result *res)
{
    rnnd_buf_printf(b,
                    "\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%zu,"
                    "\"total_tokens\":%zu}",
                    res->prompt_tokens, res->completion_tokens,
                    res->prompt_tokens + res->completion_tokens);
}

/* The fields every end carries: finish_reason, stop, usage, steps (sessions only), seed. */
static void end_fields(rnnd_buf *b, const rnnd_gen_http *q, const rnnd_gen_result *res)
{
    rnnd_buf_printf(b, "\"finish_reason\":\"%s\"", finish_names[res->finish]);
    if (res->stop_index >= 0) {
        rnnd_buf_puts(b, ",\"stop\":");
        rnnd_buf_json_string(b, q->p.stop[res->stop_index]);
    }
    rnnd_buf_puts(b, ",");
    usage_json(b, res);
    if (!q->tmp)
        rnnd_buf_printf(b, ",\"steps\":%" PRIu64, res->steps);
    rnnd_buf_printf(b, ",\"seed\":%" PRIu64, res->seed);
}

static void token_event(const rnnd_gen_http *q, rnnd_buf *b, int32_t id, const char *text,
                        size_t len, size_t index, uint64_t step)
{
    rnnd_buf_printf(b, "{\"token\":%" PRId32 ",\"text\":", id);
    rnnd_buf_json_stringn(b, text, len);
    rnnd_buf_printf(b, ",\"index\":%zu", index);
    if (!q->tmp)
        rnnd_buf_printf(b, ",\"step\":%" PRIu64, step);
    rnnd_buf_puts(b, "}");
}

static void reply_done(const rnnd_gen_http *q, rnnd_req *r, const rnnd_gen_result *res)
{
    if (res->finish == RNND_GEN_ERROR) {
        if (q->tmp || q->moved) /* moved: this copy's count is no session's */
            rnnd_reply_error(r, res->code, "%s", res->message);
        else
            rnnd_reply_error(r, res->code, "%s (the session has %" PRIu64 " steps)", res->message,
                             res->steps);
        return;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"model\":");
    rnnd_buf_json_string(&b, q->e->name);
    rnnd_buf_puts(&b, ",\"text\":");
    rnnd_buf_json_stringn(&b, res->text, res->text_len);
    rnnd_buf_puts(&b, ",\"tokens\":[");
    for (size_t i = 0; i < res->completion_tokens; i++)
        rnnd_buf_printf(&b, i ? ",%" PRId32 : "%" PRId32, res->tokens[i]);
    rnnd_buf_puts(&b, "],");
    end_fields(&b, q, res);
    rnnd_buf_puts(&b, "}");
    rnnd_reply(r, 200, &b);
}

static void stream_done(const rnnd_gen_http *q, rnnd_stream *st, const rnnd_gen_result *res)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    if (res->finish == RNND_GEN_ERROR) {
        rnnd_buf_puts(&b, "{\"error\":{\"code\":");
        rnnd_buf_json_string(&b, rnnd_errcode_name(res->code));
        rnnd_buf_puts(&b, ",\"message\":");
        rnnd_buf_json_string(&b, res->message);
        rnnd_buf_puts(&b, "}");
        if (!q->tmp && !q->moved)
            rnnd_buf_printf(&b, ",\"steps\":%" PRIu64, res->steps);
        rnnd_buf_puts(&b, "}");
        rnnd_sse_event(st, "error", &b);
    } else {
        rnnd_buf_puts(&b, "{");
        end_fields(&b, q, res);
        rnnd_buf_puts(&b, "}");
        rnnd_sse_event(st, NULL, &b);
    }
    rnnd_buf_free(&b);
    rnnd_sse_done(st);
}

static void refuse(rnnd_req *r, int why, const char *err)
{
    if (why < 0)
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "%s", err);
    else
        rnnd_api_reply_left(r, why);
}

static const rnnd_gen_protocol v1_protocol = {token_event, reply_done, stream_done, refuse};

/* ---- the handlers ------------------------------------------------------------------------ */

/* A token's share of the reply besides its text: an SSE event's keys and numbers
 * (data: {"token":N,"text":"","index":N,"step":N}), or its id in the JSON "tokens" list. */
#define SSE_TOKEN_FRAME 96
#define JSON_TOKEN_FRAME 12

/* Common to both endpoints: parse BODY, start the generation on S (our reference is kept
 * while the engine runs; TMP says S is a temporary session to remove at the end), reply. */
static void generate(rnnd_req *r, rnnd_session *s, int tmp)
{
    static const char *const fields[] = {"prompt", "max_tokens", "temperature", "top_k", "top_p",
                                         "seed",   "stop",       "stream",      NULL};
    rnnd_app *app = rnnd_req_app(r);
    const rnnd_entry *e = rnnd_session_model(s);
    json_t *body = rnnd_req_body(r);
    int32_t *ids = NULL;
    size_t n = 0;
    rnnd_gen_http *q = rnnd_gen_http_new(&v1_protocol, app, e);
    if (!q) {
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    const rnnd_gen_params *defaults = rnnd_session_ext(s);
    if (defaults)
        q->p = *defaults;
    else
        rnnd_gen_params_default(&q->p);
    const json_t *prompt = json_object_get(body, "prompt");
    if (rnnd_api_check_fields(r, body, fields) || parse_params(r, e, body, &q->p))
        goto fail;
    const json_t *sv = json_object_get(body, "stream");
    if (sv && !json_is_boolean(sv)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "stream: expected true or false");
        goto fail;
    }
    /* the engine's buffers and the reply (a stream buffers the events a client has not read)
     * are charged before the engine makes them, those of the fewest tokens the prompt can
     * make before it is encoded; the charge goes with the request, after the last byte is
     * sent */
    size_t frame = json_is_true(sv) ? SSE_TOKEN_FRAME : JSON_TOKEN_FRAME;
    size_t least = rnnd_api_least_tokens(r, e, prompt);
    size_t pre = least ? rnnd_gen_bytes(e, least, q->p.max_tokens, frame) : 0;
    if ((pre && rnnd_api_charge(r, pre)) || rnnd_api_tokens(r, e, prompt, "prompt", &ids, &n))
        goto fail;
    size_t full = rnnd_gen_bytes(e, n, q->p.max_tokens, frame);
    if (full > pre && rnnd_api_charge(r, full - pre))
        goto fail;
    rnnd_gen_http_start(q, r, s, tmp, json_is_true(sv), ids, n);
    free(ids);
    rnnd_session_unref(s);
    return;
fail:
    free(ids);
    if (tmp)
        rnnd_session_remove(app->sessions, rnnd_session_id(s));
    rnnd_gen_http_free(q);
    rnnd_session_unref(s);
}

/* Admitted (rnnd_api_admit) and with a body, or replied to: -1. */
static int admit_with_body(rnnd_req *r)
{
    if (rnnd_api_admit(r))
        return -1;
    if (!rnnd_req_body(r)) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the request body is empty: expected "
                         "{\"prompt\": TEXT or [ids], ...}");
        return -1;
    }
    return 0;
}

void rnnd_api_session_generate(rnnd_req *r)
{
    if (admit_with_body(r))
        return;
    rnnd_session *s = rnnd_api_session_lookup(r);
    if (!s)
        return;
    if (gen_capable(r, rnnd_session_model(s))) {
        rnnd_session_unref(s);
        return;
    }
    generate(r, s, 0);
}

void rnnd_api_model_generate(rnnd_req *r)
{
    if (admit_with_body(r))
        return;
    rnnd_entry *e = rnnd_api_model(r, rnnd_req_param(r, 0));
    if (!e)
        return;
    if (gen_capable(r, e))
        return;
    rnnd_session *s;
    char err[256];
    int rc = rnnd_api_session_new(r, e, &s, err, sizeof err);
    if (rc) {
        rnnd_reply_error(r, rc == RNND_ERR_LIMIT ? RNND_E_OVERLOADED : RNND_E_UNAVAILABLE, "%s",
                         err);
        return;
    }
    generate(r, s, 1);
}
