/* The store's private parts, shared by store_redis.c (the connection and the node lease) and
 * store_session.c (the session scripts): the store object and the calls made under its
 * mutex (a _locked suffix: the caller holds s->mu). */
#ifndef RNND_STORE_INTERNAL_H
#define RNND_STORE_INTERNAL_H

#include <hiredis.h>
#include <pthread.h>
#include <stdint.h>

#include "rnnd/store.h"

#define PASSWORD_MAX 512
#define KEY_MAX (sizeof "rnnd:node:" + RNND_STORE_NAME_MAX + 40)

/* The scripts (docs/cluster.md gives write.lua and acquire.lua with their arguments). */
enum rnnd_store_script {
    S_WRITE,
    S_ACQUIRE,
    S_CREATE,
    S_RENEW,
    S_DROP_NODE,
    S_DELETE,
    S_FORGET,
    S_MARK,
    S_RESTORE,
    S_GONE,  /* expiry and eviction: the record deleted, the tombstone written */
    S_PEEK,  /* a record's owner and Redis's clock, before an acquisition */
    S_SWEEP, /* rnnd:idx entries whose record expired in Redis */
    S_COUNT
};

struct rnnd_store {
    pthread_mutex_t mu; /* everything below; held for every whole call */
    redisContext *c;    /* NULL: not connected */
    rnnd_store_url url;
    char node[RNND_STORE_NAME_MAX + 1];
    char pw[PASSWORD_MAX + 1];
    int has_pw;
    int64_t lease_ms, timeout_ms;
    uint64_t inc;       /* incarnation, 0 before register */
    double lease_until; /* monotonic seconds */
    char sha[S_COUNT][41];
    int subscribed; /* store_pubsub.c: C listens on the node's hand-over channel */
};

/* EVALSHA script I with NKEYS KEYS and NARGS ARGS (ARG_LENS: their lengths, NULL: strings),
 * connecting first; NOSCRIPT (a restarted Redis, SCRIPT FLUSH) loads it and sends once more.
 * *OUT gets the reply (never an error reply). Returns 0, RNND_ERR_IO or RNND_ERR_NOMEM. */
int rnnd_store_eval_locked(rnnd_store *s, enum rnnd_store_script i, int nkeys, const char **keys,
                           int nargs, const char **args, const size_t *arg_lens, redisReply **out,
                           char *err, size_t errlen);
/* One command of a pipeline of EVALSHA (rnnd_store_eval_many_locked). */
typedef struct rnnd_store_cmd {
    int nkeys, nargs;
    const char **keys, **args;
    const size_t *arg_lens; /* NULL: strings */
} rnnd_store_cmd;

/* N EVALSHA of script I in one pipeline: every command sent, then every reply read, so N
 * writes cost one round trip. OUT[k] gets the k-th reply and RC[k] its outcome (as
 * rnnd_store_eval_locked's); a NOSCRIPT reply is sent again alone (which loads the script).
 * Returns RNND_ERR_IO when the connection failed (every RC not read is then RNND_ERR_IO,
 * its OUT NULL), else 0. */
int rnnd_store_eval_many_locked(rnnd_store *s, enum rnnd_store_script i, const rnnd_store_cmd *cmd,
                                size_t n, redisReply **out, int *rc, char *err, size_t errlen);
/* A plain command of ARGC strings (at most 8), connecting first. */
int rnnd_store_call_locked(rnnd_store *s, int argc, const char **argv, redisReply **out, char *err,
                           size_t errlen);
/* "NAME INCARNATION" into HOLDER (RNND_STORE_HOLDER_MAX + 1 bytes). */
void rnnd_store_holder_locked(const rnnd_store *s, char *holder);
/* Free R, drop the connection (the reply was not what the script returns), RNND_ERR_IO. */
int rnnd_store_unexpected_locked(rnnd_store *s, redisReply *r, const char *what, char *err,
                                 size_t errlen);

#endif
