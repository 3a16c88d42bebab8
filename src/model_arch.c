/* The architecture JSON of a model file (docs/model-format.md, "The architecture"): parsed
 * and validated into rnnd_model_spec, and the list of tensors it requires. Every check
 * names the key path of the offending value. */
#include "model_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "rnnd/status.h"

typedef struct actx {
    const char *label;
    char *err;
    size_t errlen;
} actx;

#define BAD(c, key, ...) \
    rnnd_model_fail((c)->err, (c)->errlen, (c)->label, (key), RNND_ERR_FORMAT, __VA_ARGS__)

static const char *const act_names[RNND_ACT_COUNT] = {
    "Sigmoid",    "Tanh",   "Relu", "HardSigmoid", "LeakyRelu", "ThresholdedRelu",
    "ScaledTanh", "Affine", "Elu",  "Softsign",    "Softplus",
};

/* ONNX defaults for alpha and beta (0 where the function has no such parameter). */
static const float act_defaults[RNND_ACT_COUNT][2] = {
    [RNND_ACT_HARDSIGMOID] = {0.2f, 0.5f},     [RNND_ACT_LEAKYRELU] = {0.01f, 0.0f},
    [RNND_ACT_THRESHOLDEDRELU] = {1.0f, 0.0f}, [RNND_ACT_SCALEDTANH] = {1.0f, 1.0f},
    [RNND_ACT_AFFINE] = {1.0f, 0.0f},          [RNND_ACT_ELU] = {1.0f, 0.0f},
};

static const char *const cell_names[] = {"rnn",    "lstm",    "gru",   "jordan",
                                         "mingru", "minlstm", "slstm", "clockwork"};
_Static_assert(sizeof cell_names / sizeof *cell_names == RNND_CELL_COUNT, "one name a cell");
static const char *const dir_names[] = {"forward", "reverse", "bidirectional"};
static const char *const norm_names[] = {"none", "softmax", "log_softmax"};
static const char *const weights_names[] = {"f32", "bf16", "f16", "int8"};
static const char *const pool_names[RNND_POOL_COUNT] = {"none", "last", "final_state", "mean",
                                                        "max"};

const char *rnnd_act_name(int kind)
{
    return kind >= 0 && kind < RNND_ACT_COUNT ? act_names[kind] : "unknown";
}

const char *rnnd_cell_name(int cell)
{
    return cell >= 0 && cell < RNND_CELL_COUNT ? cell_names[cell] : "unknown";
}

int rnnd_cell_is_min(int cell) { return cell == RNND_CELL_MINGRU || cell == RNND_CELL_MINLSTM; }

size_t rnnd_layer_cell_floats(const rnnd_layer_spec *L)
{
    return L->cell == RNND_CELL_LSTM ? (size_t)L->hidden
        : L->cell == RNND_CELL_SLSTM ? 3 * (size_t)L->hidden
                                     : 0;
}

size_t rnnd_layer_extra_state(const rnnd_layer_spec *L)
{
    return rnnd_layer_cell_floats(L) + (L->cell == RNND_CELL_CLOCKWORK ? 2 : 0);
}

/* Two floats rather than one: a float holds whole numbers exactly only up to 2^24, and a
 * session can step past that; each half stays below 2^24, so the state stays finite floats
 * that snapshots and exports copy bit for bit. */
#define CLOCK_HALF 16777216.0f /* 2^24 */

uint64_t rnnd_clock_get(const float *st)
{
    float lo = st[0], hi = st[1];
    if (!(lo >= 0.0f && lo < CLOCK_HALF && lo == (float)(uint32_t)lo))
        lo = 0.0f;
    if (!(hi >= 0.0f && hi < CLOCK_HALF && hi == (float)(uint32_t)hi))
        hi = 0.0f;
    return ((uint64_t)(uint32_t)hi << 24) | (uint64_t)(uint32_t)lo;
}

void rnnd_clock_put(float *st, uint64_t t)
{
    t %= RNND_CLOCK_WRAP;
    st[0] = (float)(uint32_t)(t & 0xffffff);
    st[1] = (float)(uint32_t)(t >> 24);
}

const char *rnnd_direction_name(int dir)
{
    return dir >= 0 && dir < 3 ? dir_names[dir] : "unknown";
}

const char *rnnd_pool_name(int pool)
{
    return pool >= 0 && pool < RNND_POOL_COUNT ? pool_names[pool] : "unknown";
}

const char *rnnd_weights_name(int weights)
{
    return weights >= 0 && weights < 4 ? weights_names[weights] : "unknown";
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Refuse any key of OBJ not in ALLOWED (NULL-terminated); a typo must not pass silently. */
static int check_keys(actx *c, json_t *obj, const char *path, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(k, *a) == 0;
        if (!ok) {
            char key[160];
            snprintf(key, sizeof key, "%s.%s", path, k);
            return BAD(c, key, "unknown key");
        }
    }
    return 0;
}

/* An integer in [LO, HI]. Absent or null gives DFLT, unless DFLT < LO: then it is required. */
static int get_int(actx *c, const json_t *obj, const char *path, const char *name, long long lo,
                   long long hi, long long dflt, int *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", path, name);
    const json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        if (dflt < lo)
            return BAD(c, key, "missing (an integer %lld to %lld)", lo, hi);
        *out = (int)dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return BAD(c, key, "expected an integer, got %s", type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return BAD(c, key, "%lld is out of range %lld to %lld", (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_bool(actx *c, const json_t *obj, const char *path, const char *name, int dflt,
                    int *out)
{
    const json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) {
        char key[160];
        snprintf(key, sizeof key, "%s.%s", path, name);
        return BAD(c, key, "expected true or false, got %s", type_name(v));
    }
    *out = json_is_true(v);
    return 0;
}

/* A string among NAMES (N of them) into *OUT; absent or null gives DFLT (-1: required). */
static int get_enum(actx *c, const json_t *obj, const char *path, const char *name,
                    const char *const *names, int n, int dflt, int *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", path, name);
    const json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        if (dflt < 0)
            return BAD(c, key, "missing");
        *out = dflt;
        return 0;
    }
    if (!json_is_string(v))
        return BAD(c, key, "expected a string, got %s", type_name(v));
    for (int i = 0; i < n; i++) {
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return BAD(c, key, "unknown value \"%.40s\"", json_string_value(v));
}

/* A finite number representable as a float. */
static int get_float(actx *c, const json_t *v, const char *key, float *out)
{
    if (!json_is_number(v))
        return BAD(c, key, "expected a number, got %s", type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || fabs(x) > FLT_MAX)
        return BAD(c, key, "%g does not fit a float", x);
    *out = (float)x;
    return 0;
}

static const char *const act_keys[] = {"op", "alpha", "beta", NULL};

static int parse_act(actx *c, json_t *v, const char *path, rnnd_activation *a)
{
    if (!json_is_object(v))
        return BAD(c, path, "expected an object {\"op\": NAME}, got %s", type_name(v));
    int rc = check_keys(c, v, path, act_keys);
    if (rc)
        return rc;
    rc = get_enum(c, v, path, "op", act_names, RNND_ACT_COUNT, -1, &a->kind);
    if (rc)
        return rc;
    a->alpha = act_defaults[a->kind][0];
    a->beta = act_defaults[a->kind][1];
    char key[160];
    const json_t *x = json_object_get(v, "alpha");
    if (x && !json_is_null(x)) {
        snprintf(key, sizeof key, "%.140s.alpha", path);
        if ((rc = get_float(c, x, key, &a->alpha)))
            return rc;
    }
    x = json_object_get(v, "beta");
    if (x && !json_is_null(x)) {
        snprintf(key, sizeof key, "%.140s.beta", path);
        if ((rc = get_float(c, x, key, &a->beta)))
            return rc;
    }
    return 0;
}

static void default_acts(rnnd_layer_spec *L)
{
    static const rnnd_activation sig = {RNND_ACT_SIGMOID, 0, 0};
    static const rnnd_activation tnh = {RNND_ACT_TANH, 0, 0};
    static const rnnd_activation ident = {RNND_ACT_AFFINE, 1.0f, 0.0f};
    for (int d = 0; d < 2; d++) {
        switch (L->cell) {
        case RNND_CELL_RNN:
        case RNND_CELL_CLOCKWORK: L->act[d][0] = tnh; break;
        case RNND_CELL_LSTM:
            L->act[d][0] = sig;
            L->act[d][1] = tnh;
            L->act[d][2] = tnh;
            break;
        case RNND_CELL_GRU:
            L->act[d][0] = sig;
            L->act[d][1] = tnh;
            break;
        case RNND_CELL_JORDAN:
            L->act[d][0] = tnh;
            L->act[d][1] = ident;
            break;
        case RNND_CELL_MINGRU:
        case RNND_CELL_MINLSTM:
            L->act[d][0] = sig;
            L->act[d][1] = ident;
            break;
        }
    }
}

static int parse_acts(actx *c, json_t *v, const char *path, rnnd_layer_spec *L)
{
    if (!v || json_is_null(v))
        return 0; /* defaults already in place */
    if (!json_is_array(v))
        return BAD(c, path, "expected an array of %d list(s), got %s", L->num_directions,
                   type_name(v));
    if ((int)json_array_size(v) != L->num_directions)
        return BAD(c, path, "%zu lists for %d direction(s)", json_array_size(v), L->num_directions);
    for (int d = 0; d < L->num_directions; d++) {
        const json_t *list = json_array_get(v, (size_t)d);
        char key[160];
        snprintf(key, sizeof key, "%s[%d]", path, d);
        if (!json_is_array(list))
            return BAD(c, key, "expected an array of %d activations, got %s", L->n_act,
                       type_name(list));
        if ((int)json_array_size(list) != L->n_act)
            return BAD(c, key, "%zu activations, a %s layer takes %d", json_array_size(list),
                       cell_names[L->cell], L->n_act);
        for (int i = 0; i < L->n_act; i++) {
            snprintf(key, sizeof key, "%s[%d][%d]", path, d, i);
            int rc = parse_act(c, json_array_get(list, (size_t)i), key, &L->act[d][i]);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static const char *const layer_keys[] = {
    "type",         "hidden_size", "direction",   "activations", "clip",
    "input_forget", "peepholes",   "forget_gate", "proj_size",   "linear_before_reset",
    "output_size",  "heads",       "forget",      "periods",     "depth_gate",
    NULL,
};

/* A key the layer's type does not use: absent, null, or its default value. */
static int unused_key(actx *c, const json_t *layer, const char *path, const char *name,
                      int is_default)
{
    const json_t *v = json_object_get(layer, name);
    if (!v || json_is_null(v) || is_default)
        return 0;
    char key[160];
    snprintf(key, sizeof key, "%s.%s", path, name);
    return BAD(c, key, "not used by a %s layer: leave it out",
               json_string_value(json_object_get(layer, "type")));
}

/* A clockwork layer's "periods": 1 to RNND_MAX_PERIODS strictly increasing positive
 * integers, as many as divide hidden_size evenly. */
static int parse_periods(actx *c, const json_t *layer, const char *path, rnnd_layer_spec *L)
{
    char key[96];
    snprintf(key, sizeof key, "%s.periods", path);
    const json_t *v = json_object_get(layer, "periods");
    if (L->cell != RNND_CELL_CLOCKWORK) {
        if (v && !json_is_null(v))
            return BAD(c, key, "not used by a %s layer: leave it out", cell_names[L->cell]);
        return 0;
    }
    if (!v || json_is_null(v))
        return BAD(c, key,
                   "missing (a clockwork layer needs a list of strictly increasing "
                   "positive integers, one period per module)");
    if (!json_is_array(v))
        return BAD(c, key, "expected a list of integers, got %s", type_name(v));
    size_t m = json_array_size(v);
    if (m < 1 || m > RNND_MAX_PERIODS)
        return BAD(c, key, "%zu periods: a clockwork layer has 1 to %d modules", m,
                   RNND_MAX_PERIODS);
    for (size_t k = 0; k < m; k++) {
        const json_t *x = json_array_get(v, k);
        char ek[112];
        snprintf(ek, sizeof ek, "%s[%zu]", key, k);
        if (!json_is_integer(x))
            return BAD(c, ek, "expected an integer, got %s", type_name(x));
        json_int_t p = json_integer_value(x);
        if (p < 1 || p > INT32_MAX)
            return BAD(c, ek, "%lld is out of range 1 to %ld", (long long)p, (long)INT32_MAX);
        if (k > 0 && p <= L->periods[k - 1])
            return BAD(c, ek,
                       "%lld is not above the period before it (%d): the periods must "
                       "be strictly increasing",
                       (long long)p, L->periods[k - 1]);
        L->periods[k] = (int)p;
    }
    L->n_periods = (int)m;
    if (L->hidden % L->n_periods != 0)
        return BAD(c, key, "%d modules do not divide hidden_size %d evenly", L->n_periods,
                   L->hidden);
    return 0;
}

/* An slstm layer's "heads" (K: H divisible by K) and "forget" ("exp" or "sigmoid"); both
 * required, since other tools disagree on the defaults. */
static int parse_slstm(actx *c, const json_t *v, const char *path, rnnd_layer_spec *L)
{
    static const char *const forget_names[] = {"sigmoid", "exp"};
    char key[96];
    int rc = get_int(c, v, path, "heads", 1, RNND_MAX_DIM, -1, &L->heads);
    if (rc)
        return rc;
    snprintf(key, sizeof key, "%s.forget", path);
    const json_t *f = json_object_get(v, "forget");
    if (!f || json_is_null(f))
        return BAD(c, key,
                   "missing (\"exp\" or \"sigmoid\": how the forget gate's "
                   "pre-activation becomes log f)");
    if ((rc = get_enum(c, v, path, "forget", forget_names, 2, -1, &L->exp_forget)))
        return json_is_string(f)
            ? BAD(c, key, "unknown value \"%.40s\" (expected \"exp\" or \"sigmoid\")",
                  json_string_value(f))
            : rc;
    if (L->hidden % L->heads != 0) {
        snprintf(key, sizeof key, "%s.heads", path);
        return BAD(c, key,
                   "%d does not divide hidden_size %d (each head holds hidden_size / "
                   "heads units)",
                   L->heads, L->hidden);
    }
    return 0;
}

static int parse_layer(actx *c, json_t *v, int l, int in_dim, rnnd_layer_spec *L)
{
    char path[64];
    snprintf(path, sizeof path, "architecture.layers[%d]", l);
    if (!json_is_object(v))
        return BAD(c, path, "expected an object, got %s", type_name(v));
    int rc = check_keys(c, v, path, layer_keys);
    if (!rc)
        rc = get_enum(c, v, path, "type", cell_names, RNND_CELL_COUNT, -1, &L->cell);
    if (!rc)
        rc = get_int(c, v, path, "hidden_size", 1, RNND_MAX_DIM, 0, &L->hidden);
    if (!rc)
        rc = get_enum(c, v, path, "direction", dir_names, 3, RNND_DIR_FORWARD, &L->direction);
    if (!rc)
        rc = get_bool(c, v, path, "input_forget", 0, &L->input_forget);
    if (!rc)
        rc = get_bool(c, v, path, "peepholes", 0, &L->peepholes);
    if (!rc)
        rc = get_bool(c, v, path, "forget_gate", 1, &L->forget_gate);
    if (!rc)
        rc = get_int(c, v, path, "proj_size", 0, RNND_MAX_DIM, 0, &L->proj_size);
    if (!rc)
        rc = get_bool(c, v, path, "depth_gate", 0, &L->depth_gate);
    if (!rc)
        rc = get_int(c, v, path, "linear_before_reset", 0, 1, 0, &L->linear_before_reset);
    if (!rc)
        rc = get_int(c, v, path, "output_size", 0, RNND_MAX_DIM, 0, &L->output_size);
    if (rc)
        return rc;
    if (L->cell == RNND_CELL_SLSTM)
        rc = parse_slstm(c, v, path, L);
    else if (!(rc = unused_key(c, v, path, "heads", 0)))
        rc = unused_key(c, v, path, "forget", 0);
    if (rc)
        return rc;

    const json_t *clip = json_object_get(v, "clip");
    if (clip && !json_is_null(clip)) {
        char key[96];
        snprintf(key, sizeof key, "%s.clip", path);
        if ((rc = get_float(c, clip, key, &L->clip)))
            return rc;
        if (!(L->clip > 0))
            return BAD(c, key, "must be positive, got %g", (double)L->clip);
        L->has_clip = 1;
    }

    int lstm = L->cell == RNND_CELL_LSTM;
    if (!lstm &&
        ((rc = unused_key(c, v, path, "input_forget", !L->input_forget)) ||
         (rc = unused_key(c, v, path, "peepholes", !L->peepholes)) ||
         (rc = unused_key(c, v, path, "proj_size", L->proj_size == 0)) ||
         (rc = unused_key(c, v, path, "depth_gate", !L->depth_gate))))
        return rc;
    if (L->cell != RNND_CELL_GRU &&
        (rc = unused_key(c, v, path, "linear_before_reset", L->linear_before_reset == 0)))
        return rc;
    if (L->cell != RNND_CELL_JORDAN &&
        (rc = unused_key(c, v, path, "output_size", L->output_size == 0)))
        return rc;
    if ((rc = parse_periods(c, v, path, L)))
        return rc;
    /* the min cells' equations have no clip (their pre-activations are x's alone); nor have
     * the sLSTM's and the clockwork RNN's */
    if ((rnnd_cell_is_min(L->cell) || L->cell == RNND_CELL_SLSTM ||
         L->cell == RNND_CELL_CLOCKWORK) &&
        L->has_clip) {
        char key[96];
        snprintf(key, sizeof key, "%s.clip", path);
        return BAD(c, key, "not used by a %s layer: leave it out", cell_names[L->cell]);
    }
    if (L->cell == RNND_CELL_JORDAN && L->output_size == 0) {
        char key[96];
        snprintf(key, sizeof key, "%s.output_size", path);
        return BAD(c, key, "missing (a jordan layer needs an integer 1 to %d)", RNND_MAX_DIM);
    }
    if (lstm && L->input_forget && !L->forget_gate) {
        char key[96];
        snprintf(key, sizeof key, "%s.input_forget", path);
        return BAD(c, key, "needs a forget gate (forget_gate is false)");
    }

    if (!lstm)
        L->forget_gate = 1; /* "false" reads as neutral too; the field is lstm's */
    L->num_directions = L->direction == RNND_DIR_BIDIRECTIONAL ? 2 : 1;
    L->in_dim = in_dim;
    switch (L->cell) {
    case RNND_CELL_RNN:
        L->gates = 1;
        L->n_act = 1;
        L->out_dim = L->hidden;
        break;
    case RNND_CELL_LSTM:
        L->gates = L->forget_gate ? 4 : 3;
        L->n_act = 3;
        L->out_dim = L->proj_size > 0 ? L->proj_size : L->hidden;
        break;
    case RNND_CELL_GRU:
        L->gates = 3;
        L->n_act = 2;
        L->out_dim = L->hidden;
        break;
    case RNND_CELL_JORDAN:
        L->gates = 1;
        L->n_act = 2;
        L->out_dim = L->output_size;
        break;
    case RNND_CELL_MINGRU: /* rows z, h */
        L->gates = 2;
        L->n_act = 2;
        L->out_dim = L->hidden;
        break;
    case RNND_CELL_MINLSTM: /* rows f, i, h */
        L->gates = 3;
        L->n_act = 2;
        L->out_dim = L->hidden;
        break;
    case RNND_CELL_CLOCKWORK: /* rows of the modules in order */
        L->gates = 1;
        L->n_act = 1;
        L->out_dim = L->hidden;
        break;
    case RNND_CELL_SLSTM: /* rows i, f, z, o; exp, tanh and sigmoid are fixed */
        L->gates = 4;
        L->n_act = 0;
        L->out_dim = L->hidden;
        break;
    }
    default_acts(L);
    char key[96];
    snprintf(key, sizeof key, "%s.activations", path);
    if (L->cell == RNND_CELL_SLSTM) {
        const json_t *a = json_object_get(v, "activations");
        if (a && !json_is_null(a))
            return BAD(c, key,
                       "not used by a slstm layer (its exp, tanh and sigmoid are part "
                       "of the cell): leave it out");
        return 0;
    }
    return parse_acts(c, json_object_get(v, "activations"), key, L);
}

/* A depth-gated lstm (layers[L], parsed) reads, at each step, the new cell of the layer
 * below: that needs one (an lstm), at the same step (both forward), unit for unit (the same
 * H), and a cell that is the layer's whole state (no projection, which would also make the
 * two h differ). */
static int check_depth_gate(actx *c, const rnnd_model_spec *s, int l)
{
    const rnnd_layer_spec *L = &s->layers[l];
    char key[96];
    snprintf(key, sizeof key, "architecture.layers[%d].depth_gate", l);
    if (l == 0)
        return BAD(c, key, "the first layer has no layer below whose cell it could gate");
    const rnnd_layer_spec *B = &s->layers[l - 1];
    if (L->direction != RNND_DIR_FORWARD)
        return BAD(c, key, "a depth-gated layer runs forward only (direction is \"%s\")",
                   dir_names[L->direction]);
    if (L->proj_size > 0)
        return BAD(c, key, "a depth-gated layer has no projection (proj_size is %d)", L->proj_size);
    if (B->cell != RNND_CELL_LSTM)
        return BAD(c, key, "layers[%d] is %s: the layer below must be an lstm", l - 1,
                   cell_names[B->cell]);
    if (B->direction != RNND_DIR_FORWARD)
        return BAD(c, key, "layers[%d] runs %s: the layer below must run forward", l - 1,
                   dir_names[B->direction]);
    if (B->proj_size > 0)
        return BAD(c, key,
                   "layers[%d] has proj_size %d: the layer below must have no "
                   "projection",
                   l - 1, B->proj_size);
    if (B->hidden != L->hidden)
        return BAD(c, key, "layers[%d] has hidden_size %d, this layer %d: they must be equal",
                   l - 1, B->hidden, L->hidden);
    return 0;
}

static const char *const tokens_keys[] = {"kind", "vocab_size", "embedding_dim", NULL};
static const char *const vectors_keys[] = {"kind", "dim", NULL};

static int parse_input(actx *c, json_t *v, rnnd_model_spec *s)
{
    const char *path = "architecture.input";
    static const char *const kinds[] = {"tokens", "vectors"};
    if (!v)
        return BAD(c, path, "missing");
    if (!json_is_object(v))
        return BAD(c, path, "expected an object, got %s", type_name(v));
    int rc = get_enum(c, v, path, "kind", kinds, 2, -1, &s->input_kind);
    if (rc)
        return rc;
    if (s->input_kind == RNND_INPUT_TOKENS) {
        if ((rc = check_keys(c, v, path, tokens_keys)) ||
            (rc = get_int(c, v, path, "vocab_size", 1, RNND_MAX_DIM, 0, &s->vocab_size)))
            return rc;
        return get_int(c, v, path, "embedding_dim", 1, RNND_MAX_DIM, 0, &s->input_dim);
    }
    if ((rc = check_keys(c, v, path, vectors_keys)))
        return rc;
    return get_int(c, v, path, "dim", 1, RNND_MAX_DIM, 0, &s->input_dim);
}

static const char *const head_keys[] = {"out_dim", "in_dim", "norm", "layers", NULL};
static const char *const head_op_names[RNND_HEAD_OP_COUNT] = {
    "linear", "relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "layernorm",
};
static int head_op_known(const char *name)
{
    for (int i = 0; i < RNND_HEAD_OP_COUNT; i++)
        if (strcmp(name, head_op_names[i]) == 0)
            return 1;
    return 0;
}

static const char *const head_linear_keys[] = {"op", "in_dim", "out_dim", NULL};
static const char *const head_ln_keys[] = {"op", "eps", "affine", NULL};
static const char *const head_act_keys[] = {"op", NULL};

const char *rnnd_head_op_name(int op)
{
    return op >= 0 && op < RNND_HEAD_OP_COUNT ? head_op_names[op] : "unknown";
}

/* One entry of head.layers reading WIDTH floats; sets its out_dim. */
static int parse_head_layer(actx *c, json_t *v, int k, int width, rnnd_head_layer *h)
{
    char path[64], key[96];
    snprintf(path, sizeof path, "architecture.head.layers[%d]", k);
    if (!json_is_object(v))
        return BAD(c, path, "expected an object {\"op\": ...}, got %s", type_name(v));
    const json_t *op = json_object_get(v, "op");
    int rc;
    snprintf(key, sizeof key, "%s.op", path);
    if (op && json_is_string(op) && !head_op_known(json_string_value(op)))
        return BAD(c, key,
                   "unknown op \"%.40s\" (expected linear, relu, tanh, sigmoid, gelu, "
                   "gelu_tanh or layernorm)",
                   json_string_value(op));
    if ((rc = get_enum(c, v, path, "op", head_op_names, RNND_HEAD_OP_COUNT, -1, &h->op)))
        return rc;
    h->in_dim = h->out_dim = width;
    if (h->op == RNND_HEAD_LINEAR) {
        if ((rc = check_keys(c, v, path, head_linear_keys)) ||
            (rc = get_int(c, v, path, "in_dim", 1, 2 * RNND_MAX_DIM, 0, &h->in_dim)) ||
            (rc = get_int(c, v, path, "out_dim", 1, RNND_MAX_DIM, 0, &h->out_dim)))
            return rc;
        if (h->in_dim != width) {
            snprintf(key, sizeof key, "%s.in_dim", path);
            return BAD(c, key, "%d, but %s gives %d (the dims must chain)", h->in_dim,
                       k ? "the layer before" : "the head's input (head.in_dim)", width);
        }
        return 0;
    }
    if (h->op != RNND_HEAD_LAYERNORM)
        return check_keys(c, v, path, head_act_keys);
    if ((rc = check_keys(c, v, path, head_ln_keys)) ||
        (rc = get_bool(c, v, path, "affine", 1, &h->affine)))
        return rc;
    h->eps = 1e-5f; /* PyTorch's default */
    const json_t *eps = json_object_get(v, "eps");
    if (eps && !json_is_null(eps)) {
        snprintf(key, sizeof key, "%s.eps", path);
        if ((rc = get_float(c, eps, key, &h->eps)))
            return rc;
        if (!(h->eps > 0.0f))
            return BAD(c, key, "%g, must be a positive number", (double)h->eps);
    }
    return 0;
}

static int parse_head(actx *c, json_t *v, int last_out, rnnd_model_spec *s)
{
    const char *path = "architecture.head";
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return BAD(c, path, "expected an object or null, got %s", type_name(v));
    int rc = check_keys(c, v, path, head_keys);
    if (!rc)
        rc = get_int(c, v, path, "out_dim", 1, RNND_MAX_DIM, 0, &s->head_out);
    if (!rc)
        rc = get_int(c, v, path, "in_dim", 1, 2 * RNND_MAX_DIM, 0, &s->head_in);
    if (!rc)
        rc = get_enum(c, v, path, "norm", norm_names, 3, RNND_NORM_NONE, &s->head_norm);
    if (rc)
        return rc;
    if (s->head_in != last_out)
        return BAD(c, "architecture.head.in_dim", "%d, but the last layer outputs %d", s->head_in,
                   last_out);
    const json_t *layers = json_object_get(v, "layers");
    if (!layers || json_is_null(layers)) {
        /* the short form: one linear, tensors head.weight and head.bias */
        s->head_short = 1;
        s->head_n = 1;
        s->head_layers[0] = (rnnd_head_layer){
            .op = RNND_HEAD_LINEAR,
            .in_dim = s->head_in,
            .out_dim = s->head_out,
        };
        s->has_head = 1;
        return 0;
    }
    if (!json_is_array(layers))
        return BAD(c, "architecture.head.layers", "expected an array or null, got %s",
                   type_name(layers));
    size_t n = json_array_size(layers);
    if (n < 1 || n > RNND_MAX_HEAD_LAYERS)
        return BAD(c, "architecture.head.layers", "%zu layers, must be 1 to %d", n,
                   RNND_MAX_HEAD_LAYERS);
    int width = s->head_in;
    for (size_t k = 0; k < n; k++) {
        rnnd_head_layer *h = &s->head_layers[k];
        if ((rc = parse_head_layer(c, json_array_get(layers, k), (int)k, width, h)))
            return rc;
        width = h->out_dim;
    }
    if (width != s->head_out)
        return BAD(c, "architecture.head.out_dim", "%d, but the head's layers give %d", s->head_out,
                   width);
    s->head_n = (int)n;
    s->has_head = 1;
    return 0;
}

/* The vocabulary goes into one allocation: the pointer array, then the strings. */
static int parse_vocab(actx *c, const json_t *v, rnnd_model_spec *s)
{
    const char *path = "architecture.vocab";
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return BAD(c, path, "expected an array of strings or null, got %s", type_name(v));
    if (s->input_kind != RNND_INPUT_TOKENS)
        return BAD(c, path, "only a tokens input has a vocabulary");
    size_t n = json_array_size(v);
    if (n != (size_t)s->vocab_size)
        return BAD(c, path, "%zu strings, but input.vocab_size is %d", n, s->vocab_size);
    size_t bytes = n * sizeof(char *);
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(v, i);
        if (!json_is_string(t)) {
            char key[64];
            snprintf(key, sizeof key, "%s[%zu]", path, i);
            return BAD(c, key, "expected a string, got %s", type_name(t));
        }
        /* jansson has checked the UTF-8 and refuses \u0000 (no JSON_ALLOW_NUL), so the
         * strings are valid NUL-terminated UTF-8; the sum cannot overflow (header <= 64 MiB) */
        bytes += json_string_length(t) + 1;
    }
    char **vocab = malloc(bytes);
    if (!vocab)
        return rnnd_model_fail(c->err, c->errlen, c->label, path, RNND_ERR_NOMEM, "out of memory");
    char *p = (char *)(vocab + n);
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(v, i);
        size_t len = json_string_length(t);
        memcpy(p, json_string_value(t), len + 1);
        vocab[i] = p;
        p += len + 1;
    }
    s->vocab = vocab;
    s->n_vocab = (int)n;
    return 0;
}

static const char *const top_keys[] = {
    "format_version", "name",  "input",     "layers",  "pool",
    "head",           "vocab", "tokenizer", "weights", NULL,
};

static int parse_top(actx *c, json_t *a, rnnd_model_spec *s)
{
    const char *path = "architecture";
    if (!json_is_object(a))
        return BAD(c, path, "expected a JSON object, got %s", type_name(a));
    int rc = check_keys(c, a, path, top_keys);
    if (rc)
        return rc;
    const json_t *fv = json_object_get(a, "format_version");
    if (!fv)
        return BAD(c, "architecture.format_version", "missing");
    if (!json_is_integer(fv) || json_integer_value(fv) != 1)
        return BAD(c, "architecture.format_version",
                   "unsupported version (this rnnd reads version 1)");

    const json_t *name = json_object_get(a, "name");
    if (name && !json_is_null(name)) {
        if (!json_is_string(name))
            return BAD(c, "architecture.name", "expected a string, got %s", type_name(name));
        if (json_string_length(name) >= sizeof s->name)
            return BAD(c, "architecture.name", "longer than %zu bytes", sizeof s->name - 1);
        memcpy(s->name, json_string_value(name), json_string_length(name) + 1);
    }

    const json_t *wt = json_object_get(a, "weights");
    if (wt && !json_is_null(wt)) {
        if (!json_is_string(wt))
            return BAD(c, "architecture.weights", "expected a string, got %s", type_name(wt));
        s->weights = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(json_string_value(wt), weights_names[i]) == 0)
                s->weights = i;
        if (s->weights < 0)
            return BAD(c, "architecture.weights",
                       "unknown value \"%.40s\" (expected f32, bf16, "
                       "f16 or int8)",
                       json_string_value(wt));
    }

    if ((rc = parse_input(c, json_object_get(a, "input"), s)))
        return rc;

    const json_t *layers = json_object_get(a, "layers");
    if (!layers)
        return BAD(c, "architecture.layers", "missing");
    if (!json_is_array(layers))
        return BAD(c, "architecture.layers", "expected an array, got %s", type_name(layers));
    size_t nl = json_array_size(layers);
    if (nl < 1 || nl > RNND_MAX_LAYERS)
        return BAD(c, "architecture.layers", "%zu layers, must be 1 to %d", nl, RNND_MAX_LAYERS);
    s->n_layers = (int)nl;
    int in = s->input_dim;
    for (int l = 0; l < s->n_layers; l++) {
        rnnd_layer_spec *L = &s->layers[l];
        if ((rc = parse_layer(c, json_array_get(layers, (size_t)l), l, in, L)))
            return rc;
        if (L->depth_gate && (rc = check_depth_gate(c, s, l)))
            return rc;
        in = L->out_dim * L->num_directions;
    }

    const json_t *pool = json_object_get(a, "pool");
    if (pool && !json_is_null(pool)) {
        if (!json_is_string(pool))
            return BAD(c, "architecture.pool", "expected a string or null, got %s",
                       type_name(pool));
        s->pool = -1;
        for (int i = 0; i < RNND_POOL_COUNT; i++)
            if (strcmp(json_string_value(pool), pool_names[i]) == 0)
                s->pool = i;
        if (s->pool < 0)
            return BAD(c, "architecture.pool",
                       "unknown value \"%.40s\" (expected none, last, "
                       "final_state, mean or max)",
                       json_string_value(pool));
    }
    /* every pool keeps the width of a step's output, so the head reads the same in_dim */
    if ((rc = parse_head(c, json_object_get(a, "head"), in, s)))
        return rc;

    const json_t *tok = json_object_get(a, "tokenizer");
    if (tok && !json_is_null(tok)) {
        static const char *const toks[] = {"char", "byte"};
        int t;
        if ((rc = get_enum(c, a, path, "tokenizer", toks, 2, -1, &t)))
            return rc;
        if (s->input_kind != RNND_INPUT_TOKENS)
            return BAD(c, "architecture.tokenizer", "only a tokens input has a tokenizer");
        if (t == 0 && !json_is_array(json_object_get(a, "vocab")))
            return BAD(c, "architecture.tokenizer", "\"char\" needs a vocab");
        /* byte ids are the byte values: every one must be a valid id */
        if (t == 1 && s->vocab_size < 256)
            return BAD(c, "architecture.tokenizer",
                       "tokenizer byte needs vocab_size >= 256"
                       " (input.vocab_size is %d)",
                       s->vocab_size);
        snprintf(s->tokenizer, sizeof s->tokenizer, "%s", toks[t]);
    }
    return parse_vocab(c, json_object_get(a, "vocab"), s);
}

int rnnd_arch_parse(const char *text, size_t len, rnnd_model_spec *spec, const char *label,
                    char *err, size_t errlen)
{
    actx c = {label, err, errlen};
    if (rnnd_json_depth_check(text, len, RNND_MAX_JSON_DEPTH) != 0)
        return BAD(&c, "architecture", "JSON nested deeper than %d levels", RNND_MAX_JSON_DEPTH);
    json_error_t jerr;
    json_t *a = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!a)
        return BAD(&c, "architecture", "invalid JSON at line %d column %d: %s", jerr.line,
                   jerr.column, jerr.text);
    int rc = parse_top(&c, a, spec);
    json_decref(a);
    if (rc)
        rnnd_arch_release(spec);
    return rc;
}

void rnnd_arch_release(rnnd_model_spec *spec)
{
    free(spec->vocab);
    spec->vocab = NULL;
    spec->n_vocab = 0;
}

static void req(rnnd_req_tensor *t, const char *name, int64_t a, int64_t b, int ndim,
                const float **dst)
{
    snprintf(t->name, sizeof t->name, "%s", name);
    t->matrix = 0; /* matrices: set by mat() */
    t->scale = NULL;
    t->ndim = ndim;
    t->shape[0] = a;
    t->shape[1] = b;
    t->dst = dst;
}

/* A matrix the gemv kernels read: it may be stored half-size or int8 (SCALE: where its
 * row scales go then). */
static void mat(rnnd_req_tensor *t, const char *name, int64_t a, int64_t b, const float **dst,
                const float **scale)
{
    req(t, name, a, b, 2, dst);
    t->matrix = 1;
    t->scale = scale;
}

size_t rnnd_arch_required(rnnd_model_spec *s, rnnd_req_tensor *out)
{
    size_t n = 0;
    if (s->input_kind == RNND_INPUT_TOKENS)
        req(&out[n++], "embedding.weight", s->vocab_size, s->input_dim, 2, &s->embedding);
    for (int l = 0; l < s->n_layers; l++) {
        rnnd_layer_spec *L = &s->layers[l];
        int64_t gh = (int64_t)L->gates * L->hidden;
        for (int d = 0; d < L->num_directions; d++) {
            rnnd_dir_weights *w = &L->w[d];
            char nm[48];
#define NM(x) (snprintf(nm, sizeof nm, "layers.%d.%d.%s", l, d, x), nm)
            int recurrent = !rnnd_cell_is_min(L->cell);
            /* slstm: block-diagonal R, each unit's row the d = H / K weights of its head */
            int r_cols = L->cell == RNND_CELL_SLSTM ? L->hidden / L->heads : L->out_dim;
            mat(&out[n++], NM("W"), gh, L->in_dim, &w->W, &w->W_s);
            if (recurrent)
                mat(&out[n++], NM("R"), gh, r_cols, &w->R, &w->R_s);
            req(&out[n++], NM("Wb"), gh, 0, 1, &w->Wb);
            if (recurrent)
                req(&out[n++], NM("Rb"), gh, 0, 1, &w->Rb);
            if (L->cell == RNND_CELL_LSTM && L->peepholes)
                req(&out[n++], NM("P"), 3 * (int64_t)L->hidden, 0, 1, &w->P);
            if (L->cell == RNND_CELL_LSTM && L->proj_size > 0)
                mat(&out[n++], NM("proj"), L->proj_size, L->hidden, &w->proj, &w->proj_s);
            if (L->cell == RNND_CELL_JORDAN) {
                mat(&out[n++], NM("V"), L->output_size, L->hidden, &w->V, &w->V_s);
                req(&out[n++], NM("Vb"), L->output_size, 0, 1, &w->Vb);
            }
            if (L->depth_gate) {
                mat(&out[n++], NM("D"), L->hidden, L->in_dim, &w->D, &w->D_s);
                req(&out[n++], NM("Dc"), L->hidden, 0, 1, &w->Dc);
                req(&out[n++], NM("Dl"), L->hidden, 0, 1, &w->Dl);
                req(&out[n++], NM("Db"), L->hidden, 0, 1, &w->Db);
            }
#undef NM
        }
    }
    if (s->has_head && s->head_short) {
        rnnd_head_layer *h = &s->head_layers[0];
        mat(&out[n++], "head.weight", h->out_dim, h->in_dim, &h->W, &h->W_s);
        req(&out[n++], "head.bias", h->out_dim, 0, 1, &h->b);
    } else if (s->has_head) {
        for (int k = 0; k < s->head_n; k++) {
            rnnd_head_layer *h = &s->head_layers[k];
            char nm[48], nb[48];
            snprintf(nm, sizeof nm, "head.%d.weight", k);
            snprintf(nb, sizeof nb, "head.%d.bias", k);
            if (h->op == RNND_HEAD_LINEAR) {
                mat(&out[n++], nm, h->out_dim, h->in_dim, &h->W, &h->W_s);
                req(&out[n++], nb, h->out_dim, 0, 1, &h->b);
            } else if (h->op == RNND_HEAD_LAYERNORM && h->affine) {
                req(&out[n++], nm, h->in_dim, 0, 1, &h->W);
                req(&out[n++], nb, h->in_dim, 0, 1, &h->b);
            }
        }
    }
    return n;
}
