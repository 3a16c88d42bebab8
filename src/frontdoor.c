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
static int is_ctl(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

int rnnd_frontdoor_uri(const char *uri, size_t max_header_bytes, char *err, size_t errlen)
{
    const char *q = strchr(uri, '?');
    size_t args = q && q[1] ? 1 : 0, len = strlen(uri);
    for (const char *p = q; p && *p; p++)
        args += *p == '&';
    /* each argument is a record in the pool: no route takes more than a few */
    size_t max_args = max_header_bytes / 256;
    if (args > max_args) {
        snprintf(err, errlen, "more than %zu query arguments (max_header_bytes / 256)", max_args);
        return RNND_ERR_LIMIT;
    }
    size_t room = max_header_bytes - RNND_FRONTDOOR_RESERVE;
    if (len + RNND_FRONTDOOR_RECORD * args > room) {
        snprintf(err, errlen,
                 "the URI of %zu bytes with %zu query arguments is too long: "
                 "its bytes plus %d per argument must stay within %zu (max_header_bytes "
                 "less %d)",
                 len, args, RNND_FRONTDOOR_RECORD, room, RNND_FRONTDOOR_RESERVE);
        return RNND_ERR_LIMIT;
    }
    return RNND_OK;
}

/* What rnnd_frontdoor_head() learns from the fields. */
struct head {
    int lengths;           /* Content-Length fields */
    int encodings;         /* Transfer-Encoding fields */
    int hosts;             /* Host fields */
    int auths;             /* Authorization fields */
    int bad_length;        /* a Content-Length that is not plain digits */
    int bad_encoding;      /* a Transfer-Encoding other than "chunked" */
    const char *bad_name;  /* a field name that is not a token */
    const char *bad_value; /* the name of a field whose value holds a control character */
    const char *folded;    /* the framing field that a folded line ran into */
    size_t records;        /* fields, arguments and cookies in the pool */
    size_t bytes;          /* their names and values, with ": " and CRLF */
    size_t copies;         /* bytes MHD copied into the pool (cookies) */
    const char *head_end;  /* the end of the head in MHD's read buffer, or NULL */
    const char *line_end;  /* the end of the last line seen there */
    int hidden;            /* bytes the fields do not show: a NUL in a value, a fold */
};

/* libmicrohttpd 0.9.75 parses the head in place, in arrival order, and turns each line's CR
 * and LF into NULs; a value ends at its first NUL, and a folded line is appended to the
 * field's name elsewhere in the pool. So between the end of one line's value and the next
 * name lie one or two NULs (LF, CRLF), and after the last value up to the head's end two to
 * four, unless the value held NULs, and maybe bytes after them (dropped without a word:
 * "Bearer KEY<NUL>junk" read as "Bearer KEY"), or a folded line sits there. Returns 1 when
 * [FROM, TO) is not 1 to MAX NULs. A single NUL before a bare LF reads as a CRLF: it hides
 * nothing but itself. */
static int shows_hidden(const char *from, const char *to, size_t max)
{
    if (to <= from || (size_t)(to - from) > max)
        return 1;
    for (; from < to; from++)
        if (*from)
            return 1;
    return 0;
}

/* libmicrohttpd 0.9.75 appends a folded line (obs-fold) to the field's NAME: "Host: a\r\n b"
 * becomes a field "Hostb". A name that starts with a framing field's name and goes on is
 * that, or a name no client sends. */
static const char *folded_framing(const char *key, size_t key_size)
{
    static const char *const framing[] = {MHD_HTTP_HEADER_CONTENT_LENGTH,
                                          MHD_HTTP_HEADER_TRANSFER_ENCODING, MHD_HTTP_HEADER_HOST};
    for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++) {
        size_t n = strlen(framing[i]);
        if (key_size > n && !strncasecmp(key, framing[i], n))
            return framing[i];
    }
    return NULL;
}

static enum MHD_Result head_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    struct head *f = cls;
    f->records++;
    f->bytes += key_size + value_size + 4;
    if (kind == MHD_COOKIE_KIND)
        f->copies += key_size + value_size + 2;
    if (kind != MHD_HEADER_KIND)
        return MHD_YES;
    if (f->head_end && !f->hidden) {
        f->hidden = key < f->line_end || key >= f->head_end || shows_hidden(f->line_end, key, 2);
        if (!f->hidden && value && value >= key && value + value_size <= f->head_end)
            f->line_end = value + value_size;
        else
            f->hidden = 1;
    }
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
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION)) {
        f->auths++;
    }
    return MHD_YES;
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
                        const char *version, size_t max_header_bytes, char *err, size_t errlen)
{
    struct head f = {0};
    char name[48];
    /* the head as it arrived: the blanks MHD skips took pool room too (padded with them, a
     * head slipped past a sum of the parts and got no answer) */
    const union MHD_ConnectionInfo *hi =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t head = hi ? hi->header_size : 0;
    const char *line_end = version + strlen(version);
    if (head && line_end > method && (size_t)(line_end - method) < head) {
        f.head_end = method + head;
        f.line_end = line_end;
    }
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND | MHD_COOKIE_KIND,
                                head_field, &f);
    if (f.head_end && !f.hidden)
        f.hidden = shows_hidden(f.line_end, f.head_end, 4);
    /* the head, a record for each field, argument and cookie, and the cookies' copy */
    size_t parts = strlen(method) + uri_len + strlen(version) + 4 + f.bytes + 2;
    size_t used = (head > parts ? head : parts) + RNND_FRONTDOOR_RECORD * f.records + f.copies;
    size_t room = max_header_bytes - RNND_FRONTDOOR_RESERVE;
    if (used > room) {
        snprintf(err, errlen,
                 "the request head takes about %zu bytes with its %zu fields and "
                 "arguments (%d each): more than %zu (max_header_bytes less %d)",
                 used, f.records, RNND_FRONTDOOR_RECORD, room, RNND_FRONTDOOR_RESERVE);
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
    if (f.hidden) {
        snprintf(err, errlen, "a field value holds a NUL, or a field is folded over lines");
        return RNND_ERR_INVALID;
    }
    if (f.folded) {
        snprintf(err, errlen, "%s is folded over lines, or a field name runs on from it", f.folded);
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
    /* RFC 9112 6.1: HTTP/1.0 has no chunked coding, so a 1.0 proxy frames this request with
     * no body and reads the chunks, and what follows, as the next request (MHD dechunked it
     * and answered both) */
    if (f.encodings && !strcmp(version, MHD_HTTP_VERSION_1_0)) {
        snprintf(err, errlen,
                 "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1: its "
                 "framing is faulty)");
        return RNND_ERR_INVALID;
    }
    /* libmicrohttpd answers HTTP/2 and 3 with 505 and a request without a version with 400
     * itself; what reaches here is HTTP/1.0 to HTTP/1.9 */
    if (f.hosts > 1) {
        snprintf(err, errlen, "more than one Host header");
        return RNND_ERR_INVALID;
    }
    /* MHD hands over the first of two; a proxy that checked the other would be fooled */
    if (f.auths > 1) {
        snprintf(err, errlen, "more than one Authorization header");
        return RNND_ERR_INVALID;
    }
    if (strcmp(version, MHD_HTTP_VERSION_1_0) && !f.hosts) {
        snprintf(err, errlen, "%s requires exactly one Host header", version);
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}

/* ---- the request line, Host and trailers (issue 13, round 3) ---------------------------- */

int rnnd_frontdoor_path(const char *uri, char *err, size_t errlen)
{
    /* libmicrohttpd routes on the percent-decoded path: "/v1%2fsessions%2fID" reached the
     * session route, "ID%00zz" the session ID, so a proxy's path rules could be walked
     * around. No rnnd path needs a '%' (ids and model names are [A-Za-z0-9._-]). */
    size_t path = strcspn(uri, "?");
    const char *pct = memchr(uri, '%', path);
    if (pct) {
        snprintf(err, errlen,
                 "the path holds a '%%' at byte %zu: percent-encoding is not "
                 "accepted in the path (only in the query)",
                 (size_t)(pct - uri));
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}

int rnnd_frontdoor_line(const char *method, const char *uri, size_t uri_len, const char *version)
{
    /* 0.9.75 splits the line in place at its first space (the method's end) and its last
     * (the version's start), turning both into NULs; a NUL anywhere else shortens the
     * method or the URI that C strings show, while the line's bytes still run on. */
    const char *m_end = method + strlen(method);
    if (!uri || uri <= m_end || uri >= version)
        return RNND_OK; /* not laid out as 0.9.75 does: nothing to compare */
    for (const char *p = m_end + 1; p < uri; p++)
        if (*p != ' ')
            return RNND_ERR_INVALID;
    if (uri + uri_len + 1 != version)
        return RNND_ERR_INVALID;
    return RNND_OK;
}

/* RFC 3986 3.2.2: unreserved, sub-delims, and (here only as "%" HEXDIG HEXDIG) pct-encoded */
static int is_reg_name(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        (c && strchr("-._~!$&'()*+,;=", c));
}

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int rnnd_frontdoor_host(const char *host, char *err, size_t errlen)
{
    if (!host)
        return RNND_OK; /* HTTP/1.0 without one: rnnd_frontdoor_head() decides */
    const char *p = host;
    if (*p == '[') { /* IP-literal: IPv6address or IPvFuture, loosely */
        for (p++; *p && *p != ']'; p++)
            if (!is_reg_name((unsigned char)*p) && *p != ':')
                break;
        if (*p != ']' || p == host + 1)
            goto bad;
        p++;
    } else {
        for (; *p && *p != ':'; p++) {
            if (*p == '%' && is_hex((unsigned char)p[1]) && is_hex((unsigned char)p[2]))
                p += 2;
            else if (!is_reg_name((unsigned char)*p))
                goto bad;
        }
    }
    if (*p == ':')
        p += 1 + strspn(p + 1, "0123456789");
    if (!*p)
        return RNND_OK;
bad:
    snprintf(err, errlen,
             "the Host value must be a host with an optional \":\" port "
             "(RFC 9110 7.2, RFC 3986 3.2.2: no userinfo, path or spaces)");
    return RNND_ERR_INVALID;
}

static enum MHD_Result count_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    (void)kind, (void)key, (void)key_size, (void)value, (void)value_size;
    (*(size_t *)cls)++;
    return MHD_YES;
}

int rnnd_frontdoor_trailers(struct MHD_Connection *conn, char *err, size_t errlen)
{
    /* libmicrohttpd keeps trailer fields without any of the head's checks (a NUL, a fold,
     * "Content-Length: 50" all passed), and no route reads one */
    size_t n = 0;
    MHD_get_connection_values_n(conn, MHD_FOOTER_KIND, count_field, &n);
    if (n) {
        snprintf(err, errlen,
                 "the chunked body ends with %zu trailer field%s: rnnd accepts "
                 "none",
                 n, n == 1 ? "" : "s");
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}
