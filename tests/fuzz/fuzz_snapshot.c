/* Fuzz target: the sessions snapshot loader (src/snapshot.h, docs/state.md "File format").
 *
 * The first input byte is a mode, the rest is the file DIR/sessions.snap. A snapshot ends in
 * a SHA-256 of everything before it and (version 4) an HMAC-SHA256 with the snapshot key,
 * which random bytes never match; with mode bit 0 set the harness writes the right hash and
 * MAC (with FZ_SNAPSHOT_KEY, which it loads with), so the fuzzer reaches the record parser.
 * Mode bit 1 accepts unsigned snapshots (versions 2 and 3), as the start that creates the
 * key does. The file is loaded and every record walked with rnnd_snap_get, reading every
 * field and every state float (so a record pointing outside the map is caught by ASan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rnnd/status.h"
#include "sha256.h"
#include "snapkey.h"
#include "snapshot.h"

_Static_assert(sizeof FZ_SNAPSHOT_KEY - 1 == RNND_SNAPKEY_BYTES, "the test key's size");

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix_hash = data[0] & 1, accept_unsigned = (data[0] >> 1) & 1;
    const unsigned char *key = (const unsigned char *)FZ_SNAPSHOT_KEY;
    data++, size--;
    unsigned char *file = malloc(size ? size : 1);
    FZ_CHECK(file != NULL, "out of memory");
    if (size)
        memcpy(file, data, size);
    uint32_t version = 0;
    if (size >= 12)
        memcpy(&version, file + 8, 4);
    size_t mac = version >= 4 ? RNND_HMAC_BYTES : 0; /* version 4 ends in the MAC */
    if (fix_hash && size >= 32 + mac) {
        rnnd_sha256 sha;
        rnnd_sha256_init(&sha);
        rnnd_sha256_update(&sha, file, size - 32 - mac);
        rnnd_sha256_final(&sha, file + size - 32 - mac);
        if (mac)
            rnnd_hmac_sha256(key, RNND_SNAPKEY_BYTES, file, size - mac, file + size - mac);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", fz_tmpdir(), RNND_SNAPSHOT_FILE);
    fz_write_file(path, file, size);
    free(file);

    rnnd_snap *s = NULL;
    char err[512] = "";
    const char *reason = NULL;
    int rc =
        rnnd_snap_load(fz_tmpdir(), key, accept_unsigned, SIZE_MAX, &s, &reason, err, sizeof err);
    FZ_CHECK(rc == 0 || rc == RNND_ERR_INVALID || rc == RNND_ERR_NOMEM || rc == RNND_ERR_AUTH,
             "unexpected snapshot load status");
    FZ_CHECK((rc == RNND_ERR_AUTH) == (reason != NULL), "a refusal without its reason");
    FZ_CHECK((rc == 0) == (s != NULL), "load status and snapshot disagree");
    if (rc) {
        FZ_CHECK(err[0] != '\0', "a refusal without a message");
        return 0;
    }
    FZ_CHECK(rnnd_snap_bytes(s) == size, "snapshot size differs from the file's");
    size_t n = rnnd_snap_count(s);
    volatile double sink = 0;
    for (size_t i = 0; i < n; i++) {
        rnnd_snap_rec rec;
        memset(&rec, 0xa5, sizeof rec);
        rnnd_snap_get(s, i, &rec);
        FZ_CHECK(memchr(rec.id, 0, sizeof rec.id) != NULL, "record id not terminated");
        FZ_CHECK(memchr(rec.model, 0, sizeof rec.model) != NULL, "model name not terminated");
        FZ_CHECK(memchr(rec.digest, 0, sizeof rec.digest) != NULL, "digest not terminated");
        FZ_CHECK(rec.n_floats <= size / 4, "more state floats than the file holds");
        FZ_CHECK(rec.n_floats == 0 || ((uintptr_t)rec.state % sizeof(float)) == 0,
                 "state not aligned for floats");
        if (rec.has_gen) {
            FZ_CHECK(rec.gen.n_stop <= RNND_GEN_MAX_STOP, "too many stop strings");
            for (size_t k = 0; k < rec.gen.n_stop; k++)
                FZ_CHECK(memchr(rec.gen.stop[k], 0, sizeof rec.gen.stop[k]) != NULL,
                         "stop string not terminated");
        }
        for (size_t k = 0; k < rec.n_floats; k++)
            sink += rec.state[k];
        sink += (double)rec.steps + (double)rec.created + rec.ttl_s + rec.idle_s;
        sink += (double)strlen(rec.id) + (double)strlen(rec.model) + (double)strlen(rec.digest);
    }
    (void)sink;
    rnnd_snap_free(s);
    return 0;
}
