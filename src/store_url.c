/* The store's settings as text (rnnd/store.h): the session_store URL,
 * redis://[USER@]HOST:PORT[/DB], and the node name. Strict on purpose: a URL that hiredis or
 * another client would read differently (percent escapes, query options, a password) is
 * refused rather than half understood. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rnnd/status.h"
#include "rnnd/store.h"

#define SCHEME "redis://"

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
        c == '-' || c == '_';
}

/* The decimal number [P, P + N) into *OUT when it is 1..MAXDIGITS digits, else -1. */
static int decimal(const char *p, size_t n, size_t maxdigits, long *out)
{
    if (n == 0 || n > maxdigits || strspn(p, "0123456789") < n)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    *out = v;
    return 0;
}

int rnnd_store_url_parse(const char *url, rnnd_store_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const size_t slen = strlen(SCHEME);
    if (strncmp(url, SCHEME, slen))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_store: expected redis://[USER@]HOST:PORT[/DB]");
    const char *p = url + slen;
    /* the authority ends at the first '/'; an '@' in it ends the user part */
    size_t auth_len = strcspn(p, "/");
    const char *at = memchr(p, '@', auth_len);
    if (at) {
        size_t ulen = (size_t)(at - p);
        /* named before any other check: the message must not go on to quote the password */
        if (memchr(p, ':', ulen))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "session_store: a password in the URL is refused (it would show "
                             "in --print-config and ps): put it in "
                             "session_store_password_file");
        if (ulen == 0 || ulen > RNND_STORE_USER_MAX)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "session_store: the user before '@' must be 1 to %d bytes",
                             RNND_STORE_USER_MAX);
        for (size_t i = 0; i < ulen; i++)
            if (!is_name_char(p[i]))
                return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                 "session_store: the user may hold only A-Z a-z 0-9 . _ -");
        memcpy(out->user, p, ulen);
        auth_len -= ulen + 1;
        p = at + 1;
        if (memchr(p, '@', auth_len))
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "session_store: more than one '@'");
    }
    /* HOST: a name or IPv4 address, or [IPv6]; then ':' PORT */
    const char *host = p, *colon;
    size_t hlen;
    if (*p == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (!close)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "session_store: '[' without ']'");
        host = p + 1;
        hlen = (size_t)(close - host);
        if (hlen == 0 || strspn(host, "0123456789abcdefABCDEF:.") < hlen)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                             "session_store: expected an IPv6 address between [ and ]");
        colon = close + 1;
        if ((size_t)(colon - p) > auth_len || *colon != ':')
            colon = NULL;
    } else {
        colon = memchr(p, ':', auth_len);
        hlen = colon ? (size_t)(colon - p) : auth_len;
        for (size_t i = 0; i < hlen; i++)
            if (!is_name_char(p[i]) || p[i] == '_')
                return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                 "session_store: the host may hold only A-Z a-z 0-9 . - (or an "
                                 "IPv6 address in [ ])");
    }
    if (hlen == 0 || hlen > RNND_STORE_HOST_MAX)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_store: the host must be 1 to %d bytes", RNND_STORE_HOST_MAX);
    memcpy(out->host, host, hlen);
    if (!colon)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_store: expected ':PORT' after the host");
    long port;
    size_t plen = (size_t)(p + auth_len - colon - 1);
    if (decimal(colon + 1, plen, 5, &port) || port < 1 || port > 65535)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_store: the port must be a number from 1 to 65535");
    out->port = (int)port;
    p += auth_len;
    if (*p == '\0')
        return RNND_OK;
    long db;
    if (decimal(p + 1, strlen(p + 1), 6, &db))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "session_store: expected /DB, a database number from 0 to 999999, and "
                         "nothing after it");
    out->db = (int)db;
    return RNND_OK;
}

int rnnd_store_name_check(const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    int ok = n >= 1 && n <= RNND_STORE_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = is_name_char(name[i]);
    return ok ? RNND_OK
              : rnnd_fail(RNND_ERR_INVALID, err, errlen,
                          "node_name: expected 1 to %d of A-Z a-z 0-9 . _ -", RNND_STORE_NAME_MAX);
}

int rnnd_store_node_name(const char *setting, char *out, char *err, size_t errlen)
{
    char host[256] = "";
    if (!*setting && gethostname(host, sizeof host - 1))
        host[0] = '\0';
    const char *name = *setting ? setting : host;
    if (rnnd_store_name_check(name, err, errlen))
        return *setting ? RNND_ERR_INVALID
                        : rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                    "node_name: the host name is not a node name (1 to %d of "
                                    "A-Z a-z 0-9 . _ -): set node_name",
                                    RNND_STORE_NAME_MAX);
    snprintf(out, RNND_STORE_NAME_MAX + 1, "%s", name);
    return RNND_OK;
}
