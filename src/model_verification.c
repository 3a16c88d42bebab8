/* __metadata__.verification of a model file (docs/model-format.md): what rnnd-convert
 * measured when it checked the file against its source. Information for people; it plays no
 * part in computing, and the digest does not cover it. Every check names the key. */
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "rnnd/status.h"

#define BAD(key, ...) \
    rnnd_model_fail(err, errlen, label, "__metadata__.verification" key, RNND_ERR_FORMAT, \
                    __VA_ARGS__)

/* A finite number >= 0 from O[KEY] into *OUT; 0 or -1 when absent or not one. */
static int nonneg(const json_t *o, const char *key, double *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    if (!isfinite(d) || d < 0)
        return -1;
    *out = d;
    return 0;
}

/* The allowed values of the record's optional text keys: the digest is checked for form. */
static int text_ok(const char *key, const char *v)
{
    if (strcmp(key, "digest") == 0) {
        if (strlen(v) != 64)
            return 0;
        for (const char *p = v; *p; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                return 0;
        return 1;
    }
    if (strcmp(key, "weights_checked") == 0)
        return strcmp(v, "f32") == 0;
    return strcmp(v, "none") == 0 || strcmp(v, "softmax") == 0 || strcmp(v, "log_softmax") == 0;
}

/* O[KEY], when present, into OUT (OUTLEN bytes) if it is one of text_ok's values. */
static int optional_string(const json_t *o, const char *key, char *out, size_t outlen,
                           const char *label, char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    out[0] = '\0';
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) >= outlen ||
        !text_ok(key, json_string_value(v))) {
        char full[64];
        snprintf(full, sizeof full, "__metadata__.verification.%s", key);
        return rnnd_model_fail(err, errlen, label, full, RNND_ERR_FORMAT, "expected %s",
                               strcmp(key, "digest") == 0 ? "64 lowercase hex digits"
                                   : strcmp(key, "weights_checked") == 0
                                   ? "\"f32\""
                                   : "\"none\", \"softmax\" or \"log_softmax\"");
    }
    snprintf(out, outlen, "%s", json_string_value(v));
    return 0;
}

/* O[KEY], when present, an integer LO..HI into *OUT (0 when absent). */
static int optional_int(const json_t *o, const char *key, long lo, long hi, int *out,
                        const char *label, char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char full[64];
        snprintf(full, sizeof full, "__metadata__.verification.%s", key);
        return rnnd_model_fail(err, errlen, label, full, RNND_ERR_FORMAT,
                               "expected an integer %ld..%ld", lo, hi);
    }
    *out = (int)json_integer_value(v);
    return 0;
}

/* The extra passes' keys (verify.py): all optional, so older records still load. */
static int extra_passes(const json_t *o, rnnd_verification *out, const char *label, char *err,
                        size_t errlen)
{
    int rc = optional_int(o, "vocab_checked", 1, 1L << 30, &out->vocab_checked, label, err, errlen);
    if (rc)
        return rc;
    const json_t *st = json_object_get(o, "initial_state_checked");
    if (st && !json_is_null(st) && !json_is_boolean(st))
        return BAD(".initial_state_checked", "expected true or false");
    out->initial_state_checked = json_is_true(st);
    const json_t *lg = json_object_get(o, "long_checked");
    if (lg && !json_is_null(lg)) {
        const json_t *t = json_array_get(lg, 0), *b = json_array_get(lg, 1);
        if (json_array_size(lg) != 2 || !json_is_integer(t) || !json_is_integer(b) ||
            json_integer_value(t) < 1 || json_integer_value(t) > 1000000 ||
            json_integer_value(b) < 1 || json_integer_value(b) > 65536)
            return BAD(".long_checked", "expected [steps 1..1000000, batch 1..65536]");
        out->long_length = (int)json_integer_value(t);
        out->long_batch = (int)json_integer_value(b);
    }
    const json_t *sc = json_object_get(o, "scaled_checked");
    if (sc && !json_is_null(sc) && nonneg(o, "scaled_checked", &out->scaled_checked))
        return BAD(".scaled_checked", "expected a finite number >= 0");
    return 0;
}

int rnnd_verification_parse(const char *text, size_t len, rnnd_verification *out, const char *label,
                            char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (rnnd_json_depth_check(text, len, RNND_MAX_JSON_DEPTH) != 0)
        return BAD("", "JSON nested deeper than %d levels", RNND_MAX_JSON_DEPTH);
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = 0;
    if (!o)
        return BAD("", "invalid JSON at byte %d: %s", jerr.position, jerr.text);
    if (!json_is_object(o)) {
        rc = BAD("", "not a JSON object");
        goto out;
    }
    const json_t *src = json_object_get(o, "source");
    if (!json_is_string(src) || json_string_length(src) == 0 ||
        json_string_length(src) >= sizeof out->source) {
        rc = BAD(".source", "expected a string of 1 to %zu bytes", sizeof out->source - 1);
        goto out;
    }
    snprintf(out->source, sizeof out->source, "%s", json_string_value(src));
    if (nonneg(o, "tolerance", &out->tolerance)) {
        rc = BAD(".tolerance", "expected a finite number >= 0");
        goto out;
    }
    if (nonneg(o, "max_abs_error", &out->max_abs_error)) {
        rc = BAD(".max_abs_error", "expected a finite number >= 0");
        goto out;
    }
    if (nonneg(o, "max_rel_error", &out->max_rel_error)) {
        rc = BAD(".max_rel_error", "expected a finite number >= 0");
        goto out;
    }
    const json_t *b = json_object_get(o, "batch");
    if (!json_is_integer(b) || json_integer_value(b) < 1 || json_integer_value(b) > 65536) {
        rc = BAD(".batch", "expected an integer 1..65536");
        goto out;
    }
    out->batch = (int)json_integer_value(b);
    const json_t *ls = json_object_get(o, "lengths");
    size_t n = json_array_size(ls);
    if (!json_is_array(ls) || n < 1 || n > RNND_VERIFY_MAX_LENGTHS) {
        rc =
            BAD(".lengths", "expected a list of 1 to %d sequence lengths", RNND_VERIFY_MAX_LENGTHS);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(ls, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000) {
            rc = BAD(".lengths", "item %zu: expected an integer 1..1000000", i);
            goto out;
        }
        out->lengths[i] = (int)json_integer_value(v);
    }
    out->n_lengths = (int)n;
    rc = optional_string(o, "digest", out->digest, sizeof out->digest, label, err, errlen);
    if (rc == 0)
        rc = optional_string(o, "weights_checked", out->weights_checked,
                             sizeof out->weights_checked, label, err, errlen);
    if (rc == 0)
        rc = optional_string(o, "norm_checked", out->norm_checked, sizeof out->norm_checked, label,
                             err, errlen);
    if (rc == 0)
        rc = extra_passes(o, out, label, err, errlen);
out:
    json_decref(o);
    return rc;
}

int rnnd_model_verified(const rnnd_model *m, char *why, size_t whylen)
{
    const rnnd_verification *v = m->verified ? &m->verification : NULL;
    if (!v) {
        snprintf(why, whylen, "no record of a check against its source");
        return 0;
    }
    if (!v->digest[0]) {
        snprintf(why, whylen,
                 "the record names no model digest, so it is not tied to these "
                 "weights (written by hand or by an older rnnd-convert)");
        return 0;
    }
    const char *d = m->digest;
    if (strcmp(v->digest, d) != 0) {
        snprintf(why, whylen,
                 "the record is for the model with digest %.12s..., this file's "
                 "is %.12s...: the model changed after the check",
                 v->digest, d);
        return 0;
    }
    if (!(v->max_rel_error <= v->tolerance)) {
        snprintf(why, whylen, "the record's max rel error %.3g is beyond its tolerance %g",
                 v->max_rel_error, v->tolerance);
        return 0;
    }
    if (whylen)
        why[0] = '\0';
    return 1;
}
