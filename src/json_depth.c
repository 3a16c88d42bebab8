/* JSON nesting bound (rnnd/json_depth.h). */
#include "config.h"
#include "rnnd/json_depth.h"

#include "rnnd/status.h"

int rnnd_json_depth_check(const char *text, size_t len, long max)
{
    long depth = 0;
    int in_str = 0;
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
            if (++depth > max)
                return RNND_ERR_LIMIT;
        } else if (ch == ']' || ch == '}') {
            depth--; /* unbalanced text is the parser's to reject */
        }
    }
    return 0;
}
