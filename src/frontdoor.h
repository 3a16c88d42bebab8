/* The front door: what a request's head must be before any route sees it (RFC 9110/9112),
 * and how large it may be so that libmicrohttpd 0.9.75 can still answer it. MHD parses
 * loosely (a name "Content-Length " is just another field to it) and, when the request fills
 * its per-connection pool, closes without any answer; these checks refuse such requests with
 * an answer instead. */
#ifndef RNND_FRONTDOOR_H
#define RNND_FRONTDOOR_H

#include <stddef.h>

struct MHD_Connection;

/* Pool bytes each field or query argument record takes in libmicrohttpd 0.9.75 (measured:
 * a request stops being answered once its bytes plus 64 per record pass the pool less
 * ~140 bytes, at 32K and at every record count tried), and the room kept free for the
 * reply's head. */
#define RNND_FRONTDOOR_RECORD 64
#define RNND_FRONTDOOR_RESERVE 1024

/* The request-target URI (with its query), as it arrived. Returns 0, or RNND_ERR_LIMIT with a
 * message in ERR when its arguments are too many (max_header_bytes / 256) or it is too long
 * for the pool of MAX_HEADER_BYTES (its length plus RNND_FRONTDOOR_RECORD per argument over
 * MAX_HEADER_BYTES - RNND_FRONTDOOR_RESERVE): the caller answers 414. */
int rnnd_frontdoor_uri(const char *uri, size_t max_header_bytes, char *err, size_t errlen);

/* The whole head, once libmicrohttpd has parsed it: METHOD, the URI's length as it arrived
 * (URI_LEN), VERSION, and the fields and query arguments of CONN. Returns 0; RNND_ERR_LIMIT
 * when the head with its records leaves less than RNND_FRONTDOOR_RESERVE of
 * MAX_HEADER_BYTES (answer 431); RNND_ERR_INVALID when a field name is not a token, a value
 * holds a control character or a NUL (MHD drops what follows a NUL), a field is folded over
 * lines, the framing is ambiguous, or an HTTP/1.x other than 1.0 has not exactly one Host,
 * or any request two, or more than one Authorization (answer 400). Either way ERR says why, and the connection must close.
 * The head's size and the NUL check read MHD's read buffer, which 0.9.75 parses in place
 * (frontdoor.c says how); when it does not look so, they fall back to the parts' sum and
 * skip the NUL check. */
int rnnd_frontdoor_head(struct MHD_Connection *conn, const char *method, size_t uri_len,
                        const char *version, size_t max_header_bytes, char *err,
                        size_t errlen);

#endif
