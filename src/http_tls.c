/* TLS files: the certificate and key read whole as PEM text for libmicrohttpd, and the key
 * wiped when it is freed. */
#include "config.h"
#include "http_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole of PATH as a NUL-terminated string (PEM), or NULL with ERR. */
char *http_read_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *g = cap <= (1u << 20) ? realloc(buf, cap) : NULL;
            if (!g) {
                snprintf(err, errlen, "%s %s: too large or out of memory", what, path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = g;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (!n)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || !len) {
        snprintf(err, errlen, "%s %s: %s", what, path, bad ? "read error" : "empty file");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

void http_free_secret(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}
