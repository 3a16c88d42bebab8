/* The jansson reading of a step body, compared with the scanner (step_scan_ref.h). */
#include "step_scan_ref.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/infer.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "rnnd/step_scan.h"

/* Nesting depth of a decoded value: what http.c's bracket count measures on the text. */
static long depth_of(json_t *v)
{
    long d = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            long c = depth_of(json_array_get(v, i));
            d = c > d ? c : d;
        }
        return d + 1;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            long c = depth_of(x);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    return 0;
}

static int compare_json(json_t *body, const rnnd_step_scan *sc, long max_depth, size_t max_steps,
                        char *why, size_t whylen)
{
    if (!json_is_object(body))
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted a body that is not an object");
    if (depth_of(body) > max_depth)
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted nesting %ld past max_json_depth %ld",
                         depth_of(body), max_depth);
    const char *k;
    json_t *x;
    json_object_foreach(body, k, x) {
        if (strcmp(k, "inputs") && strcmp(k, "outputs") && strcmp(k, "if_steps"))
            return rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted the field \"%s\"", k);
    }
    const json_t *o = json_object_get(body, "outputs");
    int last = 0;
    if (o) {
        const char *os = json_string_value(o);
        if (!os || (strcmp(os, "all") && strcmp(os, "last")))
            return rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted an outputs the handler refuses");
        last = !strcmp(os, "last");
    }
    if (last != sc->last_only)
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "last_only %d, jansson path %d", sc->last_only,
                         last);
    const json_t *is = json_object_get(body, "if_steps");
    int64_t if_steps = -1;
    if (is) {
        if (!json_is_integer(is) || json_integer_value(is) < 0)
            return rnnd_fail(SSR_DIFFERENT, why, whylen,
                             "accepted an if_steps the handler refuses");
        if_steps = json_integer_value(is);
    }
    if (if_steps != sc->if_steps)
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "if_steps %" PRId64 ", jansson path %" PRId64,
                         sc->if_steps, if_steps);
    const json_t *in = json_object_get(body, "inputs");
    if (!json_is_array(in) || !json_array_size(in))
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted inputs the handler refuses");
    size_t n = json_array_size(in);
    if (n != sc->n_steps || n > max_steps)
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "%zu steps (limit %zu), jansson path %zu",
                         sc->n_steps, max_steps, n);
    char err[256];
    if (!sc->width) {
        if (!sc->ids || sc->vectors)
            return rnnd_fail(SSR_DIFFERENT, why, whylen, "token steps without ids");
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(in, i);
            if (!json_is_integer(v))
                return rnnd_fail(SSR_DIFFERENT, why, whylen,
                                 "inputs[%zu]: accepted a %s as a token id", i,
                                 rnnd_json_type_desc(v));
            if (json_integer_value(v) != sc->ids[i])
                return rnnd_fail(SSR_DIFFERENT, why, whylen,
                                 "inputs[%zu]: id %" PRId64 ", jansson path %" PRId64, i,
                                 sc->ids[i], (int64_t)json_integer_value(v));
        }
        return SSR_SAME;
    }
    if (!sc->vectors || sc->ids)
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "vector steps without floats");
    float *row = malloc(sc->width * sizeof *row);
    if (!row)
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "out of memory");
    int rc = SSR_SAME;
    for (size_t i = 0; i < n && rc == SSR_SAME; i++) {
        char path[48];
        snprintf(path, sizeof path, "inputs[%zu]", i);
        if (rnnd_json_floats(json_array_get(in, i), row, sc->width, path, err, sizeof err)) {
            rc = rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted what the jansson path refuses: %s",
                           err);
            break;
        }
        for (size_t j = 0; j < sc->width; j++) {
            const float *f = &sc->vectors[i * sc->width + j];
            if (memcmp(f, &row[j], sizeof *f)) {
                rc = rnnd_fail(SSR_DIFFERENT, why, whylen, "inputs[%zu][%zu]: %a, jansson path %a",
                               i, j, (double)*f, (double)row[j]);
                break;
            }
        }
    }
    free(row);
    return rc;
}

int ssr_compare(const char *data, size_t len, long max_depth, size_t max_steps, char *why,
                size_t whylen)
{
    rnnd_step_scan sc;
    int rc = rnnd_step_scan_parse(data, len, max_depth, max_steps, &sc);
    if (rc)
        return SSR_DECLINED;
    json_t *body = NULL;
    char err[256];
    if (rnnd_infer_load(data, len, &body, err, sizeof err)) {
        rnnd_step_scan_clear(&sc);
        return rnnd_fail(SSR_DIFFERENT, why, whylen, "accepted what jansson refuses: %s", err);
    }
    rc = compare_json(body, &sc, max_depth, max_steps, why, whylen);
    json_decref(body);
    rnnd_step_scan_clear(&sc);
    return rc;
}
