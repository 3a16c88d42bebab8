/* Fuzz target: the sessions snapshot loader (src/snapshot.h, docs/state.md "File format").
 *
 * The first input byte is a mode, the rest is the file DIR/sessions.snap. A snapshot ends in
 * a SHA-256 of everything before it, which random bytes never match; with mode bit 0 set the
 * harness writes the right hash over the last 32 bytes, so the fuzzer reaches the record
 * parser. The file is loaded and every record walked with rnnd_snap_get, reading every field
 * and every state float (so a record pointing outside the map is caught by ASan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rnnd/status.h"
#include "sha256.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix_hash = data[0] & 1;
    data++, size--;
    unsigned char *file = malloc(size ? size : 1);
    FZ_CHECK(file != NULL, "out of memory");
    if (size)
        memcpy(file, data, size);
    if (fix_hash && size >= 32) {
        rnnd_sha256 sha;
        rnnd_sha256_init(&sha);
        rnnd_sha256_update(&sha, file, size - 32);
        rnnd_sha256_final(&sha, file + size - 32);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", fz_tmpdir(), RNND_SNAPSHOT_FILE);
    fz_write_file(path, file, size);
    free(file);

    rnnd_snap *s = NULL;
    char err[512] = "";
    int rc = rnnd_snap_load(fz_tmpdir(), &s, err, sizeof err);
    FZ_CHECK(rc == 0 || rc == RNND_ERR_INVALID || rc == RNND_ERR_NOMEM,
             "unexpected snapshot load status");
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
