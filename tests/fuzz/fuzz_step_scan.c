/* Fuzz target: the step-body scanner (rnnd/step_scan.h), differentially against the jansson
 * path (tests/step_scan_ref.c): whatever the scanner takes must read the same through
 * rnnd_infer_load and the step handler's field rules, floats bit for bit. Declining is always
 * allowed. The input is the body; it is scanned under the default limits and again under
 * tight ones (nesting 2 or 3, a few steps) picked from its length. */
#include <stdio.h>

#include "fuzz_common.h"
#include "../step_scan_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[512];
    const char *text = (const char *)data;
    int rc = ssr_compare(text, size, 32, 4096, why, sizeof why);
    if (rc == SSR_DIFFERENT)
        fprintf(stderr, "step_scan: %s\n", why);
    FZ_CHECK(rc != SSR_DIFFERENT, "the scanner and the jansson path disagree");
    rc = ssr_compare(text, size, 2 + (long)(size & 1), 1 + (size >> 1) % 5, why, sizeof why);
    if (rc == SSR_DIFFERENT)
        fprintf(stderr, "step_scan (tight limits): %s\n", why);
    FZ_CHECK(rc != SSR_DIFFERENT, "the scanner and the jansson path disagree (tight limits)");
    return 0;
}
