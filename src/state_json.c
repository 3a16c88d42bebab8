/* A session's state block <-> STATE JSON (rnnd/state_json.h). The input is untrusted (it comes
 * from HTTP clients), so every branch names the exact element it refuses. */
#include "rnnd/state_json.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rnnd/status.h"

/* Paths are short (a prefix and a few indices); a longer one is cut, never overrun. */
#define PATH_MAX_LEN 256

const char *rnnd_json_type_desc(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

/* The largest magnitude that rounds to FLT_MAX rather than to infinity: FLT_MAX plus half an
 * ulp (2^103), exclusive. FLT_MAX printed with %.9g (3.40282347e+38) is above FLT_MAX and
 * must still be accepted. */
#define FLOAT_ROUND_LIMIT ((double)FLT_MAX + 0x1p103)

int rnnd_json_float(const json_t *v, float *out, const char *path, char *err, size_t errlen)
{
    double d;

    if (json_is_real(v))
        d = json_real_value(v);
    else if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: expected a number, got %s", path,
                         rnnd_json_type_desc(v));
    if (!isfinite(d))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: the number is not finite", path);
    if (fabs(d) >= FLOAT_ROUND_LIMIT)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: %.9g does not fit in a 32-bit float",
                         path, d);
    *out = (float)d;
    return 0;
}

int rnnd_json_token(const json_t *v, int vocab, int32_t *out, char *err, size_t errlen)
{
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* 2.0 or 2e0: a whole number written as a float (numpy's tolist() of a float array
         * gives them); say how to write it rather than "got 2", which reads as valid */
        if (d == floor(d) && fabs(d) < 0x1p53)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "expected an integer token id in [0, %d), got %.1f: write token ids "
                             "as plain integers (%lld), without a fraction or exponent",
                             vocab, d, (long long)d);
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "expected an integer token id in [0, %d), got %.17g", vocab, d);
    }
    if (!json_is_integer(v))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "expected an integer token id in [0, %d), got %s", vocab,
                         rnnd_json_type_desc(v));
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= vocab)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "token id %" JSON_INTEGER_FORMAT " out of range [0, %d)", id, vocab);
    *out = (int32_t)id;
    return 0;
}

int rnnd_json_floats(const json_t *v, float *dst, size_t n, const char *path, char *err,
                     size_t errlen)
{
    const char *s = n == 1 ? "" : "s";
    if (!json_is_array(v))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: expected a list of %zu number%s, got %s", path, n, s,
                         rnnd_json_type_desc(v));
    size_t got = json_array_size(v);
    if (got != n)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: expected a list of %zu number%s, got %zu", path, n, s, got);
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(v, i);
        /* Fast path first; the path string is only built for an error. */
        if (json_is_real(x)) {
            double d = json_real_value(x);
            if (isfinite(d) && fabs(d) < FLOAT_ROUND_LIMIT) {
                dst[i] = (float)d;
                continue;
            }
        }
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof p, "%s[%zu]", path, i);
        int rc = rnnd_json_float(x, &dst[i], p, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int rnnd_json_step(const json_t *v, float *dst, size_t n, const char *path, char *err,
                   size_t errlen)
{
    int rc = rnnd_json_floats(v, dst, n, path, err, errlen);
    /* A flat list [x1, x2, ...] sent to a model of one input: each step is a number where a
     * list of one is expected; say how the steps are written. */
    if (rc && n == 1 && json_is_number(v) && err && errlen) {
        size_t len = strlen(err);
        snprintf(err + len, errlen - len,
                 ": a model with input size 1 takes each step as [x], a sequence as "
                 "[[x1], [x2], ...]");
    }
    return rc;
}

/* The "h" or "c" member of one layer: a list of NDIR lists of N numbers each. DST advances
 * by STRIDE per direction. */
static int parse_per_direction(const json_t *layer, const char *key, int ndir, size_t n, float *dst,
                               size_t stride, const char *lpath, char *err, size_t errlen)
{
    char p[PATH_MAX_LEN];
    const json_t *v = json_object_get(layer, key);

    if (!v)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: missing \"%s\" (one list of %zu numbers per direction)", lpath, key,
                         n);
    if (!json_is_array(v))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s.%s: expected a list of %d direction(s), got %s", lpath, key, ndir,
                         rnnd_json_type_desc(v));
    if (json_array_size(v) != (size_t)ndir)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s.%s: expected %d direction(s), got %zu",
                         lpath, key, ndir, json_array_size(v));
    for (int d = 0; d < ndir; d++) {
        snprintf(p, sizeof p, "%s.%s[%d]", lpath, key, d);
        int rc = rnnd_json_floats(json_array_get(v, (size_t)d), dst + (size_t)d * stride, n, p, err,
                                  errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* The "t" member of a clockwork layer: one whole number 0 <= t < 2^48 per direction (the
 * steps that direction has taken), stored as two floats after its h (rnnd_clock_put). */
static int parse_counters(const json_t *layer, int ndir, float *dst, size_t stride,
                          const char *lpath, char *err, size_t errlen)
{
    const json_t *v = json_object_get(layer, "t");
    if (!v)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: missing \"t\" (a clockwork "
                         "layer's step counter: one integer per direction)",
                         lpath);
    if (!json_is_array(v))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s.t: expected a list of %d integer(s), got %s", lpath, ndir,
                         rnnd_json_type_desc(v));
    if (json_array_size(v) != (size_t)ndir)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s.t: expected %d direction(s), got %zu",
                         lpath, ndir, json_array_size(v));
    for (int d = 0; d < ndir; d++) {
        const json_t *x = json_array_get(v, (size_t)d);
        if (!json_is_integer(x))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "%s.t[%d]: expected an integer step count, got %s", lpath, d,
                             rnnd_json_type_desc(x));
        json_int_t t = json_integer_value(x);
        if (t < 0 || (uint64_t)t >= RNND_CLOCK_WRAP)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "%s.t[%d]: %" JSON_INTEGER_FORMAT " is out of range 0 to 2^48-1",
                             lpath, d, t);
        rnnd_clock_put(dst + (size_t)d * stride, (uint64_t)t);
    }
    return 0;
}

/* The members of a layer's state after "h", each [hidden] per direction, in block order. */
static int cell_members(const rnnd_layer_spec *L, const char *const **names)
{
    static const char *const all[] = {"c", "n", "m"};
    *names = all;
    return L->cell == RNND_CELL_LSTM ? 1 : L->cell == RNND_CELL_SLSTM ? 3 : 0;
}
int rnnd_state_parse_at(const rnnd_model *m, json_t *state, float *dst, const char *path, char *err,
                        size_t errlen)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(m);
    char p[PATH_MAX_LEN];
    const char *key;
    json_t *val;

    if (!json_is_object(state))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: expected a state object {\"layers\": [...]}, got %s", path,
                         rnnd_json_type_desc(state));
    json_object_foreach(state, key, val) {
        if (strcmp(key, "layers"))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "%s: unknown field \"%.64s\" (a state has only \"layers\")", path,
                             key);
    }
    const json_t *layers = json_object_get(state, "layers");
    if (!layers)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: missing \"layers\"", path);
    if (!json_is_array(layers))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s.layers: expected a list of %d layers, got %s", path, spec->n_layers,
                         rnnd_json_type_desc(layers));
    if (json_array_size(layers) != (size_t)spec->n_layers)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s.layers: expected %d layers, got %zu",
                         path, spec->n_layers, json_array_size(layers));

    size_t off = 0;
    for (int l = 0; l < spec->n_layers; l++) {
        const rnnd_layer_spec *ls = &spec->layers[l];
        json_t *layer = json_array_get(layers, (size_t)l);
        const char *const *mem;
        int nm = cell_members(ls, &mem), clock = ls->cell == RNND_CELL_CLOCKWORK;
        size_t h = (size_t)ls->out_dim, c = rnnd_layer_extra_state(ls);
        size_t per = nm ? rnnd_layer_cell_floats(ls) / (size_t)nm : 0;

        snprintf(p, sizeof p, "%s.layers[%d]", path, l);
        if (!json_is_object(layer))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "%s: expected an object {\"h\": ...%s}, got %s", p,
                             nm == 1     ? ", \"c\": ..."
                                 : nm    ? ", \"c\", \"n\", \"m\": ..."
                                 : clock ? ", \"t\": ..."
                                         : "",
                             rnnd_json_type_desc(layer));
        json_object_foreach(layer, key, val) {
            int known = !strcmp(key, "h") || (clock && !strcmp(key, "t"));
            for (int i = 0; i < nm && !known; i++)
                known = !strcmp(key, mem[i]);
            if (known)
                continue;
            if (!strcmp(key, "c") || !strcmp(key, "n") || !strcmp(key, "m"))
                return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                 "%s: \"%s\" is only for %s layers, this one is %s", p, key,
                                 strcmp(key, "c") ? "slstm" : "lstm and slstm",
                                 rnnd_cell_name(ls->cell));
            if (!strcmp(key, "t"))
                return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                 "%s: \"t\" is only for clockwork layers, this one is %s", p,
                                 rnnd_cell_name(ls->cell));
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "%s: unknown field \"%.64s\" (expected \"h\"%s)", p, key,
                             nm == 1     ? " and \"c\""
                                 : nm    ? ", \"c\", \"n\" and \"m\""
                                 : clock ? " and \"t\""
                                         : "");
        }
        int rc = parse_per_direction(layer, "h", ls->num_directions, h, dst + off, h + c, p, err,
                                     errlen);
        for (int i = 0; i < nm && !rc; i++)
            rc = parse_per_direction(layer, mem[i], ls->num_directions, per,
                                     dst + off + h + (size_t)i * per, h + c, p, err, errlen);
        if (rc)
            return rc;
        if (clock) {
            rc = parse_counters(layer, ls->num_directions, dst + off + h, h + c, p, err, errlen);
            if (rc)
                return rc;
        }
        off += (h + c) * (size_t)ls->num_directions;
    }
    return 0;
}

int rnnd_state_parse(const rnnd_model *m, json_t *state, float *dst, char *err, size_t errlen)
{
    return rnnd_state_parse_at(m, state, dst, "state", err, errlen);
}

int rnnd_state_digest_check(const rnnd_model *m, const json_t *digest, int required, char *err,
                            size_t errlen)
{
    if (!digest && !required)
        return 0;
    if (!digest)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "digest: missing: a state goes with the digest of the model it "
                         "was taken from (GET /v1/sessions/{id}/state gives both)");
    if (!json_is_string(digest))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "digest: expected the model digest (a string), got %s",
                         rnnd_json_type_desc(digest));
    return rnnd_state_digest_match(m, json_string_value(digest), err, errlen);
}

int rnnd_state_digest_match(const rnnd_model *m, const char *digest, char *err, size_t errlen)
{
    const char *want = rnnd_model_digest(m);
    if (strcmp(digest, want) == 0)
        return 0;
    if (err && errlen)
        snprintf(err, errlen,
                 "digest: the state is for a model with digest %.64s, but this "
                 "model's digest is %s: a state means nothing to another architecture or "
                 "other weights",
                 digest, want);
    return RNND_ERR_CONFLICT;
}

int rnnd_state_check_counters(const rnnd_model *m, const float *src, char *err, size_t errlen)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(m);
    size_t off = 0;
    for (int l = 0; l < spec->n_layers; l++) {
        const rnnd_layer_spec *ls = &spec->layers[l];
        size_t h = (size_t)ls->out_dim, c = rnnd_layer_extra_state(ls);
        for (int d = 0; d < ls->num_directions; d++) {
            const float *t = src + off + (size_t)d * (h + c) + h;
            for (int i = 0; ls->cell == RNND_CELL_CLOCKWORK && i < 2; i++)
                if (!(t[i] >= 0.0f && t[i] < 16777216.0f && t[i] == floorf(t[i])))
                    return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                     "state.layers[%d].t[%d]: %.9g is not a step counter (its "
                                     "%s half must be a whole number from 0 to 2^24-1)",
                                     l, d, (double)t[i], i ? "high" : "low");
        }
        off += (h + c) * (size_t)ls->num_directions;
    }
    return 0;
}

void rnnd_state_write(const rnnd_model *m, const float *src, rnnd_buf *out)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(m);
    size_t off = 0;

    rnnd_buf_puts(out, "{\"layers\":[");
    for (int l = 0; l < spec->n_layers; l++) {
        const rnnd_layer_spec *ls = &spec->layers[l];
        const char *const *mem;
        int nm = cell_members(ls, &mem);
        size_t h = (size_t)ls->out_dim, c = rnnd_layer_extra_state(ls);
        size_t per = nm ? rnnd_layer_cell_floats(ls) / (size_t)nm : 0;

        rnnd_buf_puts(out, l ? ",{\"h\":[" : "{\"h\":[");
        for (int d = 0; d < ls->num_directions; d++) {
            if (d)
                rnnd_buf_append(out, ",", 1);
            rnnd_buf_floats(out, src + off + (size_t)d * (h + c), h);
        }
        rnnd_buf_append(out, "]", 1);
        for (int i = 0; i < nm; i++) {
            rnnd_buf_printf(out, ",\"%s\":[", mem[i]);
            for (int d = 0; d < ls->num_directions; d++) {
                if (d)
                    rnnd_buf_append(out, ",", 1);
                rnnd_buf_floats(out, src + off + (size_t)d * (h + c) + h + (size_t)i * per, per);
            }
            rnnd_buf_append(out, "]", 1);
        }
        if (ls->cell == RNND_CELL_CLOCKWORK) {
            rnnd_buf_puts(out, ",\"t\":[");
            for (int d = 0; d < ls->num_directions; d++) {
                char num[24];
                int len = snprintf(num, sizeof num, "%s%llu", d ? "," : "",
                                   (unsigned long long)rnnd_clock_get(src + off +
                                                                      (size_t)d * (h + c) + h));
                rnnd_buf_append(out, num, (size_t)len);
            }
            rnnd_buf_append(out, "]", 1);
        }
        rnnd_buf_append(out, "}", 1);
        off += (h + c) * (size_t)ls->num_directions;
    }
    rnnd_buf_puts(out, "]}");
}
