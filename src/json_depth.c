/* JSON nesting bound and decoding cost (rnnd/json_depth.h). */
#include "config.h"
#include "rnnd/json_depth.h"

#include <limits.h>

#include "rnnd/status.h"

/* One pass over TEXT, strings skipped as JSON has them: whether a [ or { outside strings
 * nests deeper than MAX (then it stops at once), and the decoding cost of what it read.
 * Every byte costs 1/16, a number's digits as a string's (jansson buffers both: 60 KB of
 * either ~0.55 ms; trial 34 found a 65 KB number cost nothing here). */
static int scan(const char *text, size_t len, long max, size_t *cost)
{
    long depth = 0;
    int in_str = 0;
    size_t units = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\')
                i++; /* skip the escaped character, which may be a quote */
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max) {
                *cost = units + (i + 1) / 16;
                return RNND_ERR_LIMIT;
            }
            units += RNND_JSON_BRACKET_COST;
        } else if (ch == ']' || ch == '}') {
            depth--; /* unbalanced text is the parser's to reject */
        } else if (ch == ',') {
            units++;
        }
    }
    *cost = units + len / 16;
    return 0;
}

int rnnd_json_depth_check(const char *text, size_t len, long max)
{
    size_t cost;
    return scan(text, len, max, &cost);
}

size_t rnnd_json_decode_cost(const char *text, size_t len, long max, int *deep)
{
    size_t cost = 0;
    *deep = scan(text, len, max, &cost) != 0;
    return cost;
}
