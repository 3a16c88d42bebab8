/* API keys (see auth.h). */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rnnd/status.h"
#include "sha256.h"

#define KEY_MIN 16
#define KEY_MAX 256

void rnnd_auth_free(rnnd_auth *a)
{
    if (!a)
        return;
    /* the digests are not secrets, but there is no reason to leave them around */
    if (a->keys)
        memset(a->keys, 0, a->n * sizeof *a->keys);
    free(a->keys);
    a->keys = NULL;
    a->n = 0;
}

static int key_chars_ok(const char *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x21 || k[i] > 0x7e)
            return 0;
    return 1;
}

static void digest_of(const char *key, size_t n, unsigned char out[32])
{
    rnnd_sha256 c;
    rnnd_sha256_init(&c);
    rnnd_sha256_update(&c, key, n);
    rnnd_sha256_final(&c, out);
}

int rnnd_auth_load(rnnd_auth *a, const char *path, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (!path || !*path)
        return RNND_OK;
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RNND_ERR_IO;
    }
    char line[1024];
    int rc = RNND_OK;
    for (long lineno = 1; fgets(line, sizeof line, f); lineno++) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "%s:%ld: line too long", path, lineno);
            rc = RNND_ERR_INVALID;
            break;
        }
        char *fields[4], *save = NULL;
        int nf = 0;
        for (char *t = strtok_r(line, " \t\r\n", &save); t && nf < 4;
             t = strtok_r(NULL, " \t\r\n", &save))
            fields[nf++] = t;
        if (!nf || fields[0][0] == '#')
            continue;
        if (nf > 3) {
            snprintf(err, errlen, "%s:%ld: expected KEY [NAME [SCOPE]]", path, lineno);
            rc = RNND_ERR_INVALID;
            break;
        }
        size_t klen = strlen(fields[0]);
        if (klen < KEY_MIN || klen > KEY_MAX || !key_chars_ok(fields[0], klen)) {
            snprintf(err, errlen,
                     "%s:%ld: a key must be %d to %d printable characters "
                     "without spaces",
                     path, lineno, KEY_MIN, KEY_MAX);
            rc = RNND_ERR_INVALID;
            break;
        }
        int admin = 0;
        if (nf == 3 && !strcmp(fields[2], "admin")) {
            admin = 1;
        } else if (nf == 3 && strcmp(fields[2], "infer")) {
            snprintf(err, errlen, "%s:%ld: scope must be infer or admin, not \"%.32s\"", path,
                     lineno, fields[2]);
            rc = RNND_ERR_INVALID;
            break;
        }
        rnnd_key k;
        memset(&k, 0, sizeof k);
        if (nf >= 2)
            snprintf(k.name, sizeof k.name, "%s", fields[1]);
        else
            snprintf(k.name, sizeof k.name, "key%ld", lineno);
        k.admin = admin;
        digest_of(fields[0], klen, k.digest);
        memset(line, 0, sizeof line); /* the key itself is not kept */
        for (int i = 0; i < 8; i++)
            k.owner = k.owner << 8 | k.digest[i];
        if (!k.owner)
            k.owner = 1;
        for (size_t i = 0; i < a->n; i++) {
            if (!memcmp(a->keys[i].digest, k.digest, 32)) {
                snprintf(err, errlen, "%s:%ld: the same key as %s", path, lineno, a->keys[i].name);
                rc = RNND_ERR_INVALID;
                break;
            }
        }
        if (rc)
            break;
        rnnd_key *g = realloc(a->keys, (a->n + 1) * sizeof *g);
        if (!g) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = RNND_ERR_NOMEM;
            break;
        }
        a->keys = g;
        a->keys[a->n++] = k;
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = RNND_ERR_IO;
    }
    fclose(f);
    if (!rc && !a->n) {
        snprintf(err, errlen,
                 "%s: no key in the file (leave api_keys_file empty to turn "
                 "authentication off)",
                 path);
        rc = RNND_ERR_INVALID;
    }
    if (rc)
        rnnd_auth_free(a);
    return rc;
}

const rnnd_key *rnnd_auth_check(const rnnd_auth *a, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7))
        return NULL;
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    size_t n = strlen(key);
    while (n && key[n - 1] == ' ')
        n--;
    if (n < KEY_MIN || n > KEY_MAX)
        return NULL;
    unsigned char d[32];
    digest_of(key, n, d);
    /* every key's digest is compared in full, without an early exit */
    const rnnd_key *found = NULL;
    for (size_t i = 0; i < a->n; i++) {
        unsigned diff = 0;
        for (int j = 0; j < 32; j++)
            diff |= (unsigned)(d[j] ^ a->keys[i].digest[j]);
        /* branch-free select: the mask is all ones when diff == 0 */
        uintptr_t mask = (uintptr_t)0 - (uintptr_t)(diff == 0);
        found = (const rnnd_key *)(((uintptr_t)&a->keys[i] & mask) | ((uintptr_t)found & ~mask));
    }
    return found;
}
