/* A session's record as Redis hash fields, and back (rnnd/store.h; the fields are
 * docs/cluster.md's "The record in Redis"). Decoding trusts nothing: Redis is inside the trust
 * boundary, but a record written by another version, by hand, or cut short must be refused
 * field by field, as a snapshot restore refuses a bad record, and never reach the engine. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "rnnd/store.h"
#include "session.h"

/* how far ahead of this clock a creation time may be (a clock stepped back): as a restore */
#define CREATED_AHEAD_S 3600

/* The record's fields, in the order a creation writes them. */
enum field {
    F_V,
    F_MODEL,
    F_DIGEST,
    F_OWNER,
    F_STEPS,
    F_CREATED,
    F_TTL,
    F_USED,
    F_GEN,
    F_STATE,
    F_HOLDER,
    F_EPOCH,
    F_SEQ,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    [F_V] = "v",         [F_MODEL] = "model",     [F_DIGEST] = "digest", [F_OWNER] = "owner",
    [F_STEPS] = "steps", [F_CREATED] = "created", [F_TTL] = "ttl_s",     [F_USED] = "used_ms",
    [F_GEN] = "gen",     [F_STATE] = "state",     [F_HOLDER] = "holder", [F_EPOCH] = "epoch",
    [F_SEQ] = "seq",
};
_Static_assert(F_COUNT <= RNND_STORE_MAX_FIELDS, "a record's fields fit rnnd_store_fields");

static const char *const gen_keys[] = {"max_tokens", "temperature", "top_k",
                                       "top_p",      "seed",        "stop"};

static int hex_ok(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* ---- encoding ---------------------------------------------------------------------------- */

void rnnd_store_fields_free(rnnd_store_fields *f)
{
    if (!f)
        return;
    free(f->state);
    f->state = NULL;
    f->n = 0;
}

static void add(rnnd_store_fields *f, enum field k, const char *val, size_t len)
{
    f->kv[f->n].name = field_names[k];
    f->kv[f->n].val = val;
    f->kv[f->n].len = len;
    f->n++;
}

/* V in decimal (or as 16 hex digits: HEX), kept in the fields' own text slots. */
static void add_text(rnnd_store_fields *f, enum field k, int hex, uint64_t v)
{
    char *t = f->text[f->n];
    int n = hex ? snprintf(t, sizeof f->text[0], "%016" PRIx64, v)
                : snprintf(t, sizeof f->text[0], "%" PRIu64, v);
    add(f, k, t, (size_t)n);
}

/* GEN as the JSON object generate takes, with every double printed to round-trip exactly. */
static int gen_json(const rnnd_gen_params *gen, char *out, size_t outlen, char *err, size_t errlen)
{
    json_t *o = json_pack("{sIsfsIsf}", "max_tokens", (json_int_t)gen->max_tokens, "temperature",
                          gen->sampling.temperature, "top_k", (json_int_t)gen->sampling.top_k,
                          "top_p", gen->sampling.top_p);
    json_t *stop = json_array();
    int bad = !o || !stop;
    if (!bad && gen->has_seed)
        bad = json_object_set_new(o, "seed", json_integer((json_int_t)gen->seed));
    for (size_t i = 0; !bad && i < gen->n_stop; i++)
        bad = json_array_append_new(stop, json_stringn(gen->stop[i], strlen(gen->stop[i])));
    if (!bad && gen->n_stop)
        bad = json_object_set(o, "stop", stop);
    size_t n = bad ? 0 : json_dumpb(o, out, outlen, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(stop);
    json_decref(o);
    if (bad)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "gen: out of memory");
    if (n == 0 || n >= outlen)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "gen: more than %zu bytes of JSON",
                         outlen - 1);
    out[n] = '\0';
    return RNND_OK;
}

int rnnd_store_rec_encode(const rnnd_store_rec *rec, const rnnd_gen_params *gen,
                          enum rnnd_store_enc what, rnnd_store_fields *out, char *err,
                          size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t mlen = strnlen(rec->model, sizeof rec->model);
    if (mlen == 0 || mlen >= sizeof rec->model)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "model: expected 1 to %zu bytes",
                         sizeof rec->model - 1);
    if (strnlen(rec->digest, sizeof rec->digest) != 64 || !hex_ok(rec->digest, 64))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "digest: expected 64 hex digits");
    if (!rec->has_gen != !gen)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "gen: has_gen and the generation defaults disagree");
    if (rec->n_floats > SIZE_MAX / 4)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "state: too many floats");
    out->state = malloc(rec->n_floats ? rec->n_floats * 4 : 1);
    if (!out->state)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "state: out of memory");
    /* little-endian whatever the host: records cross machines, unlike a snapshot */
    for (size_t i = 0; i < rec->n_floats; i++) {
        uint32_t u;
        memcpy(&u, &rec->state[i], 4);
        for (int b = 0; b < 4; b++)
            out->state[4 * i + (size_t)b] = (unsigned char)(u >> (8 * b));
    }
    if (what == RNND_STORE_ENC_ALL) {
        add(out, F_V, "1", 1);
        add(out, F_MODEL, rec->model, mlen);
        add(out, F_DIGEST, rec->digest, 64);
        add_text(out, F_OWNER, 1, rec->owner);
    }
    add_text(out, F_STEPS, 0, rec->steps);
    if (what == RNND_STORE_ENC_ALL) {
        add_text(out, F_CREATED, 0, (uint64_t)rec->created);
        add_text(out, F_TTL, 0, (uint64_t)rec->ttl_s);
        if (gen) {
            int rc = gen_json(gen, out->gen, sizeof out->gen, err, errlen);
            if (rc)
                return rc;
            add(out, F_GEN, out->gen, strlen(out->gen));
        }
    }
    add(out, F_STATE, (const char *)out->state, rec->n_floats * 4);
    return RNND_OK;
}

/* ---- decoding ---------------------------------------------------------------------------- */

/* A decimal 0..MAX without sign or leading zeros (Redis writes its integers so). */
static int u64_field(const rnnd_store_kv *kv, uint64_t max, uint64_t *out, char *err, size_t errlen)
{
    uint64_t v = 0;
    int ok = kv->len >= 1 && kv->len <= 20 && !(kv->len > 1 && kv->val[0] == '0');
    for (size_t i = 0; ok && i < kv->len; i++) {
        unsigned d = (unsigned)(kv->val[i] - '0');
        ok = d <= 9 && d <= max && v <= (max - d) / 10;
        v = v * 10 + d;
    }
    if (!ok)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "%s: expected a decimal integer from 0 to %" PRIu64, kv->name, max);
    *out = v;
    return RNND_OK;
}

static int holder_field(const rnnd_store_kv *kv, rnnd_store_rec *rec, char *err, size_t errlen)
{
    const char *sp = memchr(kv->val, ' ', kv->len);
    size_t nlen = sp ? (size_t)(sp - kv->val) : 0;
    int ok = kv->len == 0 ||
        (sp && nlen >= 1 && nlen <= RNND_STORE_NAME_MAX && kv->len - nlen - 1 >= 1 &&
         kv->len - nlen - 1 <= 20 && strspn(sp + 1, "0123456789") >= kv->len - nlen - 1);
    for (size_t i = 0; ok && i < nlen; i++) {
        char c = kv->val[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-';
    }
    if (!ok)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "holder: expected empty or \"NAME INCARNATION\"");
    memcpy(rec->holder, kv->val, kv->len);
    rec->holder[kv->len] = '\0';
    return RNND_OK;
}

/* The gen field through the request's own parser and the restore's checks. */
static int gen_field(const rnnd_store_kv *kv, const rnnd_store_limits *lim, rnnd_gen_params *gen,
                     char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *o = json_loadb(kv->val, kv->len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = RNND_ERR_INVALID;
    char why[200];
    if (!json_is_object(o)) {
        snprintf(why, sizeof why, "expected a JSON object");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        size_t i = 0;
        while (i < sizeof gen_keys / sizeof gen_keys[0] && strcmp(key, gen_keys[i]))
            i++;
        if (i == sizeof gen_keys / sizeof gen_keys[0]) {
            snprintf(why, sizeof why, "an unknown member");
            goto out;
        }
    }
    rnnd_gen_params_default(gen);
    if (rnnd_gen_params_parse(o, INT64_MAX, gen, why, sizeof why))
        goto out;
    /* a default only above a setting lowered since it was written is lowered, as a restore */
    if (gen->max_tokens > lim->max_generate_tokens)
        gen->max_tokens = lim->max_generate_tokens;
    if (rnnd_gen_params_check(gen, lim->max_generate_tokens, why, sizeof why))
        goto out;
    rc = RNND_OK;
out:
    json_decref(o);
    return rc ? rnnd_fail(rc, err, errlen, "gen: %s", why) : RNND_OK;
}

/* The state: exactly N floats little-endian, each finite, the counters the engine's. */
static int state_field(const rnnd_store_kv *kv, const rnnd_model *m, float *state, char *err,
                       size_t errlen)
{
    size_t n = rnnd_model_state_floats(m);
    if (kv->len / 4 != n || kv->len % 4)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "state: %zu bytes, expected %zu (4 per float of the model's state)",
                         kv->len, n * 4);
    const unsigned char *b = (const unsigned char *)kv->val;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
            (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&state[i], &u, 4);
        if (!isfinite(state[i]))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "state[%zu]: the number is not finite",
                             i);
    }
    return rnnd_state_check_counters(m, state, err, errlen);
}

/* The integer fields after every field was found: ranges as a restore checks them. */
static int numbers(const rnnd_store_kv *const *f, const rnnd_store_limits *lim, rnnd_store_rec *rec,
                   char *err, size_t errlen)
{
    uint64_t v, created, ttl, used;
    int rc;
    if ((rc = u64_field(f[F_V], RNND_STORE_REC_VERSION, &v, err, errlen)) ||
        (rc = u64_field(f[F_STEPS], INT64_MAX, &rec->steps, err, errlen)) ||
        (rc = u64_field(f[F_CREATED], INT64_MAX, &created, err, errlen)) ||
        (rc = u64_field(f[F_TTL], INT64_MAX, &ttl, err, errlen)) ||
        (rc = u64_field(f[F_USED], INT64_MAX, &used, err, errlen)) ||
        (rc = u64_field(f[F_EPOCH], INT64_MAX, &rec->epoch, err, errlen)) ||
        (rc = u64_field(f[F_SEQ], INT64_MAX, &rec->seq, err, errlen)))
        return rc;
    if (v != RNND_STORE_REC_VERSION)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "v: record format %" PRIu64 " is not one this build reads (%d)", v,
                         RNND_STORE_REC_VERSION);
    int64_t now = (int64_t)time(NULL);
    if ((int64_t)created > now + CREATED_AHEAD_S)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "created: expected unix seconds up to now + %d", CREATED_AHEAD_S);
    rec->created = (int64_t)created;
    rec->used_ms = (int64_t)used;
    rc = rnnd_session_ttl_check((double)ttl, lim->ttl_max_s, err, errlen);
    if (rc == RNND_ERR_LIMIT)
        ttl = (uint64_t)lim->ttl_max_s;
    else if (rc)
        return RNND_ERR_INVALID;
    rec->ttl_s = (int64_t)ttl;
    return RNND_OK;
}

int rnnd_store_rec_decode(const rnnd_store_kv *kv, size_t n, const rnnd_model *m,
                          const rnnd_store_limits *lim, rnnd_store_rec *rec, float *state,
                          rnnd_gen_params *gen, char *err, size_t errlen)
{
    memset(rec, 0, sizeof *rec);
    const rnnd_store_kv *f[F_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < F_COUNT && strcmp(kv[i].name, field_names[k]))
            k++;
        if (k == F_COUNT)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "an unknown field in the record");
        if (f[k])
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: twice in the record",
                             field_names[k]);
        f[k] = &kv[i];
    }
    for (size_t k = 0; k < F_COUNT; k++)
        if (!f[k] && k != F_GEN)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "%s: missing from the record",
                             field_names[k]);
    int rc = numbers(f, lim, rec, err, errlen);
    if (rc)
        return rc;
    if (f[F_MODEL]->len == 0 || f[F_MODEL]->len >= sizeof rec->model ||
        memchr(f[F_MODEL]->val, 0, f[F_MODEL]->len))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "model: expected 1 to %zu bytes",
                         sizeof rec->model - 1);
    memcpy(rec->model, f[F_MODEL]->val, f[F_MODEL]->len);
    if (f[F_DIGEST]->len != 64 || !hex_ok(f[F_DIGEST]->val, 64))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "digest: expected 64 hex digits");
    memcpy(rec->digest, f[F_DIGEST]->val, 64);
    if ((rc = rnnd_state_digest_match(m, rec->digest, err, errlen)))
        return rc;
    if (f[F_OWNER]->len != 16 || !hex_ok(f[F_OWNER]->val, 16))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "owner: expected 16 hex digits");
    char owner[17];
    memcpy(owner, f[F_OWNER]->val, 16);
    owner[16] = '\0';
    rec->owner = strtoull(owner, NULL, 16);
    if ((rc = holder_field(f[F_HOLDER], rec, err, errlen)) ||
        (f[F_GEN] && (rc = gen_field(f[F_GEN], lim, gen, err, errlen))) ||
        (rc = state_field(f[F_STATE], m, state, err, errlen)))
        return rc;
    rec->has_gen = f[F_GEN] != NULL;
    rec->state = state;
    rec->n_floats = rnnd_model_state_floats(m);
    return RNND_OK;
}
