/* API keys (the api_keys_file setting; docs/security.md): who may call the daemon, and who
 * owns which session.
 *
 * The file holds one key per line: `KEY [NAME [SCOPE]]`, whitespace-separated; `#` starts a
 * comment line. KEY is 16 to 256 printable ASCII characters without spaces; NAME (default
 * "key<LINE>") appears in logs instead of the key; SCOPE is `infer` (default: models, infer,
 * generation, and its own sessions) or `admin` (also every key's sessions and /metrics).
 *
 * Keys are kept only as SHA-256 digests and compared in constant time: checking a guess
 * hashes it and compares it with every key's digest, all bytes, whatever matches. A key's
 * owner id (the first 8 bytes of its digest, never 0) marks the sessions it creates; it is
 * stable across restarts and reorderings of the file, so snapshots keep their owners. */
#ifndef RNND_AUTH_H
#define RNND_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define RNND_KEY_NAME_MAX 63

typedef struct rnnd_key {
    char name[RNND_KEY_NAME_MAX + 1];
    uint64_t owner; /* never 0 */
    int admin;
    unsigned char digest[32];
} rnnd_key;

typedef struct rnnd_auth {
    rnnd_key *keys;
    size_t n; /* 0: authentication is off */
} rnnd_auth;

/* Read PATH ("" or NULL: authentication off). Errors name the file and line: unreadable,
 * a key too short or long or with bad characters, an unknown scope, a repeated key, no key
 * at all. Returns 0 or RNND_ERR_INVALID / RNND_ERR_IO / RNND_ERR_NOMEM. */
int rnnd_auth_load(rnnd_auth *a, const char *path, char *err, size_t errlen);
void rnnd_auth_free(rnnd_auth *a);

/* The key an Authorization header value ("Bearer KEY") names, or NULL (missing, malformed, or
 * no such key). Constant time in the keys' contents. */
const rnnd_key *rnnd_auth_check(const rnnd_auth *a, const char *authorization);

#endif
