/* A session's record in Redis: create, acquire, the fenced write and release, load
 * (rnnd/store.h; the scripts are store_redis.c's, docs/cluster.md explains them). Every call
 * holds the store's mutex for its round trip. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"
#include "rnnd/store.h"
#include "store_internal.h"

#define MAX_ARGS (5 + 2 * RNND_STORE_MAX_FIELDS)

/* The record's and the tombstone's key of ID (32 lowercase hex digits, else refused). */
static int keys_of(const char *id, char *rec, char *gone, char *err, size_t errlen)
{
    size_t n = strlen(id);
    if (n != 32 || strspn(id, "0123456789abcdef") != 32)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "store: a session id is 32 lowercase hex digits");
    snprintf(rec, KEY_MAX, "rnnd:{%s}:rec", id);
    snprintf(gone, KEY_MAX, "rnnd:{%s}:gone", id);
    return RNND_OK;
}

/* Append FIELDS' names and values to ARGS / LENS from index *N. The fields the scripts keep
 * (the fence itself) are refused: a caller's mistake must not be able to move a lease.
 * Returns 0 or RNND_ERR_INVALID. */
static int push_fields(const rnnd_store_fields *f, const char **args, size_t *lens, int *n,
                       char *err, size_t errlen)
{
    static const char *const kept[] = {"holder", "epoch", "seq", "used_ms"};
    for (size_t i = 0; f && i < f->n; i++)
        for (size_t k = 0; k < sizeof kept / sizeof kept[0]; k++)
            if (!strcmp(f->kv[i].name, kept[k]))
                return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                                 "store: %s is kept by the scripts, not written", kept[k]);
    if (f && f->n > RNND_STORE_MAX_FIELDS)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "store: too many fields");
    for (size_t i = 0; f && i < f->n; i++) {
        args[*n] = f->kv[i].name;
        lens[(*n)++] = strlen(f->kv[i].name);
        args[*n] = f->kv[i].val;
        lens[(*n)++] = f->kv[i].len;
    }
    return RNND_OK;
}

int rnnd_store_create(rnnd_store *s, const char *id, const rnnd_store_fields *fields,
                      int64_t ttl_ms, int64_t idle_ms, char *err, size_t errlen)
{
    char rec[KEY_MAX], gone[KEY_MAX], ttl[24], idle[24];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    snprintf(idle, sizeof idle, "%" PRId64, idle_ms);
    const char *keys[] = {rec, "rnnd:idx"}, *args[MAX_ARGS] = {id, ttl, idle};
    size_t lens[MAX_ARGS] = {32, strlen(ttl), strlen(idle)};
    int n = 3;
    if ((rc = push_fields(fields, args, lens, &n, err, errlen)))
        return rc;
    pthread_mutex_lock(&s->mu);
    redisReply *r = NULL;
    rc = rnnd_store_eval_locked(s, S_CREATE, 2, keys, n, args, lens, &r, err, errlen);
    if (!rc && r->type != REDIS_REPLY_INTEGER)
        rc = rnnd_store_unexpected_locked(s, r, "create: an unexpected reply", err, errlen);
    else if (!rc) {
        if (r->integer != 1)
            rc = rnnd_fail(RNND_ERR_CONFLICT, err, errlen, "store: the session id exists");
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void rnnd_store_acq_free(rnnd_store_acq *a)
{
    if (!a)
        return;
    freeReplyObject(a->reply);
    a->reply = NULL;
    a->n = 0;
}

/* Point A's fields into R, an HGETALL reply (name, value, ...), which A then owns. */
static int take_fields(rnnd_store_acq *a, redisReply *r, char *err, size_t errlen)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 || r->elements > 2 * RNND_STORE_MAX_FIELDS)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "store: the record is not a hash of at most %d fields",
                         RNND_STORE_MAX_FIELDS);
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            strlen(k->str) != k->len)
            return rnnd_fail(RNND_ERR_INVALID, err, errlen, "store: a malformed record field");
        a->kv[a->n].name = k->str;
        a->kv[a->n].val = v->str;
        a->kv[a->n].len = v->len;
        a->n++;
    }
    return RNND_OK;
}

static void copy_str(char *dst, size_t size, const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING)
        snprintf(dst, size, "%.*s", (int)r->len, r->str);
    else
        dst[0] = '\0';
}

/* Read acquire.lua's reply R into A (which keeps R when it holds the record). */
static int acquire_reply(rnnd_store *s, redisReply *r, rnnd_store_acq *a, char *err, size_t errlen)
{
    long long code = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_INTEGER
        ? r->element[0]->integer
        : -99;
    size_t want = code == -3      ? 1
        : code == 0 || code == -1 ? 2
        : code == 1 || code == -5 ? 3
        : code == 2               ? 4
                                  : 0;
    if (!want || r->elements != want)
        return rnnd_store_unexpected_locked(s, r, "acquire: an unexpected reply", err, errlen);
    if (code == -5) {
        a->kind = RNND_STORE_ACQ_MODEL;
        copy_str(a->model, sizeof a->model, r->element[1]);
        copy_str(a->digest, sizeof a->digest, r->element[2]);
        freeReplyObject(r);
        return RNND_OK;
    }
    if (code == -3) {
        freeReplyObject(r);
        return rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                         "store: this node's lease lapsed: register again first");
    }
    if (code == 0 || code == -1) {
        a->kind = code == 0 ? RNND_STORE_ACQ_MISSING : RNND_STORE_ACQ_HELD;
        copy_str(code == 0 ? a->gone : a->holder, code == 0 ? sizeof a->gone : sizeof a->holder,
                 r->element[1]);
        freeReplyObject(r);
        return RNND_OK;
    }
    a->epoch = r->element[1]->type == REDIS_REPLY_INTEGER ? (uint64_t)r->element[1]->integer : 0;
    a->from_dead = r->element[2]->type == REDIS_REPLY_STRING && !strcmp(r->element[2]->str, "dead");
    a->kind = code == 1 ? RNND_STORE_ACQ_CURRENT : RNND_STORE_ACQ_TAKEN;
    if (code == 1) {
        freeReplyObject(r);
        return RNND_OK;
    }
    a->reply = r;
    int rc = take_fields(a, r->element[3], err, errlen);
    if (rc)
        rnnd_store_acq_free(a);
    return rc;
}

int rnnd_store_acquire(rnnd_store *s, const char *id, uint64_t cached_seq,
                       const rnnd_store_take *how, rnnd_store_acq *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char rec[KEY_MAX], gone[KEY_MAX], node[KEY_MAX], holder[RNND_STORE_HOLDER_MAX + 1], inc[24],
        seq[24] = "";
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    if (cached_seq)
        snprintf(seq, sizeof seq, "%" PRIu64, cached_seq);
    pthread_mutex_lock(&s->mu);
    snprintf(node, sizeof node, "rnnd:node:%s", s->node);
    rnnd_store_holder_locked(s, holder);
    snprintf(inc, sizeof inc, "%" PRIu64, s->inc);
    const char *keys[] = {rec, gone, node},
               *args[] = {holder, inc, seq, !how || how->dead_ok ? "1" : "0",
                          how && how->models ? how->models : ""};
    redisReply *r = NULL;
    rc = rnnd_store_eval_locked(s, S_ACQUIRE, 3, keys, 5, args, NULL, &r, err, errlen);
    if (!rc)
        rc = acquire_reply(s, r, out, err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* write.lua's reply R (freed) as rnnd_store_write's outcome. */
static int write_reply_locked(rnnd_store *s, redisReply *r, uint64_t *seq, char *holder, char *err,
                              size_t errlen)
{
    long long code = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_INTEGER
        ? r->element[0]->integer
        : -99;
    int rc = RNND_OK;
    if (code == 1 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER) {
        if (seq)
            *seq = (uint64_t)r->element[1]->integer;
    } else if (code == -1) {
        rc = 1;
    } else if (code == -2 && r->elements == 2) {
        if (holder)
            copy_str(holder, RNND_STORE_HOLDER_MAX + 1, r->element[1]);
        rc = rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                       "store: the write was fenced: the session moved to another holder");
    } else {
        return rnnd_store_unexpected_locked(s, r, "write: an unexpected reply", err, errlen);
    }
    freeReplyObject(r);
    return rc;
}

/* The strings of one write's command. */
struct write_cmd {
    char rec[KEY_MAX], gone[KEY_MAX], me[RNND_STORE_HOLDER_MAX + 1], ep[24], ttl[24], idle[24];
    const char *keys[1], *args[MAX_ARGS];
    size_t lens[MAX_ARGS];
};

/* Fill W and CMD for the write Q (see rnnd_store_write); the caller holds s->mu. */
static int write_cmd_locked(rnnd_store *s, struct write_cmd *w, rnnd_store_cmd *cmd,
                            const rnnd_store_wreq *q, char *err, size_t errlen)
{
    int rc = keys_of(q->id, w->rec, w->gone, err, errlen);
    if (rc)
        return rc;
    snprintf(w->ep, sizeof w->ep, "%" PRIu64, q->epoch);
    snprintf(w->ttl, sizeof w->ttl, "%" PRId64, q->ttl_ms);
    snprintf(w->idle, sizeof w->idle, "%" PRId64, q->idle_ms);
    rnnd_store_holder_locked(s, w->me);
    w->keys[0] = w->rec;
    const char *a[] = {w->me, w->ep, w->ttl, q->release ? "1" : "0", w->idle};
    int n = 5;
    for (int k = 0; k < n; k++) {
        w->args[k] = a[k];
        w->lens[k] = strlen(a[k]);
    }
    if ((rc = push_fields(q->fields, w->args, w->lens, &n, err, errlen)))
        return rc;
    *cmd = (rnnd_store_cmd){1, n, w->keys, w->args, w->lens};
    return RNND_OK;
}

int rnnd_store_write_many(rnnd_store *s, rnnd_store_wreq *w, size_t n, char *err, size_t errlen)
{
    struct write_cmd *wc = calloc(n ? n : 1, sizeof *wc);
    rnnd_store_cmd *cmd = calloc(n ? n : 1, sizeof *cmd);
    redisReply **out = calloc(n ? n : 1, sizeof *out);
    int *rcs = calloc(n ? n : 1, sizeof *rcs);
    size_t *at = calloc(n ? n : 1, sizeof *at); /* the pipeline's commands: their requests */
    if (!wc || !cmd || !out || !rcs || !at) {
        free(wc);
        free(cmd);
        free(out);
        free(rcs);
        free(at);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "store: out of memory");
    }
    pthread_mutex_lock(&s->mu);
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        w[k].rc = write_cmd_locked(s, &wc[m], &cmd[m], &w[k], err, errlen);
        if (!w[k].rc)
            at[m++] = k;
    }
    int rc = rnnd_store_eval_many_locked(s, S_WRITE, cmd, m, out, rcs, err, errlen);
    for (size_t j = 0; j < m; j++) {
        rnnd_store_wreq *q = &w[at[j]];
        q->rc = rcs[j] ? rcs[j] : write_reply_locked(s, out[j], &q->seq, q->holder, err, errlen);
    }
    pthread_mutex_unlock(&s->mu);
    free(wc);
    free(cmd);
    free(out);
    free(rcs);
    free(at);
    return rc;
}

int rnnd_store_write(rnnd_store *s, rnnd_store_wreq *q, char *err, size_t errlen)
{
    struct write_cmd *w = malloc(sizeof *w);
    if (!w)
        return q->rc = rnnd_fail(RNND_ERR_NOMEM, err, errlen, "store: out of memory");
    rnnd_store_cmd cmd;
    pthread_mutex_lock(&s->mu);
    int rc = write_cmd_locked(s, w, &cmd, q, err, errlen);
    redisReply *r = NULL;
    if (!rc)
        rc = rnnd_store_eval_locked(s, S_WRITE, cmd.nkeys, cmd.keys, cmd.nargs, cmd.args,
                                    cmd.arg_lens, &r, err, errlen);
    if (!rc)
        rc = write_reply_locked(s, r, &q->seq, q->holder, err, errlen);
    pthread_mutex_unlock(&s->mu);
    free(w);
    return q->rc = rc;
}

int rnnd_store_release(rnnd_store *s, const char *id, uint64_t epoch, int64_t ttl_ms,
                       int64_t idle_ms, char *err, size_t errlen)
{
    rnnd_store_wreq w = {
        .id = id, .epoch = epoch, .ttl_ms = ttl_ms, .idle_ms = idle_ms, .release = 1};
    return rnnd_store_write(s, &w, err, errlen);
}

int rnnd_store_delete(rnnd_store *s, const char *id, uint64_t epoch, char *err, size_t errlen)
{
    char rec[KEY_MAX], gone[KEY_MAX], me[RNND_STORE_HOLDER_MAX + 1], ep[24];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    snprintf(ep, sizeof ep, "%" PRIu64, epoch);
    pthread_mutex_lock(&s->mu);
    rnnd_store_holder_locked(s, me);
    const char *keys[] = {rec, "rnnd:idx"}, *args[] = {me, ep, id};
    redisReply *r = NULL;
    rc = rnnd_store_eval_locked(s, S_DELETE, 2, keys, 3, args, NULL, &r, err, errlen);
    if (!rc && r->type != REDIS_REPLY_INTEGER) {
        rc = rnnd_store_unexpected_locked(s, r, "delete: an unexpected reply", err, errlen);
    } else if (!rc) {
        if (r->integer == -1)
            rc = 1;
        else if (r->integer == -2)
            rc = rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                           "store: the delete was fenced: the session moved to another holder");
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The outcome of a script (RC, its reply R, freed here) that answers 1 when it did its work
 * and 0 when it found nothing to do: 0, 1, or the error of a reply of another type (WHAT). */
static int done_or_not_locked(rnnd_store *s, int rc, redisReply *r, const char *what, char *err,
                              size_t errlen)
{
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_INTEGER)
        return rnnd_store_unexpected_locked(s, r, what, err, errlen);
    rc = r->integer == 1 ? RNND_OK : 1;
    freeReplyObject(r);
    return rc;
}

int rnnd_store_restore(rnnd_store *s, const char *id, uint64_t epoch, const rnnd_store_fields *f,
                       int64_t ttl_ms, int64_t idle_ms, char *err, size_t errlen)
{
    char rec[KEY_MAX], gone[KEY_MAX], ttl[24], idle[24], me[RNND_STORE_HOLDER_MAX + 1], ep[24];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    snprintf(idle, sizeof idle, "%" PRId64, idle_ms);
    snprintf(ep, sizeof ep, "%" PRIu64, epoch);
    pthread_mutex_lock(&s->mu);
    rnnd_store_holder_locked(s, me);
    const char *keys[] = {rec, "rnnd:idx"}, *args[MAX_ARGS] = {id, ttl, idle, me, ep};
    size_t lens[MAX_ARGS] = {32, strlen(ttl), strlen(idle), strlen(me), strlen(ep)};
    int n = 5;
    redisReply *r = NULL;
    if (!(rc = push_fields(f, args, lens, &n, err, errlen)))
        rc = rnnd_store_eval_locked(s, S_RESTORE, 2, keys, n, args, lens, &r, err, errlen);
    rc = done_or_not_locked(s, rc, r, "restore: an unexpected reply", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_forget(rnnd_store *s, const char *id, const char *gone_why, int64_t tombstone_ms,
                      char *err, size_t errlen)
{
    char rec[KEY_MAX], gone[KEY_MAX], me[RNND_STORE_HOLDER_MAX + 1], ms[24];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    snprintf(ms, sizeof ms, "%" PRId64, tombstone_ms);
    pthread_mutex_lock(&s->mu);
    rnnd_store_holder_locked(s, me);
    const char *keys[] = {rec, gone, "rnnd:idx"}, *args[] = {me, gone_why, ms, id};
    redisReply *r = NULL;
    rc = rnnd_store_eval_locked(s, S_FORGET, 3, keys, 4, args, NULL, &r, err, errlen);
    rc = done_or_not_locked(s, rc, r, "forget: an unexpected reply", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_load(rnnd_store *s, const char *id, rnnd_store_acq *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char rec[KEY_MAX], gone[KEY_MAX];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    const char *argv[] = {"HGETALL", rec};
    pthread_mutex_lock(&s->mu);
    redisReply *r = NULL;
    rc = rnnd_store_call_locked(s, 2, argv, &r, err, errlen);
    if (!rc && r->type == REDIS_REPLY_ARRAY && r->elements == 0) {
        out->kind = RNND_STORE_ACQ_MISSING;
        freeReplyObject(r);
    } else if (!rc) {
        out->kind = RNND_STORE_ACQ_TAKEN;
        out->reply = r;
        if ((rc = take_fields(out, r, err, errlen)))
            rnnd_store_acq_free(out);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_gone(rnnd_store *s, const char *id, uint64_t epoch, uint64_t seq, const char *why,
                    int64_t tombstone_ms, char *err, size_t errlen)
{
    char rec[KEY_MAX], gone[KEY_MAX], me[RNND_STORE_HOLDER_MAX + 1], ep[24] = "", sq[24] = "",
                                                                     tomb[24];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    if (epoch)
        snprintf(ep, sizeof ep, "%" PRIu64, epoch);
    if (seq)
        snprintf(sq, sizeof sq, "%" PRIu64, seq);
    snprintf(tomb, sizeof tomb, "%" PRId64, tombstone_ms);
    pthread_mutex_lock(&s->mu);
    rnnd_store_holder_locked(s, me);
    const char *keys[] = {rec, gone, "rnnd:idx"}, *args[] = {me, ep, sq, why, tomb, id};
    redisReply *r = NULL;
    rc = rnnd_store_eval_locked(s, S_GONE, 3, keys, 6, args, NULL, &r, err, errlen);
    if (!rc && r->type != REDIS_REPLY_INTEGER) {
        rc = rnnd_store_unexpected_locked(s, r, "gone: an unexpected reply", err, errlen);
    } else if (!rc) {
        rc = r->integer == 1 ? 0 : r->integer == 0 ? 1 : 2;
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_peek(rnnd_store *s, const char *id, char *owner, int64_t *now_ms, char *err,
                    size_t errlen)
{
    char rec[KEY_MAX], gone[KEY_MAX];
    int rc = keys_of(id, rec, gone, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    const char *keys[] = {rec, gone};
    redisReply *r = NULL;
    rc = rnnd_store_eval_locked(s, S_PEEK, 2, keys, 0, NULL, NULL, &r, err, errlen);
    if (!rc &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER)) {
        rc = rnnd_store_unexpected_locked(s, r, "peek: an unexpected reply", err, errlen);
    } else if (!rc) {
        snprintf(owner, 17, "%.16s", r->element[0]->str);
        *now_ms = (int64_t)r->element[1]->integer;
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_sweep_idx(rnnd_store *s, char *cursor, size_t cursor_len, int count, long *dropped,
                         char *err, size_t errlen)
{
    char n[16];
    snprintf(n, sizeof n, "%d", count);
    const char *keys[] = {"rnnd:idx"}, *args[] = {cursor[0] ? cursor : "0", n};
    pthread_mutex_lock(&s->mu);
    redisReply *r = NULL;
    int rc = rnnd_store_eval_locked(s, S_SWEEP, 1, keys, 2, args, NULL, &r, err, errlen);
    if (!rc &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER)) {
        rc = rnnd_store_unexpected_locked(s, r, "sweep: an unexpected reply", err, errlen);
    } else if (!rc) {
        snprintf(cursor, cursor_len, "%s", r->element[0]->str);
        *dropped = (long)r->element[1]->integer;
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
