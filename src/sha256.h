/* SHA-256 (FIPS 180-4), small and dependency-free: model files, model digests, snapshots. */
#ifndef RNND_SHA256_H
#define RNND_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct rnnd_sha256 {
    uint32_t h[8];
    uint64_t nbytes;       /* total bytes fed so far */
    unsigned char buf[64]; /* a partial block */
    size_t nbuf;
} rnnd_sha256;

void rnnd_sha256_init(rnnd_sha256 *c);
void rnnd_sha256_update(rnnd_sha256 *c, const void *data, size_t len);
void rnnd_sha256_final(rnnd_sha256 *c, unsigned char out[32]);

/* rnnd_sha256_final() as lowercase hex into OUT (64 chars + NUL). */
void rnnd_sha256_final_hex(rnnd_sha256 *c, char out[65]);

/* One-shot: lowercase hex digest of DATA into OUT (64 chars + NUL). */
void rnnd_sha256_hex(const void *data, size_t len, char out[65]);

#endif
