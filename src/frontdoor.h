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
 * lines, the framing is ambiguous (in any version), an HTTP/1.0 request has a
 * Transfer-Encoding, an HTTP/1.x other than 1.0 has not exactly one Host, or any request two,
 * or more than one Authorization (answer 400). Either way ERR says why, and the connection
 * must close.
 * The head's size and the NUL check read MHD's read buffer, which 0.9.75 parses in place
 * (frontdoor.c says how); when it does not look so, they fall back to the parts' sum and
 * skip the NUL check. */
int rnnd_frontdoor_head(struct MHD_Connection *conn, const char *method, size_t uri_len,
                        const char *version, size_t max_header_bytes, char *err, size_t errlen);

/* The path part (before any '?') of the request-target URI as it arrived, before
 * libmicrohttpd decodes it: RNND_ERR_INVALID with a message when it holds a '%' (answer
 * 400). The query keeps its percent-decoding. */
int rnnd_frontdoor_path(const char *uri, char *err, size_t errlen);

/* The request line as libmicrohttpd 0.9.75 split it in its read buffer: METHOD and VERSION
 * as handed to the request handler, URI the request-target where the URI log callback saw
 * it, URI_LEN its strlen() there. Returns RNND_ERR_INVALID when a NUL hides bytes of the
 * method or the URI (answer 400 and close); 0 when not, or when the pointers do not lie in
 * one line as 0.9.75 leaves them. */
int rnnd_frontdoor_line(const char *method, const char *uri, size_t uri_len, const char *version);

/* HOST, the value of the one Host field (or NULL): RNND_ERR_INVALID with a message unless it
 * is uri-host [":" port] (RFC 9110 7.2), e.g. "u:p@x:99" (answer 400 and close). */
int rnnd_frontdoor_host(const char *host, char *err, size_t errlen);

/* The trailer fields of CONN's chunked body: RNND_ERR_INVALID with a message when there are
 * any (answer 400 and close, without executing the request). */
int rnnd_frontdoor_trailers(struct MHD_Connection *conn, char *err, size_t errlen);

#endif
