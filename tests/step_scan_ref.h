/* The step scanner (rnnd/step_scan.h) against the jansson path, shared by
 * tests/check_step_scan.c and tests/fuzz/fuzz_step_scan.c.
 *
 * The reference reads a body the way the daemon's JSON path does (http.c's decode: nesting
 * limit, rnnd_infer_load, an object; api_sessions.c: the allowed fields, "outputs",
 * "if_steps", and "inputs" through rnnd_json_floats or as JSON integers), for a model whose
 * steps have the width the scanner found (token ids when 0). */
#ifndef RNND_STEP_SCAN_REF_H
#define RNND_STEP_SCAN_REF_H

#include <stddef.h>

enum { SSR_DECLINED = 0, SSR_SAME = 1, SSR_DIFFERENT = -1 };

/* Scan DATA; when the scanner accepts, read it with the reference too and compare every
 * field and every float bit for bit. Returns SSR_DECLINED, SSR_SAME, or SSR_DIFFERENT with
 * the first difference in WHY. */
int ssr_compare(const char *data, size_t len, long max_depth, size_t max_steps, char *why,
                size_t whylen);

#endif
