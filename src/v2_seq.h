/* Triton's sequence extension on rnnd sessions: a map from (model, sequence_id) to the id of
 * the session that holds the sequence's state (docs/v2.md).
 *
 * The map only names sessions; the session table owns them. So an entry can outlive its
 * session (expired, evicted or deleted): a caller that finds the session gone removes the
 * entry and answers as for an unknown sequence. The map is bounded: an insertion into a full
 * map first drops the entries whose sessions are gone.
 *
 * Concurrency: one mutex over the whole map; no other lock of ours is held under it except
 * the session table's own (rnnd_session_get), taken only while purging. */
#ifndef RNND_V2_SEQ_H
#define RNND_V2_SEQ_H

#include <stddef.h>
#include <stdint.h>

#include "registry.h"
#include "rng.h"
#include "session.h"

#define RNND_V2_SEQ_STR_MAX 256 /* longest string sequence_id, in bytes */

typedef struct rnnd_v2_seq rnnd_v2_seq;

/* A sequence id as Triton sends it: a uint64 (never 0) or a non-empty string. */
typedef struct rnnd_v2_seq_key {
    char model[RNND_MODEL_NAME_MAX + 1]; /* the model's name */
    uint64_t owner;                      /* the API key's owner id (auth.h), 0 without keys */
    int is_str;
    uint64_t num;                      /* when !is_str */
    char str[RNND_V2_SEQ_STR_MAX + 1]; /* when is_str, NUL-terminated */
} rnnd_v2_seq_key;

/* A map of at most MAX entries over the session table SESSIONS (which must outlive it).
 * NULL when out of memory. */
rnnd_v2_seq *rnnd_v2_seq_new(rnnd_session_table *sessions, size_t max);
void rnnd_v2_seq_free(rnnd_v2_seq *m); /* NULL is a no-op */

/* Map KEY to session SID. When KEY was mapped already its old session id goes to OLD_SID
 * (else OLD_SID is ""): the caller removes that session. Returns 0, RNND_ERR_LIMIT when the
 * map is full of live sequences, or RNND_ERR_NOMEM. Takes the map's mutex. */
int rnnd_v2_seq_put(rnnd_v2_seq *m, const rnnd_v2_seq_key *key, const char *sid,
                    char old_sid[RNND_ID_LEN + 1]);

/* The session id KEY maps to, copied to SID. Returns 0 or RNND_ERR_INVALID (no entry). */
int rnnd_v2_seq_get(rnnd_v2_seq *m, const rnnd_v2_seq_key *key, char sid[RNND_ID_LEN + 1]);

/* Drop KEY's entry if it still maps to SID (a newer sequence_start may have replaced it).
 * Returns 1 when an entry was dropped, else 0. */
int rnnd_v2_seq_remove(rnnd_v2_seq *m, const rnnd_v2_seq_key *key, const char *sid);

/* Entries in the map. */
size_t rnnd_v2_seq_count(rnnd_v2_seq *m);

/* KEY's sequence id as Triton writes it in messages ("42", "abc"), into BUF. */
const char *rnnd_v2_seq_key_str(const rnnd_v2_seq_key *key, char *buf, size_t len);

#endif
