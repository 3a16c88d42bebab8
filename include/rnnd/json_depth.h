/* A bound on JSON nesting, checked on the text before a recursive parser (jansson) sees it:
 * model headers (RNND_MAX_JSON_DEPTH) and request bodies (max_json_depth). */
#ifndef RNND_JSON_DEPTH_H
#define RNND_JSON_DEPTH_H

#include <stddef.h>

/* RNND_OK (0) when no [ or { outside strings in LEN bytes of TEXT nests deeper than MAX,
 * RNND_ERR_LIMIT otherwise. Unbalanced text is the parser's to reject. */
int rnnd_json_depth_check(const char *text, size_t len, long max);

#endif
