/* `rnnd inspect FILE`: what a model file holds, as text for people or JSON for scripts. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd.h"
#include "rnnd/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rnnd inspect [--json] FILE\n"
            "\n"
            "Validate a model file and print its architecture (input, every layer with its\n"
            "type, direction, sizes, options and activations, the head, the vocabulary),\n"
            "parameter count, weight type (f32, bf16, f16, int8), state size per session,\n"
            "output size, whether it can be fed step by step (stateful), its digest (what a\n"
            "session state of it means: architecture and weights, docs/state.md) and the\n"
            "SHA-256 of the file, and whether rnnd-convert verified it against its source\n"
            "(the errors it measured, docs/convert.md).\n"
            "\n"
            "options:\n"
            "  --json       print one JSON object instead of text\n"
            "  -h, --help   show this help\n"
            "\n"
            "On failure prints one line \"FILE: reason\" on stderr and exits with status 1.\n");
}

static const char *norm_name(int norm)
{
    switch (norm) {
    case RNND_NORM_NONE: return "none";
    case RNND_NORM_SOFTMAX: return "softmax";
    case RNND_NORM_LOG_SOFTMAX: return "log_softmax";
    }
    return "unknown";
}

/* Which parameters an activation reads (ONNX): 0 none, 1 alpha, 2 alpha and beta. */
static int act_params(int kind)
{
    switch (kind) {
    case RNND_ACT_HARDSIGMOID:
    case RNND_ACT_SCALEDTANH:
    case RNND_ACT_AFFINE: return 2;
    case RNND_ACT_LEAKYRELU:
    case RNND_ACT_THRESHOLDEDRELU:
    case RNND_ACT_ELU: return 1;
    }
    return 0;
}

/* The shortest decimal that reads back as V (0.2f prints "0.2", not "0.200000003"). */
static double short_float(float v, char *buf, size_t len)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v)
            break;
    }
    return strtod(buf, NULL);
}

static void print_act(const rnnd_activation *a)
{
    char x[32], y[32];
    int np = act_params(a->kind);
    short_float(a->alpha, x, sizeof x);
    short_float(a->beta, y, sizeof y);
    printf("%s", rnnd_act_name(a->kind));
    if (np == 1)
        printf("(alpha=%s)", x);
    else if (np == 2)
        printf("(alpha=%s, beta=%s)", x, y);
}

static void print_layer_options(const rnnd_layer_spec *ls)
{
    printf("             options:");
    if (rnnd_cell_is_min(ls->cell)) {
        printf(" none (the gates read only the input)\n");
        return;
    }
    char c[32];
    if (ls->has_clip) {
        short_float(ls->clip, c, sizeof c);
        printf(" clip=%s", c);
    } else
        printf(" clip=none");
    switch (ls->cell) {
    case RNND_CELL_LSTM:
        printf(" input_forget=%s peepholes=%s forget_gate=%s proj_size=%d depth_gate=%s",
               ls->input_forget ? "yes" : "no", ls->peepholes ? "yes" : "no",
               ls->forget_gate ? "yes" : "no", ls->proj_size, ls->depth_gate ? "yes" : "no");
        break;
    case RNND_CELL_GRU: printf(" linear_before_reset=%d", ls->linear_before_reset); break;
    case RNND_CELL_JORDAN: printf(" output_size=%d", ls->output_size); break;
    case RNND_CELL_CLOCKWORK:
        printf(" periods=");
        for (int k = 0; k < ls->n_periods; k++)
            printf("%s%d", k ? "," : "", ls->periods[k]);
        printf(" (%d modules of %d units)", ls->n_periods, ls->hidden / ls->n_periods);
        break;
    case RNND_CELL_SLSTM:
        printf(" heads=%d (d=%d) forget=%s", ls->heads, ls->hidden / ls->heads,
               ls->exp_forget ? "exp" : "sigmoid");
        break;
    }
    printf("\n");
}

static void print_text(const char *path, const rnnd_model *m)
{
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    size_t state = rnnd_model_state_floats(m);

    printf("file:        %s\n", path);
    printf("name:        %s\n", s->name[0] ? s->name : "(none)");
    printf("digest:      sha256:%s\n", rnnd_model_digest(m));
    printf("file digest: sha256:%s\n", rnnd_model_file_digest(m));
    if (s->input_kind == RNND_INPUT_TOKENS)
        printf("input:       tokens, vocab_size %d, embedding_dim %d\n", s->vocab_size,
               s->input_dim);
    else
        printf("input:       vectors, dim %d\n", s->input_dim);
    printf("layers:      %d\n", s->n_layers);
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *ls = &s->layers[l];
        printf("  layer %d:   %s %s, hidden %d, in %d, out %d per direction (%d direction%s, "
               "%d gate%s)\n",
               l, rnnd_cell_name(ls->cell), rnnd_direction_name(ls->direction), ls->hidden,
               ls->in_dim, ls->out_dim, ls->num_directions, ls->num_directions > 1 ? "s" : "",
               ls->gates, ls->gates > 1 ? "s" : "");
        print_layer_options(ls);
        for (int d = 0; d < ls->num_directions; d++) {
            printf("             activations%s: ",
                   ls->num_directions > 1 ? (d ? " (backward)" : " (forward)") : "");
            if (ls->n_act == 0)
                printf("exp, tanh, sigmoid (fixed by the cell)");
            for (int a = 0; a < ls->n_act; a++) {
                if (a)
                    printf(", ");
                print_act(&ls->act[d][a]);
            }
            printf("\n");
        }
    }
    if (s->pool != RNND_POOL_NONE) /* infer then answers one row per sequence */
        printf("pool:        %s (infer: one output row per sequence)\n", rnnd_pool_name(s->pool));
    /* a session step is the head of that step's output: for a mean or max that is a number
     * the source never computes, though it looks like a class score (docs/api.md 4.4) */
    if (s->pool == RNND_POOL_MEAN || s->pool == RNND_POOL_MAX)
        printf("             sessions: each step's head output, not the pooled row "
               "(docs/api.md 4.4)\n");
    if (s->has_head && s->head_short) {
        printf("head:        linear %d -> %d, norm %s\n", s->head_in, s->head_out,
               norm_name(s->head_norm));
    } else if (s->has_head) {
        printf("head:        %d", s->head_in);
        for (int k = 0; k < s->head_n; k++) {
            const rnnd_head_layer *h = &s->head_layers[k];
            printf(" -> %s", rnnd_head_op_name(h->op));
            if (h->op == RNND_HEAD_LINEAR)
                printf(" %d", h->out_dim);
            else if (h->op == RNND_HEAD_LAYERNORM)
                printf(" (eps %g%s)", (double)h->eps, h->affine ? ", affine" : "");
        }
        printf(", norm %s\n", norm_name(s->head_norm));
    } else
        printf("head:        none\n");
    if (s->input_kind == RNND_INPUT_TOKENS && s->n_vocab)
        printf("vocab:       %d strings, tokenizer %s\n", s->n_vocab,
               s->tokenizer[0] ? s->tokenizer : "none");
    else if (s->input_kind == RNND_INPUT_TOKENS)
        printf("vocab:       none (token ids only)\n");
    printf("parameters:  %zu\n", rnnd_model_param_count(m));
    printf("weights:     %s%s\n", rnnd_weights_name(s->weights),
           s->weights == RNND_WEIGHTS_F32 ? ""
               : s->weights == RNND_WEIGHTS_I8
               ? " (matrices 8-bit with a scale per row; integer products on inputs quantized "
                 "per step)"
               : " (matrices half-size; compute in float)");
    printf("output dim:  %d\n", rnnd_model_output_dim(m));
    printf("state:       %zu floats (%zu bytes) per session\n", state, state * sizeof(float));
    printf("stateful:    %s\n", rnnd_model_is_stateful(m) ? "yes" : "no");
    const rnnd_verification *v = rnnd_model_verification(m);
    char why[256];
    int ok = rnnd_model_verified(m, why, sizeof why);
    if (!v) {
        /* --no-verify, a native spec, or a converter older than the check */
        printf("verified:    no (%s)\n", why);
        return;
    }
    if (ok)
        printf("verified:    yes, against the %s source", v->source);
    else
        printf("verified:    no (%s); the record: against the %s source", why, v->source);
    printf(": max abs error %.3g, max rel error %.3g (tolerance %g), lengths", v->max_abs_error,
           v->max_rel_error, v->tolerance);
    for (int i = 0; i < v->n_lengths; i++)
        printf("%s%d", i ? ", " : " ", v->lengths[i]);
    printf(", batch %d\n", v->batch);
    /* what the check did not see: options applied after it */
    if (v->weights_checked[0])
        printf("             weights checked as %s, before %s to the file's %s\n",
               v->weights_checked, s->weights == RNND_WEIGHTS_I8 ? "quantizing" : "rounding",
               rnnd_weights_name(s->weights));
    if (v->norm_checked[0])
        printf("             checked with head norm %s; --norm changed it after the check\n",
               v->norm_checked);
    if (v->vocab_checked || v->initial_state_checked || v->long_length || v->scaled_checked > 0) {
        printf("             also checked:");
        const char *sep = " ";
        if (v->vocab_checked) {
            printf("%s%d distinct token ids", sep, v->vocab_checked);
            sep = ", ";
        }
        if (v->initial_state_checked) {
            printf("%sfrom random initial states", sep);
            sep = ", ";
        }
        if (v->long_length) {
            printf("%s%d sequences of %d steps", sep, v->long_batch, v->long_length);
            sep = ", ";
        }
        if (v->scaled_checked > 0)
            printf("%sinputs scaled by %g", sep, v->scaled_checked);
        printf("\n");
    }
}

/* Set KEY on OBJ, taking the reference of V (a NULL V, from a failed allocation, is
 * reported by the final dump). */
static int put(json_t *obj, const char *key, json_t *v) { return json_object_set_new(obj, key, v); }

/* A float as a JSON real that prints as its shortest decimal (dumped with precision 9). */
static json_t *float_json(float v)
{
    char buf[32];
    return json_real(short_float(v, buf, sizeof buf));
}

static json_t *act_json(const rnnd_activation *a)
{
    json_t *o = json_object();
    int np = act_params(a->kind);
    put(o, "op", json_string(rnnd_act_name(a->kind)));
    if (np >= 1)
        put(o, "alpha", float_json(a->alpha));
    if (np >= 2)
        put(o, "beta", float_json(a->beta));
    return o;
}

static json_t *layer_json(const rnnd_layer_spec *ls)
{
    json_t *o = json_object();
    put(o, "type", json_string(rnnd_cell_name(ls->cell)));
    put(o, "direction", json_string(rnnd_direction_name(ls->direction)));
    put(o, "num_directions", json_integer(ls->num_directions));
    put(o, "hidden_size", json_integer(ls->hidden));
    put(o, "gates", json_integer(ls->gates));
    put(o, "in_dim", json_integer(ls->in_dim));
    put(o, "out_dim", json_integer(ls->out_dim));
    put(o, "clip", ls->has_clip ? float_json(ls->clip) : json_null());
    switch (ls->cell) {
    case RNND_CELL_LSTM:
        put(o, "input_forget", json_boolean(ls->input_forget));
        put(o, "peepholes", json_boolean(ls->peepholes));
        put(o, "forget_gate", json_boolean(ls->forget_gate));
        put(o, "proj_size", json_integer(ls->proj_size));
        put(o, "depth_gate", json_boolean(ls->depth_gate));
        break;
    case RNND_CELL_GRU: put(o, "linear_before_reset", json_integer(ls->linear_before_reset)); break;
    case RNND_CELL_JORDAN: put(o, "output_size", json_integer(ls->output_size)); break;
    case RNND_CELL_CLOCKWORK: {
        json_t *p = json_array();
        for (int k = 0; k < ls->n_periods; k++)
            json_array_append_new(p, json_integer(ls->periods[k]));
        put(o, "periods", p);
        break;
    }
    case RNND_CELL_SLSTM:
        put(o, "heads", json_integer(ls->heads));
        put(o, "forget", json_string(ls->exp_forget ? "exp" : "sigmoid"));
        break;
    }
    json_t *acts = json_array();
    for (int d = 0; d < ls->num_directions; d++) {
        json_t *dir = json_array();
        for (int a = 0; a < ls->n_act; a++)
            json_array_append_new(dir, act_json(&ls->act[d][a]));
        json_array_append_new(acts, dir);
    }
    put(o, "activations", acts);
    return o;
}

/* The verification record, or JSON null for a file without one. */
static json_t *verification_json(const rnnd_model *m)
{
    const rnnd_verification *v = rnnd_model_verification(m);
    if (!v)
        return json_null();
    char why[256];
    json_t *o = json_object();
    int ok = rnnd_model_verified(m, why, sizeof why);
    put(o, "verified", json_boolean(ok));
    if (!ok)
        put(o, "why_not", json_string(why));
    put(o, "digest", v->digest[0] ? json_string(v->digest) : json_null());
    if (v->weights_checked[0])
        put(o, "weights_checked", json_string(v->weights_checked));
    if (v->norm_checked[0])
        put(o, "norm_checked", json_string(v->norm_checked));
    if (v->vocab_checked)
        put(o, "vocab_checked", json_integer(v->vocab_checked));
    if (v->initial_state_checked)
        put(o, "initial_state_checked", json_true());
    if (v->long_length)
        put(o, "long_checked", json_pack("[ii]", v->long_length, v->long_batch));
    if (v->scaled_checked > 0)
        put(o, "scaled_checked", json_real(v->scaled_checked));
    put(o, "source", json_string(v->source));
    put(o, "tolerance", json_real(v->tolerance));
    put(o, "max_abs_error", json_real(v->max_abs_error));
    put(o, "max_rel_error", json_real(v->max_rel_error));
    json_t *ls = json_array();
    for (int i = 0; i < v->n_lengths; i++)
        json_array_append_new(ls, json_integer(v->lengths[i]));
    put(o, "lengths", ls);
    put(o, "batch", json_integer(v->batch));
    return o;
}

static json_t *model_json(const char *path, const rnnd_model *m)
{
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    size_t state = rnnd_model_state_floats(m);
    json_t *o = json_object();

    put(o, "file", json_string(path));
    put(o, "name", json_string(s->name));
    put(o, "digest", json_string(rnnd_model_digest(m)));
    put(o, "file_digest", json_string(rnnd_model_file_digest(m)));
    json_t *in = json_object();
    if (s->input_kind == RNND_INPUT_TOKENS) {
        put(in, "kind", json_string("tokens"));
        put(in, "vocab_size", json_integer(s->vocab_size));
        put(in, "embedding_dim", json_integer(s->input_dim));
    } else {
        put(in, "kind", json_string("vectors"));
        put(in, "dim", json_integer(s->input_dim));
    }
    put(o, "input", in);
    json_t *layers = json_array();
    for (int l = 0; l < s->n_layers; l++)
        json_array_append_new(layers, layer_json(&s->layers[l]));
    put(o, "layers", layers);
    put(o, "pool", json_string(rnnd_pool_name(s->pool)));
    if (s->has_head) {
        json_t *h = json_object();
        put(h, "in_dim", json_integer(s->head_in));
        put(h, "out_dim", json_integer(s->head_out));
        put(h, "norm", json_string(norm_name(s->head_norm)));
        if (!s->head_short) {
            json_t *hl = json_array();
            for (int k = 0; k < s->head_n; k++) {
                const rnnd_head_layer *x = &s->head_layers[k];
                json_t *e = json_object();
                put(e, "op", json_string(rnnd_head_op_name(x->op)));
                if (x->op == RNND_HEAD_LINEAR) {
                    put(e, "in_dim", json_integer(x->in_dim));
                    put(e, "out_dim", json_integer(x->out_dim));
                } else if (x->op == RNND_HEAD_LAYERNORM) {
                    put(e, "eps", json_real(x->eps));
                    put(e, "affine", json_boolean(x->affine));
                }
                json_array_append_new(hl, e);
            }
            put(h, "layers", hl);
        }
        put(o, "head", h);
    } else {
        put(o, "head", json_null());
    }
    put(o, "vocab_size", json_integer(s->n_vocab));
    put(o, "tokenizer", s->tokenizer[0] ? json_string(s->tokenizer) : json_null());
    put(o, "parameters", json_integer((json_int_t)rnnd_model_param_count(m)));
    put(o, "weights", json_string(rnnd_weights_name(s->weights)));
    put(o, "output_dim", json_integer(rnnd_model_output_dim(m)));
    put(o, "state_floats", json_integer((json_int_t)state));
    put(o, "state_bytes", json_integer((json_int_t)(state * sizeof(float))));
    put(o, "stateful", json_boolean(rnnd_model_is_stateful(m)));
    put(o, "verification", verification_json(m));
    return o;
}

int rnnd_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int as_json = 0, c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "rnnd inspect: expected exactly one FILE\n\n");
        usage(stderr);
        return 2;
    }
    const char *path = argv[optind];
    char err[512] = "";
    rnnd_model *m = NULL;
    if (rnnd_model_open(path, &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err[0] ? err : "cannot open the model");
        return 1;
    }
    int status = 0;
    if (as_json) {
        json_t *o = model_json(path, m);
        char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
        if (text)
            printf("%s\n", text);
        else {
            fprintf(stderr, "%s: out of memory\n", path);
            status = 1;
        }
        free(text);
        json_decref(o);
    } else {
        print_text(path, m);
    }
    if (fflush(stdout)) {
        fprintf(stderr, "%s: cannot write the output\n", path);
        status = 1;
    }
    rnnd_model_unref(m);
    return status;
}
