/* The sessions snapshot file: every live session's id, model name and state digest, step count,
 * times, generation defaults and state, in one file written atomically (a temporary file,
 * fsync, rename, fsync of the folder) and checked whole on reading: an HMAC-SHA256 with the
 * snapshot key (snapkey.h) over everything before it, then the SHA-256 of everything before
 * the trailer's hash. docs/state.md describes the format and the guarantees.
 *
 * Writing streams records as they come (no copy of all states in memory); reading reads the
 * whole file into memory (bounded: rnnd_snap_max_bytes) and hands out records that point into
 * it. */
#ifndef RNND_SNAPSHOT_H
#define RNND_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"

#define RNND_SNAPSHOT_FILE "sessions.snap"

typedef struct rnnd_snap_rec {
    char id[33];     /* 32 hex digits */
    char model[256]; /* the model's name */
    char digest[65]; /* the model's digest (64 hex digits), rnnd_model_digest() */
    int file_digest; /* read from a version 2 snapshot: DIGEST is the model file's
                                 * SHA-256 (rnnd_model_file_digest()) instead */
    uint64_t owner;  /* the API key that owns it (auth.h), 0 without keys */
    uint64_t steps;
    int64_t created; /* unix seconds */
    double ttl_s;
    double idle_s; /* of the ttl, already spent */
    int has_gen;   /* generation defaults present */
    rnnd_gen_params gen;
    const float *state;
    size_t n_floats;
} rnnd_snap_rec;

typedef struct rnnd_snap_writer rnnd_snap_writer;

/* Start a temporary file in DIR (sessions.snap.tmp- and 16 random hex digits), signed with
 * KEY (RNND_SNAPKEY_BYTES), its header's serial
 * SERIAL (the caller keeps it rising: snapkey.h, the rollback guard): created with O_EXCL,
 * O_NOFOLLOW, mode 0600, relative to DIR, so that nothing planted there (a link, a FIFO, a
 * folder) is written through, blocks, or has to be removed. Returns 0 or RNND_ERR_IO /
 * RNND_ERR_NOMEM with ERR naming the file and the reason. */
int rnnd_snap_writer_open(const char *dir, const unsigned char *key, int64_t serial,
                          rnnd_snap_writer **out, char *err, size_t errlen);
/* Remove the temporary files a crashed writer left in DIR (names of exactly the writer's
 * form; no link followed). Call before any writer runs (start-up). *REMOVED gets the count.
 * Returns 0 or RNND_ERR_IO with ERR. */
int rnnd_snap_remove_stale(const char *dir, size_t *removed, char *err, size_t errlen);
/* Append one record. Returns 0 or RNND_ERR_IO (the writer is then failed: commit refuses). */
int rnnd_snap_writer_add(rnnd_snap_writer *w, const rnnd_snap_rec *rec);
/* Finish: trailer, fsync, rename over DIR/sessions.snap (a link there is replaced, not
 * followed), fsync DIR. Frees W either way.
 * *BYTES (may be NULL) gets the file size. Returns 0 or RNND_ERR_IO with ERR. */
int rnnd_snap_writer_commit(rnnd_snap_writer *w, size_t *records, size_t *bytes, char *err,
                            size_t errlen);
/* Give up: the temporary file is removed, the last snapshot stays. NULL is a no-op. */
void rnnd_snap_writer_abort(rnnd_snap_writer *w);

typedef struct rnnd_snap rnnd_snap;

/* The largest snapshot a daemon with these limits can write: MAX_SESSIONS records of the
 * largest fixed part, MAX_STATE_BYTES of states (the session table's whole budget), header
 * and trailer. SIZE_MAX on overflow. */
size_t rnnd_snap_max_bytes(size_t max_sessions, size_t max_state_bytes);

/* Read and check DIR/sessions.snap: this build's version 4, whose MAC must be KEY's
 * (RNND_SNAPKEY_BYTES); or, only with ACCEPT_UNSIGNED (the start that created the key),
 * an unsigned version 3 or version 2 (from before state digests). Returns 0; 1 when there is
 * no snapshot; RNND_ERR_AUTH with *REASON "bad_mac" (another key's, altered, truncated) or
 * "unsigned"; RNND_ERR_INVALID with *REASON "symlink" or "not_regular" (a FIFO, a folder:
 * never opened for reading, never blocks), "not_owner" (not the effective uid's) or
 * "too_large" (above MAX_BYTES, rnnd_snap_max_bytes: refused before any of it is read); or
 * RNND_ERR_INVALID (corrupt, unknown version:
 * ERR says which, *REASON NULL) / RNND_ERR_IO. ERR says why in every case. *REASON set means
 * the file is to be refused, not merely skipped. */
int rnnd_snap_load(const char *dir, const unsigned char *key, int accept_unsigned, size_t max_bytes,
                   rnnd_snap **out, const char **reason, char *err, size_t errlen);
size_t rnnd_snap_count(const rnnd_snap *s);
size_t rnnd_snap_bytes(const rnnd_snap *s);
unsigned rnnd_snap_version(const rnnd_snap *s);
/* The header's serial: the unix time it was written, raised above the previous snapshot's
 * when the clock is not ahead of it (before the rollback guard: the time alone). */
int64_t rnnd_snap_serial(const rnnd_snap *s);
/* Record I (its state points into the snapshot's memory, valid until rnnd_snap_free). */
void rnnd_snap_get(const rnnd_snap *s, size_t i, rnnd_snap_rec *rec);
void rnnd_snap_free(rnnd_snap *s); /* NULL is a no-op */

#endif
