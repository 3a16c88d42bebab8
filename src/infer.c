/* The infer contract (rnnd/infer.h, docs/api.md): parse a request into flat arrays, run
 * rnnd_net_forward() over the batch, encode the response.
 *
 * The request is untrusted: every size is checked (limits first, then overflow-safe
 * arithmetic) before anything is allocated, and every refusal names the exact element. */
#include "rnnd/infer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/fmtfloat.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "rnnd/tokenizer.h"

struct rnnd_infer_req {
    size_t n_seq; /* B */
    size_t total_steps;
    size_t max_len; /* the longest sequence */
    int has_init;   /* "initial_state" given */
    int last;       /* "outputs": "last" */
    int return_state;
    int ran;    /* rnnd_infer_run() succeeded */
    int status; /* of the last run; err says why when negative */
    char err[256];
    size_t *lens;           /* [B] */
    int32_t *tok_flat;      /* token models: total_steps ids */
    const int32_t **tokens; /* [B] into tok_flat */
    float *vec_flat;        /* vector models: total_steps * input_dim */
    const float **vectors;  /* [B] into vec_flat */
    float *init_flat;       /* with initial_state: B * state_floats */
    const float **init;     /* [B] into init_flat, NULL for a null entry */
    float *out_flat;        /* total_steps * output_dim */
    float **outputs;        /* [B] into out_flat */
    float *final_flat;      /* with return_state: B * state_floats */
    float **finals;         /* [B] into final_flat */
};

/* calloc(a * b) that refuses an overflowing product instead of wrapping. */
static void *alloc_array(size_t a, size_t b)
{
    if (b && a > SIZE_MAX / b)
        return NULL;
    return calloc(a ? a : 1, b ? b : 1);
}

void rnnd_infer_req_free(rnnd_infer_req *req)
{
    if (!req)
        return;
    free(req->lens);
    free(req->tok_flat);
    free(req->tokens);
    free(req->vec_flat);
    free(req->vectors);
    free(req->init_flat);
    free(req->init);
    free(req->out_flat);
    free(req->outputs);
    free(req->final_flat);
    free(req->finals);
    free(req);
}

size_t rnnd_infer_req_sequences(const rnnd_infer_req *req) { return req->n_seq; }

size_t rnnd_infer_req_steps(const rnnd_infer_req *req) { return req->total_steps; }

static const char *const known_fields[] = {"inputs", "outputs", "return_state", "initial_state",
                                           "digest"};
#define N_KNOWN (sizeof known_fields / sizeof known_fields[0])

static int is_known_field(const char *key)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (!strcmp(key, known_fields[i]))
            return 1;
    return 0;
}

/* Refuse unknown top-level fields, naming up to a few of them. */
static int check_fields(json_t *body, char *err, size_t errlen)
{
    char names[256] = "";
    size_t used = 0, count = 0;
    const char *key;
    json_t *val;

    json_object_foreach(body, key, val) {
        if (is_known_field(key))
            continue;
        if (count < 4 && used < sizeof names) {
            int n =
                snprintf(names + used, sizeof names - used, "%s\"%.48s\"", count ? ", " : "", key);
            if (n > 0)
                used += (size_t)n;
        }
        count++;
    }
    if (!count)
        return 0;
    return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                     "unknown field%s %s%s (known: inputs, outputs, return_state, initial_state, "
                     "digest)",
                     count > 1 ? "s" : "", names, count > 4 ? ", ..." : "");
}

static int parse_options(const json_t *body, rnnd_infer_req *req, char *err, size_t errlen)
{
    const json_t *v = json_object_get(body, "outputs");
    if (v) {
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (s && !strcmp(s, "all") && strlen(s) == json_string_length(v))
            req->last = 0;
        else if (s && !strcmp(s, "last") && strlen(s) == json_string_length(v))
            req->last = 1;
        else if (s)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "outputs: expected \"all\" or \"last\", got \"%.32s\"", s);
        else
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "outputs: expected \"all\" or \"last\", got %s",
                             rnnd_json_type_desc(v));
    }
    v = json_object_get(body, "return_state");
    if (v) {
        if (!json_is_boolean(v))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "return_state: expected true or false, got %s",
                             rnnd_json_type_desc(v));
        req->return_state = json_is_true(v);
    }
    return 0;
}

/* Text sequences of a token model (docs/text.md): encoded while scanning, since only the
 * encoding tells their length; copied into the request by parse_tokens(). */
typedef struct text_ctx {
    const rnnd_model *model;
    const rnnd_tokenizer *tok; /* the caller's, or OWN built when the first string is met */
    rnnd_tokenizer *own;
    int32_t **enc; /* [B], NULL for a list sequence */
} text_ctx;

static void text_ctx_free(text_ctx *tx, size_t B)
{
    for (size_t b = 0; tx->enc && b < B; b++)
        free(tx->enc[b]);
    free(tx->enc);
    rnnd_tokenizer_free(tx->own);
}

/* Encode the string SEQ (sequence B of N_SEQ) into tx->enc[B], its token count in *N; more
 * than MAX_STEPS tokens (0: no limit) is RNND_ERR_LIMIT, found while encoding. */
static int encode_text(text_ctx *tx, size_t b, size_t n_seq, const json_t *seq, size_t max_steps,
                       size_t *n, char *err, size_t errlen)
{
    char msg[192];
    size_t len = json_string_length(seq);
    int rc;

    if (!len)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "inputs[%zu]: expected at least one step",
                         b);
    if (!tx->tok) {
        rc = rnnd_tokenizer_new(tx->model, &tx->own, msg, sizeof msg);
        if (rc)
            return rnnd_fail(rc == RNND_ERR_NOMEM ? rc : RNND_ERR_INVALID, err, errlen,
                             "inputs[%zu]: %s", b, msg);
        tx->tok = tx->own;
    }
    if (!tx->enc && !(tx->enc = alloc_array(n_seq, sizeof *tx->enc)))
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
    /* a token takes at least one byte: LEN ids always suffice, and more than the step limit
     * is refused anyway, so a 15 MB text does not get 60 MB of ids before its refusal */
    size_t cap = max_steps && max_steps < len ? max_steps : len;
    if (!(tx->enc[b] = alloc_array(cap, sizeof **tx->enc)))
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for inputs[%zu]", b);
    rc = rnnd_tokenizer_encode(tx->tok, json_string_value(seq), len, tx->enc[b], cap, n, msg,
                               sizeof msg);
    if (rc == RNND_ERR_LIMIT)
        return rnnd_fail(rc, err, errlen,
                         "inputs[%zu]: more than max_infer_steps (%zu) steps per "
                         "sequence",
                         b, max_steps);
    if (rc)
        return rnnd_fail(rc, err, errlen, "inputs[%zu]: %s", b, msg);
    return 0;
}

/* First pass over "inputs": shapes and limits only, so an oversized request is refused
 * before anything is allocated for it (text is encoded here: its length is the encoding's). */
static int scan_inputs(const json_t *inputs, const rnnd_infer_limits *lim, rnnd_infer_req *req,
                       text_ctx *tx, char *err, size_t errlen)
{
    if (!inputs)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "inputs: missing (a list of sequences is required)");
    if (!json_is_array(inputs))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "inputs: expected a list of sequences, got %s",
                         rnnd_json_type_desc(inputs));
    size_t B = json_array_size(inputs);
    if (!B)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "inputs: expected at least one sequence");
    if (lim && lim->max_sequences && B > lim->max_sequences)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen,
                         "inputs: %zu sequences, more than max_sequences (%zu)", B,
                         lim->max_sequences);

    if (!(req->lens = alloc_array(B, sizeof *req->lens)))
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
    int tokens = rnnd_model_get_spec(tx->model)->input_kind == RNND_INPUT_TOKENS;
    size_t total = 0;
    for (size_t b = 0; b < B; b++) {
        const json_t *seq = json_array_get(inputs, b);
        size_t n;
        if (tokens && json_is_string(seq)) {
            int rc = encode_text(tx, b, B, seq, lim ? lim->max_steps : 0, &n, err, errlen);
            if (rc)
                return rc;
        } else if (!json_is_array(seq)) {
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "inputs[%zu]: expected a list of steps, got %s", b,
                             rnnd_json_type_desc(seq));
        } else {
            n = json_array_size(seq);
        }
        if (!n)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "inputs[%zu]: expected at least one step", b);
        if (lim && lim->max_steps && n > lim->max_steps)
            return rnnd_fail(RNND_ERR_LIMIT, err, errlen,
                             "inputs[%zu]: %zu steps, more than max_infer_steps (%zu) per sequence",
                             b, n, lim->max_steps);
        req->lens[b] = n;
        if (n > req->max_len)
            req->max_len = n;
        total += n; /* cannot wrap: each n counts distinct JSON values or bytes in memory */
    }
    if (lim && lim->max_total_steps && total > lim->max_total_steps)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen,
                         "inputs: %zu steps in all, more than max_infer_steps (%zu) per request",
                         total, lim->max_total_steps);
    req->n_seq = B;
    req->total_steps = total;
    return 0;
}

static int parse_tokens(const json_t *inputs, const rnnd_model_spec *spec, rnnd_infer_req *req,
                        const text_ctx *tx, char *err, size_t errlen)
{
    size_t off = 0;

    req->tok_flat = alloc_array(req->total_steps, sizeof *req->tok_flat);
    req->tokens = alloc_array(req->n_seq, sizeof *req->tokens);
    if (!req->tok_flat || !req->tokens)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for %zu steps",
                         req->total_steps);
    for (size_t b = 0; b < req->n_seq; b++) {
        const json_t *seq = json_array_get(inputs, b);
        size_t n = req->lens[b];
        req->tokens[b] = req->tok_flat + off;
        if (tx->enc && tx->enc[b]) {
            memcpy(req->tok_flat + off, tx->enc[b], n * sizeof *req->tok_flat);
            off += n;
            continue;
        }
        for (size_t t = 0; t < n; t++) {
            char why[128];
            if (rnnd_json_token(json_array_get(seq, t), spec->vocab_size, &req->tok_flat[off + t],
                                why, sizeof why))
                return rnnd_fail(RNND_ERR_INVALID, err, errlen, "inputs[%zu][%zu]: %s", b, t, why);
        }
        off += n;
    }
    return 0;
}

static int parse_vectors(const json_t *inputs, const rnnd_model_spec *spec, rnnd_infer_req *req,
                         char *err, size_t errlen)
{
    size_t dim = (size_t)spec->input_dim, off = 0;

    if (req->total_steps > SIZE_MAX / dim)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen, "inputs: too many steps");
    req->vec_flat = alloc_array(req->total_steps * dim, sizeof *req->vec_flat);
    req->vectors = alloc_array(req->n_seq, sizeof *req->vectors);
    if (!req->vec_flat || !req->vectors)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for %zu steps",
                         req->total_steps);
    for (size_t b = 0; b < req->n_seq; b++) {
        const json_t *seq = json_array_get(inputs, b);
        size_t n = req->lens[b];
        req->vectors[b] = req->vec_flat + off * dim;
        for (size_t t = 0; t < n; t++) {
            char path[64];
            snprintf(path, sizeof path, "inputs[%zu][%zu]", b, t);
            int rc = rnnd_json_step(json_array_get(seq, t), req->vec_flat + (off + t) * dim, dim,
                                    path, err, errlen);
            if (rc)
                return rc;
        }
        off += n;
    }
    return 0;
}

static int parse_initial_state(const json_t *v, const rnnd_model *model, rnnd_infer_req *req,
                               char *err, size_t errlen)
{
    size_t S = rnnd_model_state_floats(model), B = req->n_seq;

    if (!json_is_array(v))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "initial_state: expected a list with one state (or null) per sequence, "
                         "got %s",
                         rnnd_json_type_desc(v));
    if (json_array_size(v) != B)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "initial_state: expected %zu entries (one per sequence), got %zu", B,
                         json_array_size(v));
    if (S && B > SIZE_MAX / S)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen, "initial_state: too large");
    req->init = alloc_array(B, sizeof *req->init);
    if (!req->init)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for initial_state");
    /* Only allocate the state blocks if some entry is not null. */
    size_t given = 0;
    for (size_t b = 0; b < B; b++)
        given += !json_is_null(json_array_get(v, b));
    if (!given)
        return 0;
    req->init_flat = alloc_array(B * S, sizeof *req->init_flat);
    if (!req->init_flat)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for initial_state");
    for (size_t b = 0; b < B; b++) {
        json_t *st = json_array_get(v, b);
        if (json_is_null(st))
            continue;
        char path[64];
        snprintf(path, sizeof path, "initial_state[%zu]", b);
        int rc = rnnd_state_parse_at(model, st, req->init_flat + b * S, path, err, errlen);
        if (rc)
            return rc;
        req->init[b] = req->init_flat + b * S;
    }
    return 0;
}

/* Saturating size arithmetic for estimates: SIZE_MAX stays SIZE_MAX. */
static size_t sat_mul(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t sat_add(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

/* Longest float text (fmtfloat.h: 15 characters) with its comma. */
#define FLOAT_TEXT 16
/* The JSON around one state's floats (per layer: {"h":[..],"c":[..]} and commas), and around
 * the whole response (model name, digest, keys): generous, fixed bounds. */
/* A pooled model (architecture "pool") answers one row per sequence. */
static int net_pools(const rnnd_net *net)
{
    return rnnd_model_get_spec(rnnd_net_model(net))->pool != RNND_POOL_NONE;
}

#define STATE_LAYER_TEXT 32
#define RESPONSE_FRAME 1024

/* The longest text rnnd_infer_encode() can write for REQ (a model name of up to 256 bytes). */
static size_t response_bytes(const rnnd_net *net, const rnnd_infer_req *req)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(rnnd_net_model(net));
    size_t od = (size_t)rnnd_net_output_dim(net), S = rnnd_net_state_floats(net);
    size_t B = req->n_seq, rows = req->last || net_pools(net) ? B : req->total_steps;
    /* each row: its floats, "[", "]" and a comma; each sequence: "[", "]" and a comma */
    size_t text = sat_add(sat_mul(sat_mul(rows, od), FLOAT_TEXT), sat_mul(rows + B, 3));
    if (req->return_state) {
        size_t one =
            sat_add(sat_mul(S, FLOAT_TEXT), sat_mul((size_t)spec->n_layers + 1, STATE_LAYER_TEXT));
        text = sat_add(text, sat_mul(B, one));
    }
    return sat_add(text, RESPONSE_FRAME + RNND_FMT_FLOAT_MAX);
}

size_t rnnd_infer_bytes(const rnnd_net *net, const rnnd_infer_req *req)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(rnnd_net_model(net));
    size_t B = req->n_seq, N = req->total_steps;
    size_t od = (size_t)rnnd_net_output_dim(net), S = rnnd_net_state_floats(net);
    size_t in = spec->input_kind == RNND_INPUT_TOKENS ? 1 : (size_t)spec->input_dim;
    /* lens, the per-sequence pointer tables here and in rnnd_infer_run_many() */
    size_t bytes = sat_mul(B, 12 * sizeof(void *));
    bytes = sat_add(bytes, sat_mul(sat_mul(N, in), sizeof(float)));
    bytes = sat_add(bytes, sat_mul(sat_mul(N, od), sizeof(float)));
    if (req->has_init)
        bytes = sat_add(bytes, sat_mul(sat_mul(B, S), sizeof(float)));
    if (req->return_state)
        bytes = sat_add(bytes, sat_mul(sat_mul(B, S), sizeof(float)));
    bytes = sat_add(bytes, rnnd_net_forward_bytes(net, B, N, req->max_len));
    return sat_add(bytes, response_bytes(net, req));
}

int rnnd_infer_parse(const rnnd_net *net, json_t *body, const rnnd_infer_limits *limits,
                     rnnd_infer_req **out, char *err, size_t errlen)
{
    return rnnd_infer_parse_text(net, NULL, body, limits, out, err, errlen);
}

int rnnd_infer_parse_text(const rnnd_net *net, const rnnd_tokenizer *tok, json_t *body,
                          const rnnd_infer_limits *limits, rnnd_infer_req **out, char *err,
                          size_t errlen)
{
    const rnnd_model *model = rnnd_net_model(net);
    const rnnd_model_spec *spec = rnnd_model_get_spec(model);
    text_ctx tx = {model, tok, NULL, NULL};
    rnnd_infer_req *req;
    int rc;

    *out = NULL;
    if (!json_is_object(body))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "the request must be a JSON object {\"inputs\": [...], ...}, got %s",
                         rnnd_json_type_desc(body));
    req = calloc(1, sizeof *req);
    if (!req)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");

    const json_t *inputs = json_object_get(body, "inputs");
    const json_t *init = json_object_get(body, "initial_state");
    rc = check_fields(body, err, errlen);
    if (!rc)
        rc = parse_options(body, req, err, errlen);
    if (!rc)
        rc = scan_inputs(inputs, limits, req, &tx, err, errlen);
    if (!rc) {
        /* The output must fit in memory arithmetic too, before the inputs are copied. */
        size_t od = (size_t)rnnd_net_output_dim(net);
        if (od && req->total_steps > SIZE_MAX / sizeof(float) / od)
            rc = rnnd_fail(RNND_ERR_LIMIT, err, errlen, "inputs: too many steps");
    }
    req->has_init = init != NULL;
    if (!rc && limits && limits->admit)
        rc = limits->admit(limits->admit_ctx, rnnd_infer_bytes(net, req), err, errlen);
    if (!rc)
        rc = spec->input_kind == RNND_INPUT_TOKENS
            ? parse_tokens(inputs, spec, req, &tx, err, errlen)
            : parse_vectors(inputs, spec, req, err, errlen);
    text_ctx_free(&tx, json_array_size(inputs));
    /* optional here: infer's states are plain STATE objects, and older clients send them
     * without a digest; given, it is checked like on every other path */
    if (!rc)
        rc = rnnd_state_digest_check(model, json_object_get(body, "digest"), 0, err, errlen);
    if (!rc && init)
        rc = parse_initial_state(init, model, req, err, errlen);
    if (rc) {
        rnnd_infer_req_free(req);
        return rc;
    }
    *out = req;
    return 0;
}

int rnnd_infer_req_new(const rnnd_net *net, const rnnd_infer_arrays *in,
                       const rnnd_infer_limits *limits, rnnd_infer_req **out, char *err,
                       size_t errlen)
{
    size_t n_seq = in->n_seq, steps = in->steps;
    const int32_t *tokens = in->tokens;
    const float *vectors = in->vectors;
    const rnnd_model_spec *spec = rnnd_model_get_spec(rnnd_net_model(net));
    int tok = spec->input_kind == RNND_INPUT_TOKENS;
    size_t dim = tok ? 1 : (size_t)spec->input_dim;
    size_t od = (size_t)rnnd_net_output_dim(net);

    *out = NULL;
    if (!n_seq)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "inputs: expected at least one sequence");
    if (!steps)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "inputs[0]: expected at least one step");
    if (tok ? !tokens : !vectors)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "inputs: expected %s",
                         tok ? "token ids" : "vectors");
    /* the limits of rnnd_infer_parse(), in its words */
    if (limits && limits->max_sequences && n_seq > limits->max_sequences)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen,
                         "inputs: %zu sequences, more than max_sequences (%zu)", n_seq,
                         limits->max_sequences);
    if (limits && limits->max_steps && steps > limits->max_steps)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen,
                         "inputs[0]: %zu steps, more than max_infer_steps (%zu) per sequence",
                         steps, limits->max_steps);
    if (n_seq > SIZE_MAX / steps || n_seq * steps > SIZE_MAX / dim ||
        (od && n_seq * steps > SIZE_MAX / sizeof(float) / od))
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen, "inputs: too many steps");
    size_t total = n_seq * steps;
    if (limits && limits->max_total_steps && total > limits->max_total_steps)
        return rnnd_fail(RNND_ERR_LIMIT, err, errlen,
                         "inputs: %zu steps in all, more than max_infer_steps (%zu) per request",
                         total, limits->max_total_steps);
    rnnd_infer_req *req = calloc(1, sizeof *req);
    if (!req || !(req->lens = alloc_array(n_seq, sizeof *req->lens))) {
        free(req);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
    }
    for (size_t b = 0; b < n_seq; b++)
        req->lens[b] = steps;
    req->n_seq = n_seq;
    req->total_steps = total;
    req->max_len = steps;
    int rc = 0;
    if (limits && limits->admit)
        rc = limits->admit(limits->admit_ctx, rnnd_infer_bytes(net, req), err, errlen);
    if (!rc && tok) {
        req->tok_flat = alloc_array(total, sizeof *req->tok_flat);
        req->tokens = alloc_array(n_seq, sizeof *req->tokens);
        if (!req->tok_flat || !req->tokens)
            rc = rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for %zu steps", total);
        for (size_t i = 0; !rc && i < total; i++) {
            if (tokens[i] < 0 || tokens[i] >= spec->vocab_size)
                rc = rnnd_fail(RNND_ERR_INVALID, err, errlen,
                               "inputs[%zu][%zu]: token id %d out of range [0, %d)", i / steps,
                               i % steps, (int)tokens[i], spec->vocab_size);
            else
                req->tok_flat[i] = tokens[i];
        }
        for (size_t b = 0; !rc && b < n_seq; b++)
            req->tokens[b] = req->tok_flat + b * steps;
    } else if (!rc) {
        req->vec_flat = alloc_array(total * dim, sizeof *req->vec_flat);
        req->vectors = alloc_array(n_seq, sizeof *req->vectors);
        if (!req->vec_flat || !req->vectors)
            rc = rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for %zu steps", total);
        for (size_t i = 0; !rc && i < total * dim; i++) {
            if (!isfinite(vectors[i]))
                rc = rnnd_fail(RNND_ERR_INVALID, err, errlen,
                               "inputs[%zu][%zu][%zu]: not a finite number", i / dim / steps,
                               i / dim % steps, i % dim);
            else
                req->vec_flat[i] = vectors[i];
        }
        for (size_t b = 0; !rc && b < n_seq; b++)
            req->vectors[b] = req->vec_flat + b * steps * dim;
    }
    if (rc) {
        rnnd_infer_req_free(req);
        return rc;
    }
    *out = req;
    return 0;
}

const float *rnnd_infer_req_outputs(const rnnd_net *net, const rnnd_infer_req *req, size_t b,
                                    size_t *rows)
{
    *rows = 0;
    if (!req->ran || b >= req->n_seq)
        return NULL;
    if (net_pools(net)) {
        *rows = 1;
        return req->outputs[b];
    }
    if (req->last) {
        *rows = 1;
        return req->outputs[b] + (req->lens[b] - 1) * (size_t)rnnd_net_output_dim(net);
    }
    *rows = req->lens[b];
    return req->outputs[b];
}

/* The first non-finite value among N floats, or N. */
static size_t first_nonfinite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return i;
    return n;
}

/* Give REQ its output rows and, with return_state, its final-state blocks (once). */
static int alloc_results(const rnnd_net *net, rnnd_infer_req *req, char *err, size_t errlen)
{
    size_t od = (size_t)rnnd_net_output_dim(net);
    size_t S = rnnd_net_state_floats(net), B = req->n_seq;

    if (!req->out_flat) {
        req->out_flat = alloc_array(req->total_steps * od, sizeof *req->out_flat);
        req->outputs = alloc_array(B, sizeof *req->outputs);
        if (!req->out_flat || !req->outputs)
            return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for the outputs");
        size_t off = 0;
        for (size_t b = 0; b < B; b++) {
            req->outputs[b] = req->out_flat + off * od;
            off += net_pools(net) ? 1 : req->lens[b];
        }
    }
    if (req->return_state && !req->final_flat) {
        if (S && B > SIZE_MAX / S)
            return rnnd_fail(RNND_ERR_LIMIT, err, errlen, "the states are too large");
        req->final_flat = alloc_array(B * S, sizeof *req->final_flat);
        req->finals = alloc_array(B, sizeof *req->finals);
        if (!req->final_flat || !req->finals)
            return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory for the states");
        for (size_t b = 0; b < B; b++)
            req->finals[b] = req->final_flat + b * S;
    }
    return 0;
}

/* JSON cannot carry NaN or Inf: refuse rather than answer with nulls. */
static int check_finite(const rnnd_net *net, const rnnd_infer_req *req, char *err, size_t errlen)
{
    size_t od = (size_t)rnnd_net_output_dim(net);
    size_t S = rnnd_net_state_floats(net);

    for (size_t b = 0; b < req->n_seq; b++) {
        size_t n = (net_pools(net) ? 1 : req->lens[b]) * od;
        size_t i = first_nonfinite(req->outputs[b], n);
        if (i < n && net_pools(net))
            return rnnd_fail(RNND_ERR_NUMERIC, err, errlen,
                             "outputs[%zu][%zu]: the result is not finite (NaN or Inf)", b, i);
        if (i < n)
            return rnnd_fail(RNND_ERR_NUMERIC, err, errlen,
                             "outputs[%zu][%zu][%zu]: the result is not finite (NaN or Inf)", b,
                             i / od, i % od);
        if (req->return_state) {
            i = first_nonfinite(req->finals[b], S);
            if (i < S)
                return rnnd_fail(RNND_ERR_NUMERIC, err, errlen,
                                 "states[%zu]: the final state is not finite (NaN or Inf)", b);
        }
    }
    return 0;
}

/* Record RC (and, when it failed, MSG) as REQ's outcome. */
static void set_outcome(rnnd_infer_req *req, int rc, const char *msg)
{
    req->status = rc;
    req->ran = !rc;
    snprintf(req->err, sizeof req->err, "%s", rc ? msg : "");
}

int rnnd_infer_run_many(const rnnd_net *net, rnnd_infer_req *const *reqs, size_t n, char *err,
                        size_t errlen)
{
    return rnnd_infer_run_many_par(net, reqs, n, NULL, err, errlen);
}

int rnnd_infer_run_many_par(const rnnd_net *net, rnnd_infer_req *const *reqs, size_t n,
                            const rnnd_parallel *par, char *err, size_t errlen)
{
    char msg[256] = "";
    size_t total = 0; /* sequences over all requests */
    int rc = 0;

    for (size_t i = 0; !rc && i < n; i++) {
        rc = alloc_results(net, reqs[i], msg, sizeof msg);
        total += reqs[i]->n_seq;
    }

    /* One forward call over every sequence of every request: pointer tables into each
     * request's own arrays (a request without a table gives NULL entries). The core is
     * batch-invariant, so each request gets exactly what it would get alone. */
    size_t *lens = rc ? NULL : alloc_array(total, sizeof *lens);
    const int32_t **tokens = rc ? NULL : alloc_array(total, sizeof *tokens);
    const float **vectors = rc ? NULL : alloc_array(total, sizeof *vectors);
    const float **init = rc ? NULL : alloc_array(total, sizeof *init);
    float **outputs = rc ? NULL : alloc_array(total, sizeof *outputs);
    float **finals = rc ? NULL : alloc_array(total, sizeof *finals);
    if (!rc && (!lens || !tokens || !vectors || !init || !outputs || !finals))
        rc = rnnd_fail(RNND_ERR_NOMEM, msg, sizeof msg, "out of memory for the batch");
    for (size_t i = 0, k = 0; !rc && i < n; i++) {
        const rnnd_infer_req *q = reqs[i];
        for (size_t b = 0; b < q->n_seq; b++, k++) {
            lens[k] = q->lens[b];
            tokens[k] = q->tokens ? q->tokens[b] : NULL;
            vectors[k] = q->vectors ? q->vectors[b] : NULL;
            init[k] = q->init ? q->init[b] : NULL;
            outputs[k] = q->outputs[b];
            finals[k] = q->return_state ? q->finals[b] : NULL;
        }
    }
    if (!rc) {
        rnnd_seq_batch seqs = {.B = total,
                               .lens = lens,
                               .tokens = tokens,
                               .vectors = vectors,
                               .init = init,
                               .outputs = outputs,
                               .final = finals};
        rc = rnnd_net_forward_par(net, &seqs, par, msg, sizeof msg);
    }
    free(lens);
    free(tokens);
    free(vectors);
    free(init);
    free(outputs);
    free(finals);

    /* A failed call fails every request; otherwise each one is checked on its own. */
    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        char own[256] = "";
        int r = rc ? rc : check_finite(net, reqs[i], own, sizeof own);
        set_outcome(reqs[i], r, rc ? msg : own);
        if (r && !ret)
            ret = rnnd_fail(r, err, errlen, "%s", reqs[i]->err);
    }
    return ret;
}

int rnnd_infer_req_status(const rnnd_infer_req *req, char *err, size_t errlen)
{
    if (req->status)
        rnnd_fail(req->status, err, errlen, "%s", req->err);
    return req->status;
}

int rnnd_infer_run(const rnnd_net *net, rnnd_infer_req *req, char *err, size_t errlen)
{
    return rnnd_infer_run_many(net, &req, 1, err, errlen);
}

int rnnd_infer_encode(const rnnd_net *net, const rnnd_infer_req *req, const char *model_name,
                      rnnd_buf *out)
{
    size_t od = (size_t)rnnd_net_output_dim(net);

    if (!req->ran)
        return RNND_ERR_INTERNAL;
    /* all at once: the buffer never doubles past what rnnd_infer_bytes() counted */
    if (rnnd_buf_reserve(out, response_bytes(net, req)))
        return 0; /* the failed buffer says so */
    rnnd_buf_puts(out, "{\"model\":");
    rnnd_buf_json_string(out, model_name ? model_name : "");
    rnnd_buf_puts(out, ",\"outputs\":[");
    /* the rows through the accessor the v2 front end reads them with, so both agree on
     * what a pooled or "last" request returns */
    for (size_t b = 0; b < req->n_seq; b++) {
        size_t rows;
        const float *y = rnnd_infer_req_outputs(net, req, b, &rows);
        if (b)
            rnnd_buf_append(out, ",", 1);
        if (req->last || net_pools(net)) {
            rnnd_buf_floats(out, y, od);
            continue;
        }
        rnnd_buf_append(out, "[", 1);
        for (size_t t = 0; t < rows; t++) {
            if (t)
                rnnd_buf_append(out, ",", 1);
            rnnd_buf_floats(out, y + t * od, od);
        }
        rnnd_buf_append(out, "]", 1);
    }
    rnnd_buf_append(out, "]", 1);
    if (req->return_state) {
        const rnnd_model *model = rnnd_net_model(net);
        rnnd_buf_printf(out, ",\"digest\":\"%s\",\"states\":[", rnnd_model_digest(model));
        for (size_t b = 0; b < req->n_seq; b++) {
            if (b)
                rnnd_buf_append(out, ",", 1);
            rnnd_state_write(model, req->finals[b], out);
        }
        rnnd_buf_append(out, "]", 1);
    }
    rnnd_buf_append(out, "}", 1);
    return 0;
}

const char *rnnd_json_error_text(const char *text)
{
    if (strstr(text, "JSON_ALLOW_NUL"))
        return "a string holds \\u0000 (NUL), which is not allowed";
    return text;
}

int rnnd_infer_load(const char *data, size_t len, json_t **out, char *err, size_t errlen)
{
    json_error_t jerr;

    *out = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*out)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "line %d, column %d: %s", jerr.line,
                         jerr.column, rnnd_json_error_text(jerr.text));
    return 0;
}
