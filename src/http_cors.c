/* CORS: which browser origins may read a reply (cors_origins); http.c sets the headers that
 * say so. */
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

/* R's Origin when it is allowed, else NULL. */
const char *http_cors_origin(const rnnd_req *r)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    return origin_allowed(r->http->app->cfg->cors_origins, origin) ? origin : NULL;
}
