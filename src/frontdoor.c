#include "frontdoor.h"

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rnnd/status.h"

/* RFC 9110 5.6.2: tchar */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 9110 5.5: a value is visible characters, spaces and tabs (and obs-text) */
static int is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

int rnnd_frontdoor_uri(const char *uri, size_t max_header_bytes, char *err, size_t errlen)
{
    const char *q = strchr(uri, '?');
    size_t args = q && q[1] ? 1 : 0, len = strlen(uri);
    for (const char *p = q; p && *p; p++)
        args += *p == '&';
    /* each argument is a record in the pool: no route takes more than a few */
    size_t max_args = max_header_bytes / 256;
    if (args > max_args) {
        snprintf(err, errlen, "more than %zu query arguments (max_header_bytes / 256)",
                 max_args);
        return RNND_ERR_LIMIT;
    }
    size_t room = max_header_bytes - RNND_FRONTDOOR_RESERVE;
    if (len + RNND_FRONTDOOR_RECORD * args > room) {
        snprintf(err, errlen, "the URI of %zu bytes with %zu query arguments is too long: "
                 "its bytes plus %d per argument must stay within %zu (max_header_bytes "
                 "less %d)", len, args, RNND_FRONTDOOR_RECORD, room, RNND_FRONTDOOR_RESERVE);
        return RNND_ERR_LIMIT;
    }
    return RNND_OK;
}

/* What rnnd_frontdoor_head() learns from the fields. */
struct head {
    int lengths;            /* Content-Length fields */
    int encodings;          /* Transfer-Encoding fields */
    int hosts;              /* Host fields */
    int bad_length;         /* a Content-Length that is not plain digits */
    int bad_encoding;       /* a Transfer-Encoding other than "chunked" */
    const char *bad_name;   /* a field name that is not a token */
    const char *bad_value;  /* the name of a field whose value holds a control character */
    const char *folded;     /* the framing field that a folded line ran into */
    size_t records;         /* fields, arguments and cookies in the pool */
    size_t bytes;           /* their names and values, with ": " and CRLF */
};

/* libmicrohttpd 0.9.75 appends a folded line (obs-fold) to the field's NAME: "Host: a\r\n b"
 * becomes a field "Hostb". A name that starts with a framing field's name and goes on is
 * that, or a name no client sends. */
static const char *folded_framing(const char *key, size_t key_size)
{
    static const char *const framing[] = {MHD_HTTP_HEADER_CONTENT_LENGTH,
                                          MHD_HTTP_HEADER_TRANSFER_ENCODING,
                                          MHD_HTTP_HEADER_HOST};
    for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++) {
        size_t n = strlen(framing[i]);
        if (key_size > n && !strncasecmp(key, framing[i], n))
            return framing[i];
    }
    return NULL;
}

/* The spaces and tabs between a field's colon and its value, which libmicrohttpd 0.9.75
 * skips without a trace, yet which took room in the pool: padded with them, a head slipped
 * past the estimate and got no answer. MHD parses in place: the name, its colon (now a NUL),
 * the skipped blanks and the value lie in that order in its read buffer. Anything else
 * (a name moved by a folded line) counts 0. */
static size_t skipped_blanks(const char *key, size_t key_size, const char *value)
{
    const char *p = key + key_size + 1;
    if (!value || value < p)
        return 0;
    while (p < value && (*p == ' ' || *p == '\t'))
        p++;
    return p == value ? (size_t)(value - (key + key_size + 1)) : 0;
}

static enum MHD_Result head_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    struct head *f = cls;
    f->records++;
    f->bytes += key_size + value_size + 4;
    if (kind != MHD_HEADER_KIND)
        return MHD_YES;
    f->bytes += skipped_blanks(key, key_size, value);
    for (size_t i = 0; i < key_size && !f->bad_name; i++)
        if (!is_tchar((unsigned char)key[i]))
            f->bad_name = key;
    if (!key_size && !f->bad_name)
        f->bad_name = "";
    for (size_t i = 0; value && i < value_size && !f->bad_value; i++)
        if (is_ctl((unsigned char)value[i]))
            f->bad_value = key;
    if (!f->folded)
        f->folded = folded_framing(key, key_size);
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        f->lengths++;
        f->bad_length |= !value || !*value || strspn(value, "0123456789") != value_size;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->encodings++;
        f->bad_encoding |= !value || strcasecmp(value, "chunked");
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST)) {
        f->hosts++;
    }
    return MHD_YES;
}

/* The request line's length. Blanks between its parts are skipped without a trace too
 * (skipped_blanks): METHOD and VERSION lie in MHD's read buffer, in place, so the span from
 * one to the end of the other is the line as it arrived; when they do not, the parts. */
static size_t request_line(const char *method, size_t uri_len, const char *version,
                           size_t max_header_bytes)
{
    size_t parts = strlen(method) + uri_len + strlen(version) + 4;
    const char *end = version + strlen(version);
    if (end > method && (size_t)(end - method) + 2 > parts &&
        (size_t)(end - method) < max_header_bytes)
        return (size_t)(end - method) + 2;
    return parts;
}

/* a name for a message: printable, and short */
static const char *shown(const char *name, char *buf, size_t len)
{
    size_t i = 0;
    for (; name[i] && i + 1 < len && i < 40; i++)
        buf[i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
    buf[i] = '\0';
    return buf;
}

int rnnd_frontdoor_head(struct MHD_Connection *conn, const char *method, size_t uri_len,
                        const char *version, size_t max_header_bytes, char *err,
                        size_t errlen)
{
    struct head f = {0};
    char name[48];
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND |
                                MHD_COOKIE_KIND, head_field, &f);
    /* the request line, the fields, the blank line, and a record for each */
    size_t used = request_line(method, uri_len, version, max_header_bytes) + f.bytes + 2 +
                  RNND_FRONTDOOR_RECORD * f.records;
    size_t room = max_header_bytes - RNND_FRONTDOOR_RESERVE;
    if (used > room) {
        snprintf(err, errlen, "the request head takes about %zu bytes with its %zu fields and "
                 "arguments (%d each): more than %zu (max_header_bytes less %d)", used,
                 f.records, RNND_FRONTDOOR_RECORD, room, RNND_FRONTDOOR_RESERVE);
        return RNND_ERR_LIMIT;
    }
    /* RFC 9112 5.1: whitespace before the colon makes a name no proxy agrees on */
    if (f.bad_name) {
        snprintf(err, errlen, "a field name must be a token (RFC 9110 5.6.2): \"%s\"",
                 shown(f.bad_name, name, sizeof name));
        return RNND_ERR_INVALID;
    }
    if (f.bad_value) {
        snprintf(err, errlen, "the value of %s holds a control character",
                 shown(f.bad_value, name, sizeof name));
        return RNND_ERR_INVALID;
    }
    if (f.folded) {
        snprintf(err, errlen, "%s is folded over lines, or a field name runs on from it",
                 f.folded);
        return RNND_ERR_INVALID;
    }
    /* Request smuggling (RFC 9112 6.3): a proxy in front of us and libmicrohttpd may frame
     * an ambiguous request differently (MHD takes the first of two Content-Lengths, and lets
     * one sit beside chunked) */
    if (f.lengths > 1) {
        snprintf(err, errlen, "more than one Content-Length");
        return RNND_ERR_INVALID;
    }
    if (f.bad_length) {
        snprintf(err, errlen, "Content-Length must be a decimal number");
        return RNND_ERR_INVALID;
    }
    if (f.encodings && f.lengths) {
        snprintf(err, errlen, "Content-Length together with Transfer-Encoding");
        return RNND_ERR_INVALID;
    }
    if (f.encodings > 1 || f.bad_encoding) {
        snprintf(err, errlen, "the only Transfer-Encoding accepted is a single \"chunked\"");
        return RNND_ERR_INVALID;
    }
    /* libmicrohttpd answers HTTP/2 and 3 with 505 and a request without a version with 400
     * itself; what reaches here is HTTP/1.0 to HTTP/1.9 */
    if (f.hosts > 1) {
        snprintf(err, errlen, "more than one Host header");
        return RNND_ERR_INVALID;
    }
    if (strcmp(version, MHD_HTTP_VERSION_1_0) && !f.hosts) {
        snprintf(err, errlen, "%s requires exactly one Host header", version);
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}
