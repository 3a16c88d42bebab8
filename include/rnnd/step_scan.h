/* A direct decoder for the common body of POST /v1/sessions/{id}/step, without a JSON DOM:
 *
 *   {"inputs": [[x, ...], ...] | [id, ...], "outputs": "all" | "last", "if_steps": N}
 *
 * keys in any order, "inputs" required, JSON whitespace anywhere. jansson allocates an object
 * per number (~150 us for a 512-float body, five times the LSTM step itself); this scans the
 * text once and writes the floats where they go.
 *
 * It either gives exactly what decoding with rnnd_infer_load() and reading the fields as the
 * step handler does would give (the same floats bit for bit: numbers are read as a double,
 * correctly rounded, then rounded to float; integers as the JSON integer converted to double;
 * the same option values), or it declines and the caller takes the jansson path, which reports
 * any error. It declines everything unusual: other keys, duplicate keys, escapes, numbers
 * that do not fit float32 or int64, ragged or empty lists, steps of mixed kinds, nesting
 * deeper than allowed, more steps than allowed, trailing text. Declining is always safe. */
#ifndef RNND_STEP_SCAN_H
#define RNND_STEP_SCAN_H

#include <stddef.h>
#include <stdint.h>

typedef struct rnnd_step_scan {
    size_t n_steps;   /* entries of "inputs", >= 1 */
    size_t width;     /* numbers per step (a vector model's steps); 0: steps are integers */
    float *vectors;   /* n_steps x width floats when width > 0, else NULL */
    int64_t *ids;     /* n_steps integers when width == 0, else NULL */
    int last_only;    /* "outputs": "last" */
    int64_t if_steps; /* -1 when absent, else 0..INT64_MAX */
} rnnd_step_scan;

/* Decode LEN bytes of DATA (need not be NUL-terminated). MAX_DEPTH: the nesting limit the
 * JSON decoder applies (max_json_depth); MAX_STEPS: more entries in "inputs" decline.
 * Returns 0 with *OUT filled (release with rnnd_step_scan_clear), RNND_ERR_UNSUPPORTED when
 * it declines, or RNND_ERR_NOMEM; on failure *OUT holds nothing to release. */
int rnnd_step_scan_parse(const char *data, size_t len, long max_depth, size_t max_steps,
                         rnnd_step_scan *out);

/* Free the arrays of S and zero it. */
void rnnd_step_scan_clear(rnnd_step_scan *s);

#endif
