/* A bound on JSON nesting, checked on the text before a recursive parser (jansson) sees it:
 * model headers (RNND_MAX_JSON_DEPTH) and request bodies (max_json_depth). */
#ifndef RNND_JSON_DEPTH_H
#define RNND_JSON_DEPTH_H

#include <stddef.h>

/* RNND_OK (0) when no [ or { outside strings in LEN bytes of TEXT nests deeper than MAX,
 * RNND_ERR_LIMIT otherwise. Unbalanced text is the parser's to reject. */
int rnnd_json_depth_check(const char *text, size_t len, long max);

/* What decoding LEN bytes of TEXT would cost, in units of about one value: every 16 bytes 1,
 * and outside strings a comma 1 more and an opening bracket RNND_JSON_BRACKET_COST more (a
 * container costs a parser far more than a number). Text that is not JSON costs what it scans
 * as (its decoding fails early). The WebSocket loop decodes only cheap text itself
 * (docs/websocket.md). The same pass checks the nesting as rnnd_json_depth_check does: *DEEP
 * is set when it goes deeper than MAX (the pass stops there: the cost is of what was read). */
#define RNND_JSON_BRACKET_COST 16
size_t rnnd_json_decode_cost(const char *text, size_t len, long max, int *deep);

#endif
