/* The KServe v2 / Triton REST protocol (docs/v2.md): health, server and model metadata, and
 * infer, mapped onto the v1 machinery so both protocols give bitwise the same numbers.
 *
 * Stateless infer builds its request from the decoded arrays (rnnd_infer_req_new) and runs
 * it through the model's batcher, exactly like POST /v1/models/{m}/infer. Infer with Triton's
 * sequence parameters runs a step job on the session that v2_seq.h maps the sequence to,
 * exactly like POST /v1/sessions/{id}/step. The errors answered here are Triton's
 * {"error": "..."} with Triton's status codes (the HTTP layer's own refusals, before a
 * handler runs, keep the v1 form). */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rnnd/fmtfloat.h"
#include "rnnd/infer.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "v2_seq.h"

#define V2_INPUT RNND_V2_INPUT
#define V2_OUTPUT RNND_V2_OUTPUT

/* ---- lookups (shared with api_v2_generate.c through api.h) ------------------------------ */

int rnnd_v2_charge(rnnd_req *r, size_t bytes)
{
    char err[256];
    int rc = rnnd_mem_charge(rnnd_req_mem(r), bytes, err, sizeof err);
    if (rc)
        rnnd_v2_error(r, rnnd_errcode_of(rc), "%s", err);
    return rc ? -1 : 0;
}

rnnd_entry *rnnd_v2_model(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    const char *name = rnnd_req_param(r, 0), *version = rnnd_req_param(r, 1);
    rnnd_entry *e = rnnd_catalog_get(&app->models, name);
    if (!e) {
        rnnd_v2_error(r, RNND_E_NOT_FOUND, "Request for unknown model: '%.64s' is not found", name);
        return NULL;
    }
    rnnd_req_hold(r, rnnd_entry_unref_v, e); /* a reload may retire it meanwhile */
    /* "" is the route without /versions/{v}; a model's version counts its reloads (1 at
     * start) and only the current one is served */
    char cur[16];
    snprintf(cur, sizeof cur, "%d", e->version);
    if (*version && strcmp(version, cur)) {
        rnnd_v2_error(r, RNND_E_NOT_FOUND,
                      "Request for unknown model: '%s' version %.32s is not found "
                      "(the version served is %s)",
                      e->name, version, cur);
        return NULL;
    }
    return e;
}

/* ---- health and metadata ----------------------------------------------------------------- */

void rnnd_api_v2_server_meta(rnnd_req *r)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"name\":\"rnnd\",\"version\":");
    rnnd_buf_json_string(&b, PACKAGE_VERSION);
    rnnd_buf_puts(&b, ",\"extensions\":[" RNND_V2_EXTENSIONS "]}");
    rnnd_reply(r, 200, &b);
}

/* The protocol's health answers are the status alone: 200 true, 400 false, empty body. */
void rnnd_api_v2_live(rnnd_req *r) { rnnd_reply_empty(r, 200); }

void rnnd_api_v2_ready(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    int ready = !atomic_load(&app->draining) && rnnd_catalog_count(&app->models);
    rnnd_reply_empty(r, ready ? 200 : 400);
}

void rnnd_api_v2_model_ready(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    if (!rnnd_v2_model(r))
        return;
    if (atomic_load(&app->draining)) /* Triton answers "not ready" with 400, not 503 */
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "Model version not ready: the server is shutting down");
    else
        rnnd_reply_empty(r, 200);
}

void rnnd_api_v2_model_meta(rnnd_req *r)
{
    const rnnd_entry *e = rnnd_v2_model(r);
    if (!e)
        return;
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"name\":");
    rnnd_buf_json_string(&b, e->name);
    rnnd_buf_printf(&b,
                    ",\"versions\":[\"%d\"],\"platform\":\"rnnd\",\"inputs\":[{\"name\":\"" V2_INPUT
                    "\",",
                    e->version);
    if (spec->input_kind == RNND_INPUT_TOKENS)
        rnnd_buf_puts(&b, "\"datatype\":\"INT32\",\"shape\":[-1,-1]}");
    else
        rnnd_buf_printf(&b, "\"datatype\":\"FP32\",\"shape\":[-1,-1,%d]}", spec->input_dim);
    /* a text model's BYTES input under a name of its own: one tensor has one datatype */
    if (e->tokenizer)
        rnnd_buf_puts(&b, ",{\"name\":\"" RNND_V2_TEXT "\",\"datatype\":\"BYTES\",\"shape\":[-1]}");
    /* stateless infer of a pooled model: one row per sequence, no step axis */
    rnnd_buf_printf(&b,
                    "],\"outputs\":[{\"name\":\"" V2_OUTPUT "\",\"datatype\":\"FP32\","
                    "\"shape\":[-1,%s%d]}]",
                    spec->pool != RNND_POOL_NONE ? "" : "-1,", e->output_dim);
    /* Triton says it in the configuration alone (sequence_batching); metadata has room for
     * parameters, and a client should not need a second request to know */
    rnnd_buf_printf(&b, ",\"parameters\":{\"sequence\":%s}}", e->stateful ? "true" : "false");
    rnnd_reply(r, 200, &b);
}

/* ---- the infer request ------------------------------------------------------------------- */

/* An infer request checked and flattened: B sequences of T steps each. */
struct v2_infer {
    rnnd_entry *e;     /* held by the request (rnnd_v2_model) */
    const char *id;    /* the request's "id" (in the body), or NULL */
    const char *iname; /* the input's name: INPUT, or TEXT for BYTES */
    int batched;       /* the shape had a batch dimension: echo it */
    size_t B, T;
    int32_t *tokens; /* B*T ids, range-checked (token models) */
    float *vectors;  /* B*T*D (vector models) */
    const char *bin; /* the body's bytes after the JSON header (binary tensor data) */
    size_t bin_len;
    int bin_out; /* OUTPUT asked for as binary data */
    int in_seq;  /* Triton sequence parameters given */
    int seq_start, seq_end;
    rnnd_v2_seq_key key;
};

static void v2_infer_clear(struct v2_infer *in)
{
    free(in->tokens);
    free(in->vectors);
    in->tokens = NULL;
    in->vectors = NULL;
}

/* Count the scalars of DATA (a list, flat or nested) into *N; collect them into OUT when
 * not NULL. Non-lists are scalars. */
static void leaves(const json_t *data, const json_t **out, size_t *n)
{
    if (!json_is_array(data)) {
        if (out)
            out[*n] = data;
        (*n)++;
        return;
    }
    for (size_t i = 0; i < json_array_size(data); i++)
        leaves(json_array_get(data, i), out, n);
}

/* The optional "parameters" object of the request: Triton's sequence extension. Replies on
 * error. Other parameters (priority, timeout, binary_data_output, custom ones) are ignored,
 * as Triton ignores those a model does not use. */
static int parse_sequence(rnnd_req *r, const json_t *body, struct v2_infer *in)
{
    const json_t *params = json_object_get(body, "parameters");
    if (!params)
        return 0;
    if (!json_is_object(params)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "parameters: expected an object, got %s",
                      rnnd_json_type_desc(params));
        return -1;
    }
    const json_t *id = json_object_get(params, "sequence_id");
    const json_t *st = json_object_get(params, "sequence_start");
    const json_t *en = json_object_get(params, "sequence_end");
    if ((st && !json_is_boolean(st)) || (en && !json_is_boolean(en))) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "%s: expected true or false",
                      st && !json_is_boolean(st) ? "sequence_start" : "sequence_end");
        return -1;
    }
    in->seq_start = st && json_is_true(st);
    in->seq_end = en && json_is_true(en);
    memset(&in->key, 0, sizeof in->key);
    snprintf(in->key.model, sizeof in->key.model, "%s", in->e->name);
    in->key.owner = rnnd_req_owner(r); /* each API key has its own sequence ids */
    if (json_is_integer(id)) {
        if (json_integer_value(id) < 0) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "sequence_id: expected an unsigned integer or a string, "
                          "got %" JSON_INTEGER_FORMAT,
                          json_integer_value(id));
            return -1;
        }
        in->key.num = (uint64_t)json_integer_value(id);
        in->in_seq = in->key.num != 0;
    } else if (json_is_string(id)) {
        size_t len = json_string_length(id);
        if (len > RNND_V2_SEQ_STR_MAX || strlen(json_string_value(id)) != len) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "sequence_id: a string id must be at most %d bytes, "
                          "without NUL",
                          RNND_V2_SEQ_STR_MAX);
            return -1;
        }
        in->key.is_str = 1;
        memcpy(in->key.str, json_string_value(id), len + 1);
        in->in_seq = len != 0;
    } else if (id) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "sequence_id: expected an unsigned integer or a string, got %s",
                      rnnd_json_type_desc(id));
        return -1;
    }
    /* 0 and "" mean "not part of a sequence" (Triton's sequence extension) */
    if (!in->in_seq && (in->seq_start || in->seq_end)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "sequence_start and sequence_end need a non-zero or non-empty "
                      "sequence_id");
        return -1;
    }
    if (in->in_seq && !in->e->stateful) {
        rnnd_v2_error(r, RNND_E_UNSUPPORTED,
                      "model '%s' has reverse or bidirectional layers, so it cannot "
                      "keep a sequence's state: send whole sequences without sequence_id",
                      in->e->name);
        return -1;
    }
    return 0;
}

/* "outputs": only OUTPUT exists. Output parameters (binary_data) are ignored: the answer is
 * always JSON, which every client reads. */
static int parse_outputs(rnnd_req *r, const json_t *body, struct v2_infer *in)
{
    const rnnd_entry *e = in->e;
    const json_t *outs = json_object_get(body, "outputs");
    if (!outs)
        return 0;
    if (!json_is_array(outs)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "outputs: expected a list, got %s",
                      rnnd_json_type_desc(outs));
        return -1;
    }
    for (size_t i = 0; i < json_array_size(outs); i++) {
        const json_t *o = json_array_get(outs, i);
        const json_t *name = json_object_get(o, "name");
        if (!json_is_object(o) || !json_is_string(name)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "outputs[%zu]: expected {\"name\": \"" V2_OUTPUT "\"}", i);
            return -1;
        }
        if (strcmp(json_string_value(name), V2_OUTPUT)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "unexpected inference output '%.64s' for model '%s'",
                          json_string_value(name), e->name);
            return -1;
        }
        if (i) { /* the only output is OUTPUT: a second entry names it again (Triton: 400) */
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "outputs[%zu]: output '" V2_OUTPUT "' is requested twice (outputs[0] "
                          "and outputs[%zu]): name each output once",
                          i, i);
            return -1;
        }
        const json_t *op = json_object_get(o, "parameters");
        const json_t *bd = json_is_object(op) ? json_object_get(op, "binary_data") : NULL;
        if (bd && !json_is_boolean(bd)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "outputs[%zu]: binary_data: expected true or false, got %s", i,
                          rnnd_json_type_desc(bd));
            return -1;
        }
        in->bin_out = bd && json_is_true(bd);
        if (json_is_object(op) && json_object_get(op, "classification")) {
            rnnd_v2_error(r, RNND_E_UNSUPPORTED,
                          "outputs[%zu]: the classification extension is not "
                          "supported",
                          i);
            return -1;
        }
    }
    return 0;
}

/* The shape: [B, T] or [T] (tokens), [B, T, D] or [T, D] (vectors). Replies on error. */
static int parse_shape(rnnd_req *r, const json_t *shape, const char *dtype, struct v2_infer *in,
                       size_t *count)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(in->e->model);
    int tokens = spec->input_kind == RNND_INPUT_TOKENS;
    size_t rank = json_array_size(shape), want = tokens ? 2 : 3;
    const char *form = tokens ? "[batch, steps] or [steps]"
                              : "[batch, steps, dim] or "
                                "[steps, dim]";
    if (!json_is_array(shape) || (rank != want && rank != want - 1)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected shape for input '" V2_INPUT "' for model '%s': "
                      "%s tensors of this model are %s",
                      in->e->name, dtype, form);
        return -1;
    }
    uint64_t dims[3] = {0};
    for (size_t i = 0; i < rank; i++) {
        const json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "input '" V2_INPUT "': shape[%zu] must be an integer >= 0", i);
            return -1;
        }
        dims[i] = (uint64_t)json_integer_value(d);
    }
    in->batched = rank == want;
    in->B = in->batched ? dims[0] : 1;
    in->T = dims[in->batched ? 1 : 0];
    if (!tokens && dims[rank - 1] != (uint64_t)spec->input_dim) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected shape for input '" V2_INPUT "' for model '%s': "
                      "the last dimension must be %d, got %" PRIu64,
                      in->e->name, spec->input_dim, dims[rank - 1]);
        return -1;
    }
    if (!in->B || !in->T) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "input '" V2_INPUT "': every sequence needs at least one step "
                      "(shape has a 0)");
        return -1;
    }
    /* each element costs at least two bytes of JSON, so a true count is below the body
     * limit; anything larger is a lie we refuse before multiplying further */
    uint64_t cap = (uint64_t)rnnd_req_app(r)->cfg->max_body_bytes, n = 1;
    for (size_t i = 0; i < rank; i++) {
        if (dims[i] > cap || (n *= dims[i]) > cap) {
            rnnd_v2_error(r, RNND_E_LIMIT_EXCEEDED,
                          "input '" V2_INPUT "': the shape holds more elements than "
                          "a request body can carry");
            return -1;
        }
    }
    *count = (size_t)n;
    return 0;
}

/* Read DATA's N scalars into IN's arrays: ids or floats, as the model takes (the data-type
 * was checked against it). Replies on error. */
static int parse_data(rnnd_req *r, const json_t *data, size_t n, struct v2_infer *in)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(in->e->model);
    size_t got = 0;
    leaves(data, NULL, &got);
    if (!json_is_array(data) || got != n) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected number of elements in input '" V2_INPUT "' for "
                      "model '%s': the shape says %zu, data has %zu",
                      in->e->name, n, json_is_array(data) ? got : 0);
        return -1;
    }
    /* the element pointers and the ids or floats, before they exist */
    if (rnnd_v2_charge(r, rnnd_sat_mul(n, sizeof(json_t *) + sizeof(float))))
        return -1;
    const json_t **v = malloc(n * sizeof *v);
    if (!v) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu elements", n);
        return -1;
    }
    got = 0;
    leaves(data, v, &got);
    int rc = 0;
    if (spec->input_kind == RNND_INPUT_TOKENS) {
        in->tokens = malloc(n * sizeof *in->tokens);
        for (size_t i = 0; in->tokens && i < n && !rc; i++) {
            char why[128];
            if (rnnd_json_token(v[i], spec->vocab_size, &in->tokens[i], why, sizeof why)) {
                rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                              "input '" V2_INPUT "' element %zu (sequence %zu, step "
                              "%zu): %s",
                              i, i / in->T, i % in->T, why);
                rc = -1;
            }
        }
        if (!in->tokens)
            goto oom;
    } else {
        in->vectors = malloc(n * sizeof *in->vectors);
        for (size_t i = 0; in->vectors && i < n && !rc; i++) {
            char path[64], err[256];
            snprintf(path, sizeof path, "input '" V2_INPUT "' element %zu", i);
            if (rnnd_json_float(v[i], &in->vectors[i], path, err, sizeof err)) {
                rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "%s", err);
                rc = -1;
            }
        }
        if (!in->vectors)
            goto oom;
    }
    free(v);
    return rc;
oom:
    free(v);
    rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu elements", n);
    return -1;
}

/* A BYTES tensor of shape [B] or [B, 1] for a model with a tokenizer: one string per
 * sequence, encoded into ids. Every string must give the same number of tokens, since the
 * output tensor [B, T, O] is rectangular. Replies on error. */
static int parse_text(rnnd_req *r, const json_t *t, struct v2_infer *in)
{
    const json_t *shape = json_object_get(t, "shape"), *data = json_object_get(t, "data");
    size_t rank = json_array_size(shape);
    const json_t *d0 = json_array_get(shape, 0), *d1 = json_array_get(shape, 1);
    if (!json_is_array(shape) ||
        !(rank == 1 || (rank == 2 && json_is_integer(d1) && json_integer_value(d1) == 1)) ||
        !json_is_integer(d0) || json_integer_value(d0) < 1) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected shape for input '%s' for model '%s': BYTES "
                      "tensors are [batch] or [batch, 1], one text per sequence",
                      in->iname, in->e->name);
        return -1;
    }
    size_t B = (size_t)json_integer_value(d0), got = 0;
    if (json_is_array(data))
        leaves(data, NULL, &got);
    if (got != B) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected number of elements in input '%s' for "
                      "model '%s': the shape says %zu, data has %zu",
                      in->iname, in->e->name, B, got);
        return -1;
    }
    rnnd_app *app = rnnd_req_app(r);
    size_t cap = in->in_seq ? (size_t)app->cfg->max_steps_per_request : app->infer_limits.max_steps;
    if (!cap)
        cap = SIZE_MAX;
    const json_t **v = malloc(B * sizeof *v);
    size_t total = 0;
    if (!v) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    got = 0;
    leaves(data, v, &got);
    for (size_t b = 0; b < B; b++) {
        if (!json_is_string(v[b])) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "input '%s' element %zu: expected a string (BYTES), "
                          "got %s",
                          in->iname, b, rnnd_json_type_desc(v[b]));
            free(v);
            return -1;
        }
        /* a text of LEN bytes never gives more than LEN tokens, nor may it give more than
         * the step limit: room for the smaller is all the encoding needs */
        size_t len = json_string_length(v[b]);
        total += len < cap ? len : cap;
    }
    /* charged before it exists: a 15 MB text would otherwise be encoded whole (60 MB of ids)
     * before the step limit refuses it */
    if (rnnd_v2_charge(r, rnnd_sat_mul(total ? total : 1, sizeof *in->tokens))) {
        free(v);
        return -1;
    }
    in->tokens = malloc((total ? total : 1) * sizeof *in->tokens);
    if (!in->tokens) {
        free(v);
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    size_t at = 0;
    for (size_t b = 0; b < B; b++) {
        size_t len = json_string_length(v[b]), n = 0;
        char err[256];
        int rc = rnnd_tokenizer_encode(in->e->tokenizer, json_string_value(v[b]), len,
                                       in->tokens + at, len < cap ? len : cap, &n, err, sizeof err);
        if (rc == RNND_ERR_LIMIT) {
            rnnd_v2_error(r, RNND_E_LIMIT_EXCEEDED,
                          "input '%s' element %zu: more than %zu steps, the "
                          "limit of %s",
                          in->iname, b, cap,
                          in->in_seq ? "max_steps_per_request" : "max_infer_steps");
            free(v);
            return -1;
        }
        if (rc) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "input '%s' element %zu: %s", in->iname, b,
                          err);
            free(v);
            return -1;
        }
        if (!n || (b && n != in->T)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "input '%s' element %zu: %s", in->iname, b,
                          !n ? "the text gives no tokens; every sequence needs at least one step"
                             : "the texts give different numbers of tokens; send them in separate "
                               "requests (the output tensor is [batch, steps, dim])");
            free(v);
            return -1;
        }
        in->T = n;
        at += n;
    }
    free(v);
    in->B = B;
    in->batched = 1;
    return 0;
}

/* The input as binary tensor data: BSZ (its binary_data_size) must be the bytes the body
 * carries after the JSON header, and the bytes the shape and DTYPE need; all three are
 * checked before anything is allocated. Replies on error. */
static int parse_binary(rnnd_req *r, const json_t *t, const json_t *bsz, const char *dtype,
                        int text, struct v2_infer *in)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(in->e->model);
    if (!bsz) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "the body has %zu bytes after its JSON header, but input '%s' has no "
                      "binary_data_size parameter",
                      in->bin_len, in->iname);
        return -1;
    }
    if (!in->bin) {
        rnnd_v2_error(
            r, RNND_E_INVALID_REQUEST,
            "input '%s' has binary_data_size, but the request has no " RNND_V2_HEADER_LENGTH
            " header to say where its JSON ends",
            in->iname);
        return -1;
    }
    if (!json_is_integer(bsz) || json_integer_value(bsz) < 0) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "input '%s': binary_data_size must be an integer >= 0", in->iname);
        return -1;
    }
    if (json_object_get(t, "data")) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "input '%s' has both \"data\" and binary_data_size: send one", in->iname);
        return -1;
    }
    if (text) {
        rnnd_v2_error(r, RNND_E_UNSUPPORTED,
                      "input '%s': BYTES tensors are taken as JSON \"data\" only, not as "
                      "binary data",
                      in->iname);
        return -1;
    }
    uint64_t size = (uint64_t)json_integer_value(bsz);
    if (size != in->bin_len) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "input '%s': binary_data_size is %" PRIu64 ", but the body carries %zu "
                      "bytes after its JSON header",
                      in->iname, size, in->bin_len);
        return -1;
    }
    size_t n;
    if (parse_shape(r, json_object_get(t, "shape"), dtype, in, &n))
        return -1;
    int wide = !strcmp(dtype, "INT64");
    size_t need = rnnd_sat_mul(n, wide ? 8 : 4);
    if (need != in->bin_len) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected number of elements in input '%s' for model '%s': the shape "
                      "says %zu %s elements (%zu bytes), binary_data_size is %zu bytes",
                      in->iname, in->e->name, n, dtype, need, in->bin_len);
        return -1;
    }
    if (rnnd_v2_charge(r, rnnd_sat_mul(n, sizeof(float))))
        return -1;
    size_t bad = 0;
    int64_t badval = 0;
    if (spec->input_kind == RNND_INPUT_TOKENS) {
        in->tokens = malloc(n * sizeof *in->tokens);
        if (!in->tokens)
            goto oom;
        if (rnnd_v2_binary_tokens(in->bin, n, wide, spec->vocab_size, in->tokens, &bad, &badval)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "input '%s' element %zu (sequence %zu, step %zu): token id %" PRId64
                          " out of range [0, %d)",
                          in->iname, bad, bad / in->T, bad % in->T, badval, spec->vocab_size);
            return -1;
        }
    } else {
        in->vectors = malloc(n * sizeof *in->vectors);
        if (!in->vectors)
            goto oom;
        if (rnnd_v2_binary_floats(in->bin, n, in->vectors, &bad)) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "input '%s' element %zu: NaN or infinite; inputs must be finite "
                          "numbers",
                          in->iname, bad);
            return -1;
        }
    }
    return 0;
oom:
    rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu elements", n);
    return -1;
}

/* The whole request into IN. Replies on error. */
static int parse_infer(rnnd_req *r, const json_t *body, struct v2_infer *in)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(in->e->model);
    if (!body) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "the request body is empty: expected {\"inputs\": [...]}");
        return -1;
    }
    const json_t *id = json_object_get(body, "id");
    if (id && !json_is_string(id)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "id: expected a string, got %s",
                      rnnd_json_type_desc(id));
        return -1;
    }
    in->id = id ? json_string_value(id) : NULL;
    /* ignored, they would run the request stateless while its client thinks it continues a
     * sequence */
    static const char *const seq_fields[] = {"sequence_id", "sequence_start", "sequence_end"};
    for (size_t i = 0; i < sizeof seq_fields / sizeof *seq_fields; i++) {
        if (json_object_get(body, seq_fields[i])) {
            rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                          "%s belongs in the request's \"parameters\" (Triton's sequence "
                          "extension), not at the top level: {\"parameters\": {\"%s\": ...}}",
                          seq_fields[i], seq_fields[i]);
            return -1;
        }
    }
    if (parse_sequence(r, body, in) || parse_outputs(r, body, in))
        return -1;
    const json_t *inputs = json_object_get(body, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "expected 1 inputs but got %zu inputs for model '%s'",
                      json_array_size(inputs), in->e->name);
        return -1;
    }
    const json_t *t = json_array_get(inputs, 0);
    const json_t *name = json_object_get(t, "name"), *dt = json_object_get(t, "datatype");
    if (!json_is_object(t) || !json_is_string(name) || !json_is_string(dt) ||
        !json_object_get(t, "shape")) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "inputs[0]: expected {\"name\", \"shape\", \"datatype\", "
                      "\"data\"}");
        return -1;
    }
    in->iname = json_string_value(name);
    int as_text = in->e->tokenizer && !strcmp(in->iname, RNND_V2_TEXT);
    if (strcmp(in->iname, V2_INPUT) && !as_text) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "unexpected inference input '%.64s' for model '%s' (its input "
                      "is '" V2_INPUT "'%s)",
                      in->iname, in->e->name,
                      in->e->tokenizer ? ", or '" RNND_V2_TEXT "' for text" : "");
        return -1;
    }
    if (as_text && strcmp(json_string_value(dt), "BYTES")) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "inference input '" RNND_V2_TEXT "' data-type is '%.16s', but model "
                      "'%s' expects 'BYTES' (token ids go in '" V2_INPUT "')",
                      json_string_value(dt), in->e->name);
        return -1;
    }
    const json_t *tp = json_object_get(t, "parameters");
    const json_t *bsz = json_is_object(tp) ? json_object_get(tp, "binary_data_size") : NULL;
    const char *dtype = json_string_value(dt);
    int tokens = spec->input_kind == RNND_INPUT_TOKENS;
    int text = tokens && in->e->tokenizer && !strcmp(dtype, "BYTES");
    int ok = text ||
        (tokens ? !strcmp(dtype, "INT32") || !strcmp(dtype, "INT64") : !strcmp(dtype, "FP32"));
    if (!ok) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "inference input '" V2_INPUT "' data-type is '%.16s', but "
                      "model '%s' expects %s",
                      dtype, in->e->name,
                      !tokens ? "'FP32'"
                          : in->e->tokenizer
                          ? "'INT32' or 'INT64' (token ids) or 'BYTES' (text)"
                          : "'INT32' or 'INT64' (token ids; it has no tokenizer for BYTES)");
        return -1;
    }
    const json_t *data = json_object_get(t, "data");
    size_t n;
    if (bsz || in->bin_len) {
        if (parse_binary(r, t, bsz, dtype, text, in))
            return -1;
    } else if (!data) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST, "input '" V2_INPUT "': missing \"data\"");
        return -1;
    } else if (text ? parse_text(r, t, in)
                    : parse_shape(r, json_object_get(t, "shape"), dtype, in, &n) ||
                       parse_data(r, data, n, in)) {
        return -1;
    }
    if (in->in_seq && in->B != 1) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "a request of a sequence (sequence_id set) must have batch "
                      "size 1, got %zu",
                      in->B);
        return -1;
    }
    if (in->in_seq && in->T > (size_t)rnnd_req_app(r)->cfg->max_steps_per_request) {
        rnnd_v2_error(r, RNND_E_LIMIT_EXCEEDED,
                      "input '" V2_INPUT "': %zu steps, more than "
                      "max_steps_per_request (%lld)",
                      in->T, (long long)rnnd_req_app(r)->cfg->max_steps_per_request);
        return -1;
    }
    return 0;
}

/* ---- the response ------------------------------------------------------------------------ */

/* {"model_name":..,"model_version":"V",["id":..,]"outputs":[{..."data": — the caller
 * appends the data, then "}]}". */
static void response_head(rnnd_buf *b, const struct v2_infer *in, int pooled, size_t floats)
{
    rnnd_buf_puts(b, "{\"model_name\":");
    rnnd_buf_json_string(b, in->e->name);
    rnnd_buf_printf(b, ",\"model_version\":\"%d\"", in->e->version);
    if (in->id) {
        rnnd_buf_puts(b, ",\"id\":");
        rnnd_buf_json_string(b, in->id);
    }
    rnnd_buf_puts(b,
                  ",\"outputs\":[{\"name\":\"" V2_OUTPUT "\",\"datatype\":\"FP32\","
                  "\"shape\":[");
    if (in->batched)
        rnnd_buf_printf(b, "%zu,", in->B);
    if (!pooled) /* a pooled model's stateless infer has no step axis */
        rnnd_buf_printf(b, "%zu,", in->T);
    if (in->bin_out)
        rnnd_buf_printf(b, "%d],\"parameters\":{\"binary_data_size\":%zu}}]}", in->e->output_dim,
                        floats * sizeof(float));
    else
        rnnd_buf_printf(b, "%d],\"data\":", in->e->output_dim);
}

/* The reply's headers for binary output: the JSON is HEAD bytes, the rest is OUTPUT's. */
static void binary_headers(rnnd_req *r, size_t head)
{
    char v[32];
    snprintf(v, sizeof v, "%zu", head);
    rnnd_reply_header(r, RNND_V2_HEADER_LENGTH, v);
    rnnd_reply_header(r, "Content-Type", "application/octet-stream");
}

/* OUTPUT's floats of every sequence as binary data; B->nonfinite when one is NaN or Inf. */
static void output_binary(rnnd_buf *b, const struct v2_infer *in, const rnnd_infer_req *req)
{
    size_t od = (size_t)rnnd_net_output_dim(in->e->net);
    for (size_t s = 0; s < in->B; s++) {
        size_t rows;
        const float *y = rnnd_infer_req_outputs(in->e->net, req, s, &rows);
        for (size_t i = 0; y && i < rows * od; i++)
            b->nonfinite |= !isfinite(y[i]);
        if (y)
            rnnd_v2_binary_append(b, y, rows * od);
    }
}

/* ---- stateless infer: the v1 infer path -------------------------------------------------- */

struct v2_task {
    rnnd_infer_job job; /* first member */
    rnnd_req *r;
    struct v2_infer in;
};

static void task_free(void *arg)
{
    struct v2_task *t = arg;
    rnnd_infer_req_free(t->job.req);
    v2_infer_clear(&t->in);
    free(t);
}

/* The outputs of every sequence as one flat list: the floats in the text v1 gives them. */
static void output_data(rnnd_buf *b, const struct v2_infer *in, const rnnd_infer_req *req)
{
    const rnnd_net *net = in->e->net;
    size_t od = (size_t)rnnd_net_output_dim(net), n = 0;
    rnnd_buf_puts(b, "[");
    for (size_t s = 0; s < in->B; s++) {
        size_t rows;
        const float *y = rnnd_infer_req_outputs(net, req, s, &rows);
        for (size_t i = 0; y && i < rows * od; i++, n++) {
            if (n)
                rnnd_buf_append(b, ",", 1);
            rnnd_buf_float(b, y[i]);
        }
    }
    rnnd_buf_puts(b, "]");
}

/* The number of floats of OUTPUT. */
static size_t output_floats(const struct v2_infer *in, const rnnd_infer_req *req)
{
    size_t od = (size_t)rnnd_net_output_dim(in->e->net), floats = 0;
    for (size_t s = 0; s < in->B; s++) {
        size_t rows;
        rnnd_infer_req_outputs(in->e->net, req, s, &rows);
        floats = rnnd_sat_add(floats, rnnd_sat_mul(rows, od));
    }
    return floats;
}

/* The longest text output_data() can write for REQ, with room for response_head(). */
static size_t response_text_bytes(const struct v2_infer *in, const rnnd_infer_req *req)
{
    size_t od = (size_t)rnnd_net_output_dim(in->e->net), floats = 0;
    for (size_t s = 0; s < in->B; s++) {
        size_t rows;
        rnnd_infer_req_outputs(in->e->net, req, s, &rows);
        floats = rnnd_sat_add(floats, rnnd_sat_mul(rows, od));
    }
    return rnnd_sat_add(rnnd_sat_mul(floats, RNND_FMT_FLOAT_MAX + 1), 1024 + 256);
}

static void task_finish(rnnd_infer_job *job, size_t batch_requests)
{
    (void)batch_requests;
    struct v2_task *t = (struct v2_task *)job;
    char err[512] = "";
    int rc = job->stopped ? 0 : rnnd_infer_req_status(job->req, err, sizeof err);
    if (job->stopped) {
        rnnd_v2_error(t->r, RNND_E_UNAVAILABLE, "the server is shutting down");
    } else if (rc) {
        rnnd_v2_error(t->r, rnnd_errcode_of(rc), "%s", err);
    } else {
        rnnd_buf b;
        rnnd_buf_init(&b);
        /* at once: never doubling past what the request's budget counted (rnnd_infer_bytes) */
        size_t head = 0;
        if (!rnnd_buf_reserve(&b, response_text_bytes(&t->in, job->req))) {
            response_head(&b, &t->in, rnnd_model_get_spec(t->in.e->model)->pool != RNND_POOL_NONE,
                          output_floats(&t->in, job->req));
            head = b.len;
            if (t->in.bin_out) {
                output_binary(&b, &t->in, job->req);
            } else {
                output_data(&b, &t->in, job->req);
                rnnd_buf_puts(&b, "}]}");
            }
        }
        if (b.nonfinite) {
            rnnd_buf_free(&b);
            rnnd_v2_error(t->r, RNND_E_NUMERIC_ERROR, "the computation produced NaN or Inf");
        } else if (rnnd_buf_failed(&b) || !b.len) {
            rnnd_buf_free(&b);
            rnnd_v2_error(t->r, RNND_E_OUT_OF_MEMORY, "out of memory for the response");
        } else {
            if (t->in.bin_out)
                binary_headers(t->r, head);
            rnnd_reply(t->r, 200, &b);
        }
        rnnd_api_count_infer(t->r, job->req);
    }
    rnnd_req_complete(t->r);
}

static void infer_stateless(rnnd_req *r, struct v2_task *t)
{
    const rnnd_entry *e = t->in.e;
    char err[512] = "";
    rnnd_infer_limits lim;
    rnnd_api_infer_limits(r, &lim);
    /* the step limits first, in v2's words */
    if ((lim.max_steps && t->in.T > lim.max_steps) ||
        (lim.max_total_steps && rnnd_sat_mul(t->in.B, t->in.T) > lim.max_total_steps)) {
        rnnd_v2_error(r, RNND_E_LIMIT_EXCEEDED,
                      "input '" V2_INPUT "': %zu sequences of %zu steps, more than "
                      "the limit of max_infer_steps (%zu)",
                      t->in.B, t->in.T, lim.max_steps);
        return;
    }
    rnnd_infer_arrays arr = {t->in.B, t->in.T, t->in.tokens, t->in.vectors};
    int rc = rnnd_infer_req_new(e->net, &arr, &lim, &t->job.req, err, sizeof err);
    if (rc) {
        rnnd_v2_error(r, rnnd_errcode_of(rc), "%s", err);
        return;
    }
    t->job.finish = task_finish;
    t->r = r;
    rnnd_req_defer(r);
    if (rnnd_batcher_infer(e->batcher, &t->job)) {
        rnnd_v2_error(r, RNND_E_UNAVAILABLE, "the server is shutting down");
        rnnd_req_complete(r);
    }
}

/* ---- infer in a sequence: the v1 session step path --------------------------------------- */

struct v2_step {
    rnnd_step_job sj; /* first member */
    rnnd_req *r;
    rnnd_session *s; /* one reference */
    rnnd_v2_seq *map;
    struct v2_infer in;
    float *out;
};

static void step_free(void *arg)
{
    struct v2_step *q = arg;
    rnnd_session_unref(q->s);
    v2_infer_clear(&q->in);
    free(q->out);
    free(q);
}

static rnnd_v2_seq *seq_map(rnnd_app *app) { return app->v2_seq; }

static void reply_unknown_sequence(rnnd_req *r, const struct v2_infer *in, int why)
{
    char k[RNND_V2_SEQ_STR_MAX + 24];
    rnnd_v2_seq_key_str(&in->key, k, sizeof k);
    rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                  "inference request for sequence %s to model '%s' must specify the "
                  "START flag on the first request of the sequence%s",
                  k, in->e->name,
                  why == RNND_SESSION_EXPIRED       ? " (its state expired: idle past the session "
                                                      "ttl)"
                      : why == RNND_SESSION_EVICTED ? " (its state was evicted to make "
                                                      "room)"
                                                    : "");
}

/* End the sequence: its session and its entry go. */
static void end_sequence(rnnd_app *app, struct v2_step *q)
{
    const char *sid = rnnd_session_id(q->s);
    rnnd_v2_seq_remove(q->map, &q->in.key, sid);
    rnnd_session_remove(app->sessions, sid);
}

static void step_finish(rnnd_job *job)
{
    struct v2_step *q = (struct v2_step *)job;
    rnnd_step_job *j = &q->sj;
    rnnd_req *r = q->r;
    rnnd_app *app = rnnd_req_app(r);
    switch (j->outcome) {
    case RNND_STEP_STOPPED:
        rnnd_v2_error(r, RNND_E_UNAVAILABLE,
                      "the server is shutting down; %zu of %zu steps were applied", j->done,
                      j->n_steps);
        break;
    case RNND_STEP_OK:
        if (j->first_nonfinite < 0) {
            rnnd_buf b;
            rnnd_buf_init(&b);
            size_t floats = j->n_steps * (size_t)q->in.e->output_dim;
            response_head(&b, &q->in, 0, floats);
            if (q->in.bin_out) {
                binary_headers(r, b.len);
                rnnd_v2_binary_append(&b, j->out, floats);
            } else {
                rnnd_buf_floats(&b, j->out, floats);
                rnnd_buf_puts(&b, "}]}");
            }
            rnnd_reply(r, 200, &b);
            break;
        }
        rnnd_v2_error(r, RNND_E_NUMERIC_ERROR,
                      "step %ld: the output is NaN or infinite; the sequence advanced "
                      "to %" PRIu64 " steps",
                      j->first_nonfinite, j->steps);
        break;
    default: /* no if_steps is set, so never a conflict */
        rnnd_v2_error(r, rnnd_errcode_of(j->status), "%s", j->err);
        break;
    }
    if (q->in.seq_end)
        end_sequence(app, q);
    rnnd_req_complete(r);
}

/* The session of IN's sequence: a fresh one on sequence_start, else the mapped one. Replies
 * on error. */
static rnnd_session *sequence_session(rnnd_req *r, rnnd_v2_seq *map, const struct v2_infer *in)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_entry *e = in->e;
    rnnd_session *s = NULL;
    char sid[RNND_ID_LEN + 1], old[RNND_ID_LEN + 1], err[256];
    if (!in->seq_start) {
        if (rnnd_v2_seq_get(map, &in->key, sid)) {
            reply_unknown_sequence(r, in, RNND_SESSION_MISSING);
            return NULL;
        }
        int why = rnnd_session_get(app->sessions, sid, &s);
        if (why != RNND_SESSION_FOUND) {
            rnnd_v2_seq_remove(map, &in->key, sid);
            reply_unknown_sequence(r, in, why);
            return NULL;
        }
        return s;
    }
    int rc = rnnd_api_session_new(r, e, &s, err, sizeof err);
    if (rc) {
        rnnd_v2_error(r, rc == RNND_ERR_LIMIT ? RNND_E_OVERLOADED : RNND_E_INTERNAL,
                      "cannot start the sequence: %s", err);
        return NULL;
    }
    rc = rnnd_v2_seq_put(map, &in->key, rnnd_session_id(s), old);
    if (rc) {
        rnnd_session_remove(app->sessions, rnnd_session_id(s));
        rnnd_session_unref(s);
        rnnd_v2_error(r, rc == RNND_ERR_LIMIT ? RNND_E_OVERLOADED : RNND_E_OUT_OF_MEMORY,
                      "cannot start the sequence: %s",
                      rc == RNND_ERR_LIMIT ? "max_sessions sequences are open" : "out of memory");
        return NULL;
    }
    if (*old) /* a restarted sequence: its old state is dropped */
        rnnd_session_remove(app->sessions, old);
    return s;
}

/* The JSON around a v2 reply's data (names, version, id, shape): a generous bound. */
#define V2_RESPONSE_FRAME 1024

static void infer_sequence(rnnd_req *r, struct v2_step *q)
{
    rnnd_app *app = rnnd_req_app(r);
    const rnnd_entry *e = q->in.e;
    q->map = seq_map(app);
    if (!q->map) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for the sequence map");
        return;
    }
    /* the output rows and the reply's text, charged before they exist as the same request
     * without sequence_id charges them */
    size_t O = e->output_dim ? (size_t)e->output_dim : 1;
    size_t bytes = rnnd_sat_mul(rnnd_sat_mul(q->in.T, O), sizeof(float) + RNND_FLOAT_TEXT);
    if (rnnd_v2_charge(r, rnnd_sat_add(bytes, V2_RESPONSE_FRAME + strlen(e->name))))
        return;
    q->out = malloc(q->in.T * O * sizeof *q->out);
    if (!q->out) {
        rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory for %zu steps", q->in.T);
        return;
    }
    q->s = sequence_session(r, q->map, &q->in);
    if (!q->s)
        return;
    /* a sequence keeps the model version it started on; a reload since may have changed
     * the sizes the request was checked against */
    const rnnd_entry *se = rnnd_session_model(q->s);
    const rnnd_model_spec *a = rnnd_model_get_spec(se->model), *b = rnnd_model_get_spec(e->model);
    if (se != e &&
        (a->input_kind != b->input_kind || a->input_dim != b->input_dim ||
         a->vocab_size != b->vocab_size || se->output_dim != e->output_dim)) {
        rnnd_v2_error(r, RNND_E_CONFLICT,
                      "model '%s' was reloaded with other input or output sizes since "
                      "this sequence started: start it again",
                      e->name);
        return;
    }
    rnnd_step_job_init(&q->sj, se->batcher);
    q->sj.job.finish = step_finish;
    q->sj.n_steps = q->in.T;
    q->sj.tokens = q->in.tokens;
    q->sj.vectors = q->in.vectors;
    q->sj.last_only = 0;
    q->sj.out = q->out;
    q->sj.if_steps = -1;
    q->r = r;
    rnnd_req_defer(r);
    int why = rnnd_session_submit(q->s, &q->sj.job);
    if (why != RNND_SESSION_FOUND) {
        rnnd_v2_seq_remove(q->map, &q->in.key, rnnd_session_id(q->s));
        reply_unknown_sequence(r, &q->in, why);
        rnnd_req_complete(r);
    }
}

/* ---- POST /v2/models/{m}[/versions/{v}]/infer -------------------------------------------- */

void rnnd_api_v2_infer(rnnd_req *r)
{
    /* the route takes its body raw (RT_RAW_BODY): with binary tensor data only the first
     * Inference-Header-Content-Length bytes are JSON */
    const char *hl = rnnd_req_header(r, RNND_V2_HEADER_LENGTH), *bin = NULL;
    size_t head, bin_len = 0;
    if (hl && rnnd_v2_header_length(hl, &head)) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      RNND_V2_HEADER_LENGTH ": expected a byte count, got '%.32s'", hl);
        return;
    }
    /* binary data sent without the header: the decoder would only say that the JSON has bytes
     * after it, so say what they need (looked for only when the body names binary_data_size) */
    size_t raw_len, end;
    const char *raw = hl ? NULL : rnnd_req_raw_body(r, &raw_len);
    if (raw && memmem(raw, raw_len, "\"binary_data_size\"", 18) &&
        (end = rnnd_v2_json_end(raw, raw_len)) && end < raw_len) {
        rnnd_v2_error(r, RNND_E_INVALID_REQUEST,
                      "the body has %zu bytes after its JSON and uses binary_data_size, but no "
                      "%s header: binary tensor data (Triton's binary tensor extension) needs "
                      "that header to say where the JSON ends",
                      raw_len - end, RNND_V2_HEADER_LENGTH);
        return;
    }
    if (hl ? rnnd_req_decode_head(r, head, &bin, &bin_len) : rnnd_req_decode(r))
        return;
    if (rnnd_api_admit(r))
        return;
    rnnd_entry *e = rnnd_v2_model(r);
    if (!e)
        return;
    struct v2_infer in = {.e = e, .bin = bin, .bin_len = bin_len};
    if (parse_infer(r, rnnd_req_body(r), &in)) {
        v2_infer_clear(&in);
        return;
    }
    if (in.in_seq) {
        struct v2_step *q = calloc(1, sizeof *q);
        if (!q) {
            v2_infer_clear(&in);
            rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
            return;
        }
        q->in = in;
        rnnd_req_on_free(r, step_free, q); /* the request owns Q from here on */
        infer_sequence(r, q);
    } else {
        struct v2_task *t = calloc(1, sizeof *t);
        if (!t) {
            v2_infer_clear(&in);
            rnnd_v2_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
            return;
        }
        t->in = in;
        rnnd_req_on_free(r, task_free, t);
        infer_stateless(r, t);
    }
}
