/* The key that authenticates session snapshots (docs/state.md, docs/security.md "Files"):
 * HMAC-SHA256 (RFC 2104) over src/sha256.c, and the key file, 32 random bytes kept outside
 * state_dir so that whoever can write the state folder alone cannot forge sessions. */
#ifndef RNND_SNAPKEY_H
#define RNND_SNAPKEY_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define RNND_SNAPKEY_BYTES 32
#define RNND_HMAC_BYTES 32

typedef struct rnnd_hmac {
    rnnd_sha256 inner, outer;
} rnnd_hmac;

void rnnd_hmac_init(rnnd_hmac *h, const void *key, size_t keylen);
void rnnd_hmac_update(rnnd_hmac *h, const void *data, size_t len);
void rnnd_hmac_final(rnnd_hmac *h, unsigned char out[RNND_HMAC_BYTES]);
/* One-shot HMAC-SHA256 of DATA. */
void rnnd_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                      unsigned char out[RNND_HMAC_BYTES]);
/* 1 when A and B (N bytes) are equal; reads every byte whatever they hold. */
int rnnd_hmac_equal(const unsigned char *a, const unsigned char *b, size_t n);

/* The key file's path: SETTING when it is not "", else STATE_DIR (trailing '/' removed) +
 * ".key", a file beside the folder. *OUT is malloc'd. Returns 0, RNND_ERR_INVALID (no path
 * can be derived: STATE_DIR is "/") or RNND_ERR_NOMEM, with ERR. */
int rnnd_snapkey_path(const char *state_dir, const char *setting, char **out, char *err,
                      size_t errlen);

/* Refuse a key file inside STATE_DIR (at any depth, links resolved): whoever can write the
 * state folder must not be able to read or replace the key. Returns 0 (outside, or a folder
 * does not exist yet: the load or the snapshot reports that) or RNND_ERR_INVALID with ERR as
 * "PATH: reason". */
int rnnd_snapkey_check_outside(const char *path, const char *state_dir, char *err, size_t errlen);

/* Read the key at PATH into KEY; when there is no file, create it (O_EXCL, O_NOFOLLOW, mode
 * 0600) with 32 bytes from getrandom and set *CREATED. The file must be a regular file (not
 * a symbolic link) of exactly 32 bytes, owned by the effective uid, that neither group nor
 * others may read or write.
 * Returns 0 or RNND_ERR_INVALID / RNND_ERR_IO with ERR as "PATH: reason". */
int rnnd_snapkey_load(const char *path, unsigned char key[RNND_SNAPKEY_BYTES], int *created,
                      char *err, size_t errlen);

/* The rollback guard (docs/state.md, "Authentication"): the serial of the last snapshot begun
 * (recorded before the file is written), a decimal number in KEY_PATH + ".serial", beside the key
 * and as far from state_dir's writers. A signed snapshot whose serial is below it is an older one
 * put back.
 *
 * Read it into *SERIAL (0 when there is no file). The file must be a regular file (not a link),
 * owned by the effective uid, that group and others may not write. Returns 0 or RNND_ERR_INVALID /
 * RNND_ERR_IO / RNND_ERR_NOMEM with ERR as "PATH: reason". */
int rnnd_snapserial_read(const char *key_path, int64_t *serial, char *err, size_t errlen);
/* Replace it with SERIAL: KEY_PATH.serial.tmp (whatever is there removed first, then
 * O_EXCL|O_NOFOLLOW, 0600), fsync, rename, fsync of the folder. Returns 0 or a negative
 * status with ERR. */
int rnnd_snapserial_write(const char *key_path, int64_t serial, char *err, size_t errlen);

#endif
