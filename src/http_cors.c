/* CORS: which browser origins may read a reply (cors_origins), and the headers that say so. */
#include "config.h"
#include "http_internal.h"

#include <string.h>

/* Is ORIGIN in the comma-separated allow-list LIST (or is LIST "*")? */
static int origin_allowed(const char *list, const char *origin)
{
    if (!*list || !origin || !*origin)
        return 0;
    size_t on = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && p[m - 1] == ' ')
            m--;
        if ((m == 1 && *p == '*') || (m == on && !strncmp(p, origin, on)))
            return 1;
        p += n;
    }
    return 0;
}

/* CORS: a browser's request from an allowed origin may read the reply. Returns 1 when the
 * origin is allowed (and the headers are set). */
int http_cors_headers(rnnd_req *r)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin_allowed(r->http->app->cfg->cors_origins, origin))
        return 0;
    rnnd_reply_header(r, "Access-Control-Allow-Origin", origin);
    rnnd_reply_header(r, "Vary", "Origin");
    rnnd_reply_header(r, "Access-Control-Expose-Headers", "Location, Retry-After");
    return 1;
}
