/* The access log's parts that http.c (a reply) and http_sse.c (a stream) both log: the
 * request's path with session ids hidden, and the time since it began. */
#include "config.h"
#include "http_internal.h"

#include <string.h>
#include <strings.h>

#include "log.h"
#include "rng.h"
#include "rnnd/status.h"

/* The path for a debug log line. A session id is a capability and stays out of logs: the
 * segment after any "sessions" segment (in any case) becomes {id}, whether or not the path
 * is a route, and so does anything shaped like an id anywhere else (rnnd_log_quote_ids():
 * "/v1/sessionsX/ID", "/ID", "/v1/sessions/x/../ID" were logged whole). A path cut to fit
 * r->path may end inside an id: a hex run at its end is dropped too. Quoted, as the rest is
 * the client's. */
const char *http_log_path(const rnnd_req *r, char *out, size_t n)
{
    char tmp[sizeof r->path + 8];
    size_t j = 0;
    int after_sessions = 0;
    for (const char *p = r->path; *p && j + 5 < sizeof tmp;) {
        if (*p == '/') {
            tmp[j++] = *p++;
            continue;
        }
        size_t len = strcspn(p, "/");
        if (after_sessions) {
            memcpy(tmp + j, "{id}", 4);
            j += 4;
        } else {
            size_t room = sizeof tmp - 1 - j;
            memcpy(tmp + j, p, len < room ? len : room);
            j += len < room ? len : room;
        }
        after_sessions = len == 8 && !strncasecmp(p, "sessions", 8);
        p += len;
    }
    if (strlen(r->path) + 1 >= sizeof r->path) {
        size_t k = j;
        while (k && strchr("0123456789abcdefABCDEF", tmp[k - 1]))
            k--;
        if (k < j && j - k < RNND_ID_LEN) {
            k = k < sizeof tmp - 5 ? k : sizeof tmp - 5;
            memcpy(tmp + k, "{id}", 4);
            j = k + 4;
        }
    }
    tmp[j] = '\0';
    return rnnd_log_quote_ids(out, n, tmp);
}

double http_elapsed_ms(double t0) { return (rnnd_mono_s() - t0) * 1e3; }
