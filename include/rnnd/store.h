/* The Redis session store of cluster mode (docs/cluster.md): where a session's record lives when
 * `session_store` is set, who may write it (the node lease and the epoch fence), and how a record
 * is checked before anything of it is believed.
 *
 * The jobs, one file each: store_url.c checks the settings' text (the URL, the node name);
 * store_record.c turns a session into Redis hash fields and a hash read back into a checked record
 * (no Redis needed: the codec is tested alone); store_redis.c holds the connection (AUTH from a
 * file, SELECT) and the node lease; store_session.c runs the fenced Lua scripts on one session's
 * record.
 *
 * Threads: the URL and record functions touch only their arguments and may run on any thread. An
 * rnnd_store (one hiredis context, which is not thread-safe) has one mutex held for the whole of
 * every call on it, round trips included, so calls on one store from several threads run one at a
 * time, in the order they take the mutex. A thread that must not wait behind another thread's round
 * trip (the write-behind thread, next to request handlers) opens its own store. Lock order: the
 * store's mutex is a leaf: nothing else is locked while it is held, and no caller may call into a
 * store while holding a session table lock (a round trip of up to the store's timeout would stall
 * every session of the stripe).
 *
 * The host name is resolved by hiredis's connect (getaddrinfo), which the timeout does not bound:
 * give an address, or a name the resolver answers at once (a Kubernetes Service).
 *
 * Nothing here logs; error messages name the key's kind, the server and a reason, never a session
 * id, a record's content, a state or the password (docs/cluster.md, "Security"). */
#ifndef RNND_STORE_H
#define RNND_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "rnnd/model.h"

struct rnnd_gen_params; /* src/generate.h: the generation defaults */

/* ---- the settings' text: the URL redis://[USER@]HOST:PORT[/DB], the node name (store_url.c) */

#define RNND_STORE_USER_MAX 64
#define RNND_STORE_HOST_MAX 253

typedef struct rnnd_store_url {
    char user[RNND_STORE_USER_MAX + 1]; /* "" : AUTH with the password alone */
    char host[RNND_STORE_HOST_MAX + 1]; /* a name, an IPv4 address, or an IPv6 one without [] */
    int port;                           /* 1..65535 */
    int db;                             /* 0 when /DB is left out */
} rnnd_store_url;

/* Parse URL. USER is [A-Za-z0-9._-], at most 64 bytes; HOST a DNS name or IPv4 address
 * ([A-Za-z0-9.-]) or an IPv6 address in brackets; PORT 1..65535; DB 0..999999. A password
 * ("USER:PASSWORD@") is refused (it would show in --print-config and ps: the password comes
 * from session_store_password_file), and the message never repeats what came after "//", so a
 * refused password is not printed. Returns 0 or RNND_ERR_INVALID with ERR saying why. */
int rnnd_store_url_parse(const char *url, rnnd_store_url *out, char *err, size_t errlen);

/* NAME as a node_name: 1..64 of [A-Za-z0-9._-] (it goes into key names and "NAME INC").
 * Returns 0 or RNND_ERR_INVALID with ERR. */
int rnnd_store_name_check(const char *name, char *err, size_t errlen);

/* This node's name: SETTING (node_name) when not empty, else the host name (a Kubernetes pod's
 * name), checked as above into OUT (RNND_STORE_NAME_MAX + 1 bytes). Returns 0 or
 * RNND_ERR_INVALID (a host name that is no node name: set node_name) with ERR. */
int rnnd_store_node_name(const char *setting, char *out, char *err, size_t errlen);

/* ---- the record: a session as Redis hash fields (store_record.c) --------------------------- */

#define RNND_STORE_REC_VERSION 1
#define RNND_STORE_NAME_MAX 64 /* node_name */
/* "NAME INCARNATION" */
#define RNND_STORE_HOLDER_MAX (RNND_STORE_NAME_MAX + 1 + 20)

typedef struct rnnd_store_rec {
    char model[256];    /* the model's name */
    char digest[65];    /* its state digest, rnnd_model_digest() */
    uint64_t owner;     /* the API key's owner id (auth.h), 0 without keys */
    uint64_t steps;     /* 0..INT64_MAX */
    int64_t created;    /* unix seconds */
    int64_t ttl_s;      /* idle expiry, 1..session_ttl_max_s */
    int64_t used_ms;    /* when the last request ended, Redis's clock (read back only) */
    int has_gen;        /* generation defaults present (passed beside the record) */
    const float *state; /* N_FLOATS floats, the model's state layout (rnnd/rnn.h) */
    size_t n_floats;
    /* the lease fields, kept by the scripts (read back only) */
    char holder[RNND_STORE_HOLDER_MAX + 1]; /* "" : free */
    uint64_t epoch, seq;
} rnnd_store_rec;

/* One hash field: NAME and a value of LEN bytes (a state is binary: not NUL-terminated). */
typedef struct rnnd_store_kv {
    const char *name;
    const char *val;
    size_t len;
} rnnd_store_kv;

#define RNND_STORE_MAX_FIELDS 16
#define RNND_STORE_GEN_MAX 1024 /* the gen field's JSON, with every stop string escaped */

/* The fields of one write, pointing into their own storage. */
typedef struct rnnd_store_fields {
    rnnd_store_kv kv[RNND_STORE_MAX_FIELDS];
    size_t n;
    char text[RNND_STORE_MAX_FIELDS][32]; /* the decimal and hex values */
    char gen[RNND_STORE_GEN_MAX];
    unsigned char *state; /* malloc'd little-endian float32 */
} rnnd_store_fields;

enum rnnd_store_enc {
    RNND_STORE_ENC_ALL = 0, /* every data field: a creation (v, model, digest, owner, steps,
                             * created, ttl_s, gen when GEN, state) */
    RNND_STORE_ENC_STEP,    /* what a step changes: steps and state */
};

/* Fill OUT with REC's fields of kind WHAT (the model's name and digest point into REC: keep it
 * until OUT is sent); GEN is the generation defaults, NULL when REC has
 * none (REC->has_gen must agree). The state is written little-endian whatever the host's
 * order, so a record moves between machines. Free OUT with rnnd_store_fields_free, also after
 * a failure. Returns 0, RNND_ERR_NOMEM, or RNND_ERR_INVALID (a name, digest or gen that does
 * not fit: a caller's mistake) with ERR. */
int rnnd_store_rec_encode(const rnnd_store_rec *rec, const struct rnnd_gen_params *gen,
                          enum rnnd_store_enc what, rnnd_store_fields *out, char *err,
                          size_t errlen);
void rnnd_store_fields_free(rnnd_store_fields *f); /* NULL is a no-op */

/* The settings a record is checked against, as a snapshot restore checks its records. */
typedef struct rnnd_store_limits {
    int64_t ttl_max_s;           /* session_ttl_max_s: a larger ttl is lowered to it */
    int64_t max_generate_tokens; /* a larger max_tokens default is lowered to it */
} rnnd_store_limits;

/* Read the N fields of KV (an HGETALL's reply) as a record of model M into REC, the state into
 * STATE (rnnd_model_state_floats(M) floats; REC->state points to it) and the generation
 * defaults into GEN (set when REC->has_gen). Every field must be present once, with nothing
 * unknown: v 1; model 1..255 bytes; digest M's (else RNND_ERR_CONFLICT with the message every
 * state path gives); owner 16 hex digits; steps, created, ttl_s, used_ms, epoch, seq decimal,
 * checked as a restore checks them; gen a JSON object of the generate fields, checked as a
 * request's; state exactly 4 bytes per float of M's state, every float finite and every
 * clockwork counter one the engine writes; holder empty or "NAME INCARNATION". Returns 0,
 * RNND_ERR_CONFLICT, or RNND_ERR_INVALID with ERR naming the field (never its value). */
int rnnd_store_rec_decode(const rnnd_store_kv *kv, size_t n, const rnnd_model *m,
                          const rnnd_store_limits *lim, rnnd_store_rec *rec, float *state,
                          struct rnnd_gen_params *gen, char *err, size_t errlen);

/* ---- the connection, the lease, the fenced scripts (store_redis.c) ------------------------- */

typedef struct rnnd_store rnnd_store;

typedef struct rnnd_store_conf {
    const char *url;           /* session_store */
    const char *password_file; /* session_store_password_file, "" or NULL: no AUTH */
    const char *node;          /* node_name: [A-Za-z0-9._-], 1..64 bytes */
    int64_t lease_ms;          /* the node lease's TTL */
    int64_t timeout_ms;        /* connect and per-command timeout; 0: 1000 */
} rnnd_store_conf;

/* Check the password file PATH as docs/cluster.md states (a regular file, not a symbolic link,
 * owned by the daemon's user or root, no access for others, nor write access for the group)
 * and read its first line (without the line end; 1..512 bytes) into PW (PWLEN bytes).
 * Returns 0 or RNND_ERR_INVALID / RNND_ERR_IO with ERR "PATH: reason" (never the content). */
int rnnd_store_password_read(const char *path, char *pw, size_t pwlen, char *err, size_t errlen);

/* Parse and check CONF (the URL, the node name, the password file, read now and kept), then
 * connect: AUTH, SELECT, SCRIPT LOAD of the scripts. Redis down is not a failure of the open:
 * the store is made and every call reconnects until Redis answers (*UP, may be NULL, says
 * whether this first connection succeeded; ERR then says why not). Returns 0, or
 * RNND_ERR_INVALID (the conf, the password file) / RNND_ERR_NOMEM with ERR. */
int rnnd_store_open(const rnnd_store_conf *conf, rnnd_store **out, int *up, char *err,
                    size_t errlen);
void rnnd_store_free(rnnd_store *s); /* NULL is a no-op; drops no lease (see release_node) */

/* Every call below takes the store's mutex for its whole duration (see the top). A failure to
 * reach Redis (refused, timed out, the connection lost) is RNND_ERR_IO with ERR "store
 * HOST:PORT: reason": the connection is dropped and the next call reconnects. A Redis error
 * reply (AUTH refused, a script error) is RNND_ERR_IO too, with Redis's message. */

/* Take this node's lease: a new incarnation (INCR rnnd:incarnation), then SET rnnd:node:NAME
 * INC NX PX lease_ms, waiting while another incarnation of NAME holds it (a restart faster
 * than its lease), at most WAIT_MS, with the mutex held (start-up: nothing else uses the
 * store yet). Returns 0, RNND_ERR_BUSY (still held after WAIT_MS) or RNND_ERR_IO. */
int rnnd_store_register(rnnd_store *s, int64_t wait_ms, char *err, size_t errlen);
/* This node's incarnation (0 before register), and its "NAME INCARNATION" (HOLDER_MAX + 1). */
uint64_t rnnd_store_incarnation(rnnd_store *s);
void rnnd_store_holder(rnnd_store *s, char *holder);
/* Use INC, registered through another store of this node (each thread's own connection),
 * as this store's incarnation: its acquisitions and writes then name the same holder. */
void rnnd_store_set_incarnation(rnnd_store *s, uint64_t inc);
/* Renew the lease (PEXPIRE lease_ms if the key still holds our incarnation). Returns 0;
 * RNND_ERR_CONFLICT when the key is gone or another's (the lease lapsed: the caller
 * re-registers with rnnd_store_reregister and confirms its sessions); RNND_ERR_IO. */
int rnnd_store_renew(rnnd_store *s, char *err, size_t errlen);
/* SET rnnd:node:NAME INC NX PX lease_ms with the same incarnation after a lapse. Returns 0,
 * RNND_ERR_CONFLICT (another incarnation holds NAME) or RNND_ERR_IO. */
int rnnd_store_reregister(rnnd_store *s, char *err, size_t errlen);
/* Seconds on the monotonic clock until which the lease is surely ours: the send time of the
 * last successful register or renewal plus 0.9 x lease_ms; 0 before any. */
double rnnd_store_lease_until(rnnd_store *s);
/* Drop the lease key if it is still ours (drain, shutdown). Returns 0 or RNND_ERR_IO. */
int rnnd_store_release_node(rnnd_store *s, char *err, size_t errlen);

/* The data marker, rnnd:data: a token that lives as long as Redis keeps its data (FLUSHALL, or
 * a restart without the append-only file, loses it). With TOKEN (not ""): set to TOKEN when
 * missing, and rnnd:incarnation raised to this node's incarnation when below it (a counter
 * that restarted). OUT (RNND_STORE_TOKEN_MAX + 1 bytes) gets the marker ("" when missing and
 * TOKEN is ""). Returns 0 or RNND_ERR_IO. */
#define RNND_STORE_TOKEN_MAX (RNND_STORE_HOLDER_MAX + 24)
int rnnd_store_mark(rnnd_store *s, const char *token, char *out, char *err, size_t errlen);

/* Session ids are 32 lowercase hex digits (the session table's); any other is refused
 * (RNND_ERR_INVALID) before it reaches a key name. So are FIELDS that hold a field the scripts
 * keep (holder, epoch, seq, used_ms): no caller can move the fence by mistake. */

/* Create the record of ID with FIELDS (RNND_STORE_ENC_ALL), free (holder ""), epoch 0, seq 1,
 * used_ms now - IDLE_MS, expiring after TTL_MS, indexed in rnnd:idx. Returns 0,
 * RNND_ERR_CONFLICT (the id exists) or RNND_ERR_IO. */
int rnnd_store_create(rnnd_store *s, const char *id, const rnnd_store_fields *fields,
                      int64_t ttl_ms, int64_t idle_ms, char *err, size_t errlen);

/* The outcome of an acquisition (acquire.lua). */
enum rnnd_store_acq_kind {
    RNND_STORE_ACQ_MISSING = 0, /* no record: GONE holds the tombstone or "" (404) */
    RNND_STORE_ACQ_TAKEN,       /* ours now, at EPOCH, with the record in FIELDS */
    RNND_STORE_ACQ_CURRENT,     /* ours now, at EPOCH; the caller's copy (its seq) is current */
    RNND_STORE_ACQ_HELD,        /* a live node holds it: HOLDER names it (hand-over) */
    RNND_STORE_ACQ_MODEL,       /* of a model not in the caller's list: MODEL, DIGEST name it */
};

/* What an acquisition may take (NULL: anything free or held by a dead node). */
typedef struct rnnd_store_take {
    /* 0: a holder whose lease key is missing counts as live (HELD), not dead: right after
     * Redis came back (a restart drops every lease) the holder may be alive and about to
     * re-register and write; the caller asks it instead */
    int dead_ok;
    /* "\nNAME DIGEST\n..." of the models the caller can load, NULL: any. A record of another
     * model (or digest) is left as it is (MODEL), before any hand-over is asked for */
    const char *models;
} rnnd_store_take;

typedef struct rnnd_store_acq {
    int kind; /* enum rnnd_store_acq_kind */
    uint64_t epoch;
    int from_dead; /* taken from a node whose lease lapsed, else a free record */
    char holder[RNND_STORE_HOLDER_MAX + 1];
    char gone[80];
    char model[256], digest[65];             /* MODEL */
    rnnd_store_kv kv[RNND_STORE_MAX_FIELDS]; /* TAKEN: the record's fields, into REPLY */
    size_t n;
    void *reply; /* owned: free with rnnd_store_acq_free */
} rnnd_store_acq;

/* Take ID for this node: free or held by a dead node (its lease gone or another incarnation;
 * see HOW): epoch + 1, holder us; CACHED_SEQ (0: no copy) equal to the record's seq returns
 * CURRENT without the state. Returns 0 with OUT filled; RNND_ERR_CONFLICT when our own lease
 * lapsed (re-register first); RNND_ERR_IO. */
int rnnd_store_acquire(rnnd_store *s, const char *id, uint64_t cached_seq,
                       const rnnd_store_take *how, rnnd_store_acq *out, char *err, size_t errlen);
void rnnd_store_acq_free(rnnd_store_acq *a); /* frees the reply; the struct is the caller's */

/* One fenced write: its arguments, and its outcome. */
typedef struct rnnd_store_wreq {
    const char *id;
    uint64_t epoch;
    int64_t ttl_ms, idle_ms;
    int release;
    const rnnd_store_fields *fields;
    int rc;                                 /* out: rnnd_store_write's return */
    uint64_t seq;                           /* out: the record's new seq when rc is 0 */
    char holder[RNND_STORE_HOLDER_MAX + 1]; /* out: the holder when fenced */
} rnnd_store_wreq;

/* A fenced write (write.lua) of W->fields (NULL or none: only used_ms, seq and the TTL) to
 * W->id, which this node must hold at W->epoch; W->release empties holder after writing (drain,
 * hand-over). W->seq gets the record's new seq. Returns (and puts in W->rc) 0; RNND_ERR_CONFLICT
 * when fenced (another holder or a newer epoch: the session moved; W->holder gets the holder);
 * 1 when the record is gone (deleted or expired in Redis); RNND_ERR_IO. */
int rnnd_store_write(rnnd_store *s, rnnd_store_wreq *w, char *err, size_t errlen);

/* The N writes of W in one pipeline (one round trip for all: the write-behind's round), each
 * as rnnd_store_write would do it; W[k].rc says how each went. Returns 0, or RNND_ERR_IO /
 * RNND_ERR_NOMEM when the pipeline failed (the writes not acknowledged then say so too). */
int rnnd_store_write_many(rnnd_store *s, rnnd_store_wreq *w, size_t n, char *err, size_t errlen);

/* The same without fields, releasing: the session is free for the next node. TTL_MS and
 * IDLE_MS below 0 leave the record's TTL and used_ms as they are (a take that could not load
 * the record gives it back untouched). */
int rnnd_store_release(rnnd_store *s, const char *id, uint64_t epoch, int64_t ttl_ms,
                       int64_t idle_ms, char *err, size_t errlen);

/* Write ID's record anew, held by this node at EPOCH, when Redis has none (it lost its data):
 * FIELDS (RNND_STORE_ENC_ALL), seq 1, used_ms now - IDLE_MS, expiring after TTL_MS, indexed.
 * Returns 0; 1 when a record exists (nothing done); RNND_ERR_IO. */
int rnnd_store_restore(rnnd_store *s, const char *id, uint64_t epoch, const rnnd_store_fields *f,
                       int64_t ttl_ms, int64_t idle_ms, char *err, size_t errlen);

/* ID is not in this node's memory, yet its record may name this node (incarnation included):
 * a session that expired or was evicted here (GONE "expired" / "evicted": the tombstone
 * "GONE OWNER" is written for TOMBSTONE_MS, when above 0) or that this node no longer knows
 * (GONE ""). Such a record is deleted with its index entry, so that other nodes answer 410 /
 * 404 as this one does. Returns 0 (deleted), 1 (not this node's record: nothing done) or
 * RNND_ERR_IO. */
int rnnd_store_forget(rnnd_store *s, const char *id, const char *gone, int64_t tombstone_ms,
                      char *err, size_t errlen);

/* Delete ID's record, fenced as a write (this node holds it at EPOCH), and its index entry.
 * Returns 0; 1 when the record is already gone; RNND_ERR_CONFLICT when fenced; RNND_ERR_IO. */
int rnnd_store_delete(rnnd_store *s, const char *id, uint64_t epoch, char *err, size_t errlen);

/* Read ID's record whole (HGETALL) into OUT (kind TAKEN with its fields, or MISSING), taking
 * nothing: for listings and tests. Returns 0 or RNND_ERR_IO. */
int rnnd_store_load(rnnd_store *s, const char *id, rnnd_store_acq *out, char *err, size_t errlen);

/* The session ID expired or was evicted on this node: delete its record when this node holds
 * it at EPOCH (0: not held here), or when it is free and its seq is still SEQ (this node's
 * copy is the last state: no one changed it since; 0: no copy), write the tombstone WHY
 * ("expired OWNER" / "evicted OWNER") for TOMBSTONE_MS (0: none), and drop the id from
 * rnnd:idx (also when the record is already gone). Returns 0 (deleted), 1 (already gone),
 * 2 (another node holds or changed it: nothing done), RNND_ERR_IO. */
int rnnd_store_gone(rnnd_store *s, const char *id, uint64_t epoch, uint64_t seq, const char *why,
                    int64_t tombstone_ms, char *err, size_t errlen);

/* ERR, a message of this module, without the server's address that an outage's message
 * begins with ("store HOST:PORT: WHY" gives WHY; others are returned whole): what a client
 * is told, while the log keeps the address. */
const char *rnnd_store_reason(const char *err);

/* Before an acquisition: ID's record's owner, or its tombstone's, into OWNER (17 bytes; ""
 * when there is neither) and Redis's clock (TIME, ms) into *NOW_MS, taking nothing. Returns 0 or
 * RNND_ERR_IO. */
int rnnd_store_peek(rnnd_store *s, const char *id, char *owner, int64_t *now_ms, char *err,
                    size_t errlen);

/* One page (about COUNT ids) of rnnd:idx from CURSOR ("" or "0": the start; CURSOR gets the
 * next, "0" after the last page): the ids whose record is gone (expired in Redis) are dropped
 * from it, *DROPPED says how many. Returns 0 or RNND_ERR_IO. */
int rnnd_store_sweep_idx(rnnd_store *s, char *cursor, size_t cursor_len, int count, long *dropped,
                         char *err, size_t errlen);

/* ---- hand-over requests between nodes (store_pubsub.c) -------------------------------------- */

#define RNND_STORE_ID_LEN 32 /* a session id's hex digits */

/* Ask the node HOLDER ("NAME INCARNATION" or "NAME") to hand ID over to this node: PUBLISH on
 * rnnd:handover:NAME of "ID ME". *RECEIVERS gets how many listen there: 0 means the holder
 * has no listener (dead: Redis closed its connection; or cut off from Redis), so that no
 * hand-over will come. Returns 0, RNND_ERR_INVALID (a malformed id or name) or RNND_ERR_IO. */
int rnnd_store_handover_ask(rnnd_store *s, const char *holder, const char *id, long long *receivers,
                            char *err, size_t errlen);
/* Listen on this node's channel (connecting and subscribing first, again after a failure),
 * on a store used for nothing else: a subscribed connection takes no other command. Waits
 * at most WAIT_MS for the next request. Returns 0 with ID (RNND_STORE_ID_LEN + 1 bytes) and
 * FROM (the asking node's name, RNND_STORE_NAME_MAX + 1 bytes) filled; 1 when none came (or
 * a malformed one, skipped); RNND_ERR_IO (the connection is dropped: requests published
 * until the next call subscribes again are lost, so askers repeat theirs). */
int rnnd_store_handover_next(rnnd_store *s, int wait_ms, char *id, char *from, char *err,
                             size_t errlen);

#endif
