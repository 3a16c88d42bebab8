/* Triton's generate extension (docs/v2.md): POST /v2/models/{m}[/versions/{v}]/generate and
 * .../generate_stream. The text_input is encoded with the model's tokenizer and generated
 * from on a temporary session by the generation engine (generate.h), so the tokens are the
 * ones POST /v1/models/{m}/generate gives for the same prompt, sampling fields and seed. The
 * answer is one {"model_name", "model_version", "text_output"} object, or with
 * generate_stream one such server-sent event per token. */
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

/* {"model_name":..,"model_version":"V","text_output": — the caller goes on. */
static void head(rnnd_buf *b, const rnnd_entry *e)
{
    rnnd_buf_puts(b, "{\"model_name\":");
    rnnd_buf_json_string(b, e->name);
    rnnd_buf_printf(b, ",\"model_version\":\"%d\",\"text_output\":", e->version);
}

static void token_event(const rnnd_gen_http *q, rnnd_buf *b, int32_t id, const char *text,
                        size_t len, size_t index, uint64_t step)
{
    (void)id;
    (void)index;
    (void)step;
    head(b, q->e);
    rnnd_buf_json_stringn(b, text, len);
    rnnd_buf_puts(b, "}");
}

/* {"model_name", "model_version", "text_output", "finish_reason"} */
static void end_object(rnnd_buf *b, const rnnd_gen_http *q, const rnnd_gen_result *res,
                       int streamed)
{
    head(b, q->e);
    if (streamed)
        rnnd_buf_puts(b, "\"\""); /* the text went out token by token */
    else
        rnnd_buf_json_stringn(b, res->text, res->text_len);
    rnnd_buf_printf(b, ",\"finish_reason\":\"%s\"}", finish_names[res->finish]);
}

static void reply_done(const rnnd_gen_http *q, rnnd_req *r, const rnnd_gen_result *res)
{
    if (res->finish == RNND_GEN_ERROR) {
        rnnd_v2_error(r, res->code, "%s", res->message);
        return;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    end_object(&b, q, res, 0);
    rnnd_reply(r, 200, &b);
}

static void stream_done(const rnnd_gen_http *q, rnnd_stream *st, const rnnd_gen_result *res)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    if (res->finish == RNND_GEN_ERROR) { /* after the 200: Triton's error object */
        rnnd_buf_puts(&b, "{\"error\":");
        rnnd_buf_json_string(&b, res->message);
        rnnd_buf_puts(&b, "}");
    } else {
        end_object(&b, q, res, 1);
    }
    rnnd_sse_event(st, NULL, &b);
    rnnd_buf_free(&b);
}

static void refuse(rnnd_req *r, int why, const char *err)
{
    if (why < 0)
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "%s", err);
    else
        rnnd_v2_error(r, RNND_E_UNAVAILABLE, "the temporary session was evicted before it started");
}

static const rnnd_gen_protocol v2_protocol = {token_event, reply_done, stream_done, refuse};

/* The sampling fields, at the top level and then in "parameters" (which wins). Fields the
 * engine does not know are ignored, as Triton leaves them to the model. Replies on error. */
static int parse_sampling(rnnd_req *r, const json_t *body, rnnd_gen_http *q)
{
    const json_t *params = json_object_get(body, "parameters");
    if (params && !json_is_object(params)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "parameters: expected an object, got %s",
                      rnnd_json_type_desc(params));
        return -1;
    }
    const json_t *objs[2] = {body, params};
    char err[256];
    rnnd_gen_params_default(&q->p);
    for (int i = 0; i < 2; i++) {
        if (objs[i] &&
            rnnd_gen_params_parse(objs[i], q->app->cfg->max_generate_tokens, &q->p, err,
                                  sizeof err)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "%s%s", i ? "parameters." : "", err);
            return -1;
        }
    }
    return 0;
}

/* text_input as token ids in a new array. Replies on error. */
static int prompt_ids(rnnd_req *r, const json_t *body, const rnnd_entry *e, int32_t **ids,
                      size_t *n)
{
    const json_t *v = json_object_get(body, "text_input");
    if (!json_is_string(v)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "text_input: expected a string, got %s",
                      v ? rnnd_json_type_desc(v) : "nothing");
        return -1;
    }
    size_t len = json_string_length(v);
    size_t max = (size_t)rnnd_req_app(r)->cfg->max_steps_per_request;
    size_t cap = len < max ? len : max;
    *ids = malloc((cap ? cap : 1) * sizeof **ids);
    if (!*ids) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    char err[256];
    int rc = rnnd_tokenizer_encode(e->tokenizer, json_string_value(v), len, *ids, cap, n, err,
                                   sizeof err);
    if (rc || !*n) {
        if (rc == RNND_ERR_LIMIT)
            rnnd_v2_error(r, RNND_E_LIMIT_EXCEEDED,
                          "text_input: more than max_steps_per_request (%zu) tokens", max);
        else
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "text_input: %s",
                          rc ? err
                             : "empty; give at least one "
                               "character to continue from");
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

/* Can E generate text? Replies 400 when not. */
static int text_capable(rnnd_req *r, const rnnd_entry *e)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    const char *why = NULL;
    if (spec->input_kind != RNND_INPUT_TOKENS || e->output_dim != spec->vocab_size)
        why = "it needs token input and an output over its vocabulary";
    else if (!e->stateful)
        why = "it has reverse or bidirectional layers";
    else if (!e->tokenizer)
        why = "it has no tokenizer to read text_input";
    if (why)
        rnnd_v2_error(r, RNND_E_UNSUPPORTED, "model '%s' cannot generate: %s", e->name, why);
    return why ? -1 : 0;
}

/* A streamed token's event besides its text and the model name:
 * data: {"model_name":"","model_version":"N","text_output":""} */
#define EVENT_FRAME 96

static void generate(rnnd_req *r, int stream)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_entry *e = rnnd_v2_model(r);
    if (!e)
        return;
    json_t *body = rnnd_req_body(r);
    if (!body) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "the request body is empty: expected {\"text_input\": TEXT}");
        return;
    }
    if (text_capable(r, e))
        return;
    rnnd_gen_http *q = rnnd_gen_http_new(&v2_protocol, app, e);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!q) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    if (parse_sampling(r, body, q) || prompt_ids(r, body, e, &ids, &n)) {
        rnnd_gen_http_free(q);
        return;
    }
    /* the engine's buffers and the reply, charged before they are made (a stream's events
     * stay charged until they are sent) */
    size_t token_reply = stream ? EVENT_FRAME + strlen(e->name) : 0;
    if (rnnd_v2_charge(r, rnnd_gen_bytes(e, n, q->p.max_tokens, token_reply))) {
        free(ids);
        rnnd_gen_http_free(q);
        return;
    }
    char err[256];
    rnnd_session *s;
    int rc = rnnd_api_session_new(r, e, &s, err, sizeof err);
    if (rc) {
        rnnd_v2_error(r, rc == RNND_ERR_LIMIT ? RNND_E_OVERLOADED : RNND_E_INTERNAL, "%s", err);
        free(ids);
        rnnd_gen_http_free(q);
        return;
    }
    rnnd_gen_http_start(q, r, s, 1, stream, ids, n);
    free(ids);
    rnnd_session_unref(s);
}

void rnnd_api_v2_generate(rnnd_req *r)
{
    if (rnnd_api_admit(r))
        return;
    generate(r, 0);
}

void rnnd_api_v2_generate_stream(rnnd_req *r)
{
    if (rnnd_api_admit(r))
        return;
    generate(r, 1);
}
