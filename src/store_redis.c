/* The Redis connection of the session store: AUTH, SELECT, the node lease and the fenced
 * scripts of docs/cluster.md (rnnd/store.h). One hiredis context per rnnd_store, under the
 * store's mutex; a context that failed is dropped and the next call connects again, so an
 * outage costs failed calls, never a stuck or crashed daemon. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rnnd/status.h"
#include "rnnd/store.h"
#include "store_internal.h"

#define DEFAULT_TIMEOUT_MS 1000
#define REGISTER_POLL_MS 50

static const char *const scripts[S_COUNT] = {
    /* write.lua: KEYS[1] rec; ARGV holder, epoch, ttl ms (<= 0: kept), release, idle ms (< 0:
     * used_ms kept), fields... */
    [S_WRITE] = "local cur = redis.call('HMGET', KEYS[1], 'holder', 'epoch')\n"
                "if not cur[2] then return {-1} end\n"
                "if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {-2, cur[1]} end\n"
                "if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end\n"
                "if tonumber(ARGV[5]) >= 0 then\n"
                "  local t = redis.call('TIME')\n"
                "  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                "  redis.call('HSET', KEYS[1], 'used_ms', now_ms - tonumber(ARGV[5]))\n"
                "end\n"
                "if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'holder', '') end\n"
                "local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)\n"
                "if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end\n"
                "return {1, seq}\n",
    /* acquire.lua: KEYS[1] rec, KEYS[2] gone, KEYS[3] rnnd:node:ME; ARGV "ME INC", INC, the
     * seq of the caller's copy ("" none), "1" when a missing lease means a dead holder, the
     * caller's models "\nNAME DIGEST\n..." ("" any) */
    [S_ACQUIRE] = "if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {-3} end\n"
                  "local cur = redis.call('HMGET', KEYS[1], 'holder', 'epoch', 'seq')\n"
                  "if not cur[2] then return {0, redis.call('GET', KEYS[2]) or ''} end\n"
                  "if ARGV[5] ~= '' then\n"
                  "  local m = redis.call('HMGET', KEYS[1], 'model', 'digest')\n"
                  "  if m[1] and m[2] and not string.find(ARGV[5], '\\n' .. m[1] .. ' ' .. m[2]"
                  " .. '\\n', 1, true) then\n"
                  "    return {-5, m[1], m[2]}\n"
                  "  end\n"
                  "end\n"
                  "local from = 'free'\n"
                  "if cur[1] ~= '' and cur[1] ~= ARGV[1] then\n"
                  "  local name, inc = string.match(cur[1], '^(%S+) (%d+)$')\n"
                  "  local lease = name and redis.call('GET', 'rnnd:node:' .. name)\n"
                  "  if name and (lease == inc or (not lease and ARGV[4] ~= '1')) then\n"
                  "    return {-1, cur[1]}\n"
                  "  end\n"
                  "  from = 'dead'\n"
                  "end\n"
                  "local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)\n"
                  "redis.call('HSET', KEYS[1], 'holder', ARGV[1])\n"
                  "if cur[3] == ARGV[3] then return {1, epoch, from} end\n"
                  "return {2, epoch, from, redis.call('HGETALL', KEYS[1])}\n",
    /* create.lua: KEYS[1] rec, KEYS[2] rnnd:idx; ARGV id, ttl ms, idle ms, fields... */
    [S_CREATE] = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
                 "redis.call('HSET', KEYS[1], unpack(ARGV, 4))\n"
                 "local t = redis.call('TIME')\n"
                 "local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                 "redis.call('HSET', KEYS[1], 'used_ms', now_ms - tonumber(ARGV[3]),\n"
                 "           'holder', '', 'epoch', 0, 'seq', 1)\n"
                 "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                 "redis.call('ZADD', KEYS[2], 0, ARGV[1])\n"
                 "return 1\n",
    /* renew: KEYS[1] rnnd:node:ME; ARGV INC, lease ms */
    [S_RENEW] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                "end\n"
                "return 0\n",
    /* drop the node lease if still ours: KEYS[1] rnnd:node:ME; ARGV INC */
    [S_DROP_NODE] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                    "  return redis.call('DEL', KEYS[1])\n"
                    "end\n"
                    "return 0\n",
    /* delete.lua, fenced as write.lua: KEYS[1] rec, KEYS[2] rnnd:idx; ARGV holder, epoch, id */
    [S_DELETE] = "local cur = redis.call('HMGET', KEYS[1], 'holder', 'epoch')\n"
                 "if not cur[2] then return -1 end\n"
                 "if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return -2 end\n"
                 "redis.call('DEL', KEYS[1])\n"
                 "redis.call('ZREM', KEYS[2], ARGV[3])\n"
                 "return 1\n",
    /* forget.lua: KEYS[1] rec, KEYS[2] gone, KEYS[3] rnnd:idx; ARGV "ME INC", the tombstone's
     * reason ("" none), its ms, id */
    [S_FORGET] = "local cur = redis.call('HMGET', KEYS[1], 'holder', 'owner')\n"
                 "if cur[1] ~= ARGV[1] then return 0 end\n"
                 "if ARGV[2] ~= '' and tonumber(ARGV[3]) > 0 then\n"
                 "  redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. (cur[2] or ''), 'PX', ARGV[3])\n"
                 "end\n"
                 "redis.call('DEL', KEYS[1])\n"
                 "redis.call('ZREM', KEYS[3], ARGV[4])\n"
                 "return 1\n",
    /* mark.lua: KEYS[1] rnnd:data, KEYS[2] rnnd:incarnation; ARGV token ("" read only), INC */
    [S_MARK] = "local d = redis.call('GET', KEYS[1])\n"
               "if ARGV[1] ~= '' then\n"
               "  if not d then redis.call('SET', KEYS[1], ARGV[1]); d = ARGV[1] end\n"
               "  if (tonumber(redis.call('GET', KEYS[2])) or 0) < tonumber(ARGV[2]) then\n"
               "    redis.call('SET', KEYS[2], ARGV[2])\n"
               "  end\n"
               "end\n"
               "return d or ''\n",
    /* restore.lua: KEYS[1] rec, KEYS[2] rnnd:idx; ARGV id, ttl ms, idle ms, "ME INC", epoch,
     * fields... */
    [S_RESTORE] = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
                  "redis.call('HSET', KEYS[1], unpack(ARGV, 6))\n"
                  "local t = redis.call('TIME')\n"
                  "local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                  "redis.call('HSET', KEYS[1], 'used_ms', now_ms - tonumber(ARGV[3]),\n"
                  "           'holder', ARGV[4], 'epoch', ARGV[5], 'seq', 1)\n"
                  "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                  "redis.call('ZADD', KEYS[2], 0, ARGV[1])\n"
                  "return 1\n",
    /* gone.lua: the session expired or was evicted on this node: delete its record if this
     * node holds it at EPOCH, or if it is free and unchanged since this node's copy (SEQ),
     * write the tombstone, and drop the index entry (also of a record already gone).
     * KEYS[1] rec, KEYS[2] gone, KEYS[3] rnnd:idx; ARGV holder, epoch ("" not held), seq,
     * tombstone text, tombstone ms, id */
    [S_GONE] = "local cur = redis.call('HMGET', KEYS[1], 'holder', 'epoch', 'seq')\n"
               "if not cur[2] then redis.call('ZREM', KEYS[3], ARGV[6]) return 0 end\n"
               "local held = ARGV[2] ~= '' and cur[1] == ARGV[1] and cur[2] == ARGV[2]\n"
               "if not held and not (cur[1] == '' and cur[3] == ARGV[3]) then return -2 end\n"
               "redis.call('DEL', KEYS[1])\n"
               "redis.call('ZREM', KEYS[3], ARGV[6])\n"
               "if tonumber(ARGV[5]) > 0 then\n"
               "  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])\n"
               "end\n"
               "return 1\n",
    /* peek: KEYS[1] rec, KEYS[2] gone; the owner of the record, or of its tombstone
     * ("expired OWNER"), "" for none, and Redis's clock in ms */
    [S_PEEK] = "local t = redis.call('TIME')\n"
               "local o = redis.call('HGET', KEYS[1], 'owner')\n"
               "if not o then\n"
               "  local g = redis.call('GET', KEYS[2])\n"
               "  o = g and string.match(g, ' (%x+)$')\n"
               "end\n"
               "return {o or '', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}\n",
    /* sweep: KEYS[1] rnnd:idx; ARGV cursor, count: ZSCAN's next page, its ids without a
     * record dropped; returns the next cursor and how many were dropped */
    [S_SWEEP] = "local r = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])\n"
                "local n = 0\n"
                "for i = 1, #r[2], 2 do\n"
                "  local id = r[2][i]\n"
                "  if redis.call('EXISTS', 'rnnd:{' .. id .. '}:rec') == 0 then\n"
                "    redis.call('ZREM', KEYS[1], id)\n"
                "    n = n + 1\n"
                "  end\n"
                "end\n"
                "return {r[1], n}\n",
};

/* ---- the password file --------------------------------------------------------------------- */

int rnnd_store_password_read(const char *path, char *pw, size_t pwlen, char *err, size_t errlen)
{
    /* O_NONBLOCK: a FIFO put there is refused by fstat below, never waited on */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP
            ? rnnd_fail(RNND_ERR_INVALID, err, errlen,
                        "%s: a symbolic link; the password file must be a regular file", path)
            : rnnd_fail(RNND_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    char buf[PASSWORD_MAX + 2];
    int rc = RNND_ERR_INVALID;
    if (fstat(fd, &st))
        rc = rnnd_fail(RNND_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rnnd_fail(rc, err, errlen, "%s: not a regular file", path);
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        rnnd_fail(rc, err, errlen, "%s: owned by uid %u, neither the daemon's user %u nor root",
                  path, (unsigned)st.st_uid, (unsigned)geteuid());
    else if (st.st_mode & 007)
        rnnd_fail(rc, err, errlen, "%s: others may access it (mode %04o): chmod o-rwx", path,
                  (unsigned)(st.st_mode & 07777));
    else if (st.st_mode & 020)
        rnnd_fail(rc, err, errlen, "%s: the group may write it (mode %04o): chmod g-w", path,
                  (unsigned)(st.st_mode & 07777));
    else
        rc = RNND_OK;
    ssize_t n = rc ? -1 : read(fd, buf, sizeof buf - 1);
    if (!rc && n < 0)
        rc = rnnd_fail(RNND_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
    close(fd);
    if (rc || n < 0)
        return rc;
    buf[n] = '\0';
    size_t len = strcspn(buf, "\n");
    if (len && buf[len - 1] == '\r')
        len--;
    if (len == 0 || len > PASSWORD_MAX || len + 1 > pwlen || memchr(buf, 0, len))
        rc = rnnd_fail(RNND_ERR_INVALID, err, errlen,
                       "%s: the first line must hold the password, 1 to %d bytes", path,
                       PASSWORD_MAX);
    else {
        memcpy(pw, buf, len);
        pw[len] = '\0';
    }
    memset(buf, 0, sizeof buf);
    return rc;
}

/* ---- commands ----------------------------------------------------------------------------- */

static void drop_locked(rnnd_store *s)
{
    if (s->c)
        redisFree(s->c);
    s->c = NULL;
}

const char *rnnd_store_reason(const char *err)
{
    const char *p = strncmp(err, "store ", 6) ? NULL : strstr(err + 6, ": ");
    return p ? p + 2 : err;
}

static int io_fail_locked(rnnd_store *s, const char *why, char *err, size_t errlen)
{
    rnnd_fail(RNND_ERR_IO, err, errlen, "store %s:%d: %s", s->url.host, s->url.port, why);
    drop_locked(s);
    return RNND_ERR_IO;
}

/* Send one command on the open context; *OUT gets the reply (an error reply is a failure with
 * Redis's message). Returns 0 or RNND_ERR_IO. */
static int command_locked(rnnd_store *s, int argc, const char **argv, const size_t *lens,
                          redisReply **out, char *err, size_t errlen)
{
    *out = redisCommandArgv(s->c, argc, argv, lens);
    if (!*out)
        return io_fail_locked(s, s->c->errstr[0] ? s->c->errstr : "connection lost", err, errlen);
    if ((*out)->type == REDIS_REPLY_ERROR) {
        rnnd_fail(RNND_ERR_IO, err, errlen, "store %s:%d: %s: %.200s", s->url.host, s->url.port,
                  argv[0], (*out)->str);
        freeReplyObject(*out);
        *out = NULL;
        return RNND_ERR_IO;
    }
    return RNND_OK;
}

static int load_script_locked(rnnd_store *s, enum rnnd_store_script i, char *err, size_t errlen)
{
    const char *argv[] = {"SCRIPT", "LOAD", scripts[i]};
    size_t lens[] = {6, 4, strlen(scripts[i])};
    redisReply *r = NULL;
    int rc = command_locked(s, 3, argv, lens, &r, err, errlen);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_STRING || r->len != 40)
        rc = io_fail_locked(s, "SCRIPT LOAD: an unexpected reply", err, errlen);
    else
        memcpy(s->sha[i], r->str, 41);
    freeReplyObject(r);
    return rc;
}

/* Connect when not connected: AUTH, SELECT, the scripts. */
static int connect_locked(rnnd_store *s, char *err, size_t errlen)
{
    if (s->c && !s->subscribed) {
        /* nothing is due on an idle connection: readable means the server closed it (a
         * restart) or sent what no command asked for; connect again before sending, so the
         * first command after a Redis restart does not fail */
        struct pollfd p = {.fd = s->c->fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0)
            drop_locked(s);
    }
    if (s->c)
        return RNND_OK;
    struct timeval tv = {(time_t)(s->timeout_ms / 1000),
                         (suseconds_t)(s->timeout_ms % 1000) * 1000};
    s->c = redisConnectWithTimeout(s->url.host, s->url.port, tv);
    if (!s->c)
        return rnnd_fail(RNND_ERR_IO, err, errlen, "store %s:%d: out of memory", s->url.host,
                         s->url.port);
    if (s->c->err || redisSetTimeout(s->c, tv) != REDIS_OK)
        return io_fail_locked(s, s->c->errstr[0] ? s->c->errstr : "connect failed", err, errlen);
    redisReply *r = NULL;
    int rc = RNND_OK;
    if (s->has_pw) {
        /* AUTH PASSWORD, or AUTH USER PASSWORD (Redis 6 ACLs) when the URL names a user */
        int user = s->url.user[0] != '\0';
        const char *argv[] = {"AUTH", s->url.user, s->pw};
        size_t lens[] = {4, strlen(s->url.user), strlen(s->pw)};
        if (!user) {
            argv[1] = argv[2];
            lens[1] = lens[2];
        }
        rc = command_locked(s, 2 + user, argv, lens, &r, err, errlen);
        freeReplyObject(r);
    }
    if (!rc && s->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", s->url.db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, strlen(db)};
        rc = command_locked(s, 2, argv, lens, &r, err, errlen);
        freeReplyObject(r);
    }
    for (int i = 0; !rc && i < S_COUNT; i++)
        rc = load_script_locked(s, (enum rnnd_store_script)i, err, errlen);
    if (rc)
        drop_locked(s); /* refused AUTH or SELECT: a half-set-up context is never used */
    return rc;
}

/* A script's error reply X on S. ERR and WRONGTYPE: the script failed on a record whose
 * fields are not what the scripts write (a forged record: a non-integer epoch, a key of
 * another type): Redis answered, so this is no outage (the store stays up):
 * RNND_ERR_INVALID, with a message that names neither the server nor the record. Any other
 * (LOADING, BUSY, OOM, READONLY, NOAUTH...) is the server's state: RNND_ERR_IO, retried. */
static int script_failed(const rnnd_store *s, const redisReply *x, char *err, size_t errlen)
{
    if (strncmp(x->str, "ERR ", 4) && strncmp(x->str, "WRONGTYPE ", 10))
        return rnnd_fail(RNND_ERR_IO, err, errlen, "store %s:%d: script: %.200s", s->url.host,
                         s->url.port, x->str);
    return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                     "store: a script failed on the session's record: it is malformed");
}

/* EVALSHA script I with NKEYS KEYS and NARGS ARGS (binary: ARG_LENS); a server that lost its
 * script cache (restart, SCRIPT FLUSH) answers NOSCRIPT: load it and send once more. */
int rnnd_store_eval_locked(rnnd_store *s, enum rnnd_store_script i, int nkeys, const char **keys,
                           int nargs, const char **args, const size_t *arg_lens, redisReply **out,
                           char *err, size_t errlen)
{
    int rc = connect_locked(s, err, errlen);
    if (rc)
        return rc;
    int argc = 3 + nkeys + nargs;
    const char **argv = malloc((size_t)argc * sizeof *argv);
    size_t *lens = malloc((size_t)argc * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "store: out of memory");
    }
    char nk[12];
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[2] = nk;
    for (int k = 0; k < nkeys; k++)
        argv[3 + k] = keys[k];
    for (int k = 0; k < 3 + nkeys; k++)
        lens[k] = strlen(k == 1 ? s->sha[i] : argv[k]);
    for (int k = 0; k < nargs; k++) {
        argv[3 + nkeys + k] = args[k];
        lens[3 + nkeys + k] = arg_lens ? arg_lens[k] : strlen(args[k]);
    }
    for (int attempt = 0;; attempt++) {
        argv[1] = s->sha[i];
        *out = redisCommandArgv(s->c, argc, argv, lens);
        if (!*out) {
            rc = io_fail_locked(s, s->c->errstr[0] ? s->c->errstr : "connection lost", err, errlen);
            break;
        }
        if ((*out)->type != REDIS_REPLY_ERROR)
            break;
        int noscript = strncmp((*out)->str, "NOSCRIPT", 8) == 0;
        if (!noscript || attempt)
            rc = script_failed(s, *out, err, errlen);
        freeReplyObject(*out);
        *out = NULL;
        if (rc || (rc = load_script_locked(s, i, err, errlen)))
            break;
    }
    free(argv);
    free(lens);
    return rc;
}

/* CMD as EVALSHA's argv of script I into ARGV / LENS (3 + keys + args entries). */
static void evalsha_argv(const rnnd_store *s, enum rnnd_store_script i, const rnnd_store_cmd *cmd,
                         char *nk, const char **argv, size_t *lens)
{
    snprintf(nk, 12, "%d", cmd->nkeys);
    argv[0] = "EVALSHA";
    argv[1] = s->sha[i];
    argv[2] = nk;
    for (int k = 0; k < cmd->nkeys; k++)
        argv[3 + k] = cmd->keys[k];
    for (int k = 0; k < 3 + cmd->nkeys; k++)
        lens[k] = strlen(argv[k]);
    for (int k = 0; k < cmd->nargs; k++) {
        argv[3 + cmd->nkeys + k] = cmd->args[k];
        lens[3 + cmd->nkeys + k] = cmd->arg_lens ? cmd->arg_lens[k] : strlen(cmd->args[k]);
    }
}

int rnnd_store_eval_many_locked(rnnd_store *s, enum rnnd_store_script i, const rnnd_store_cmd *cmd,
                                size_t n, redisReply **out, int *rc, char *err, size_t errlen)
{
    for (size_t k = 0; k < n; k++) {
        out[k] = NULL;
        rc[k] = RNND_ERR_IO;
    }
    int r = connect_locked(s, err, errlen);
    if (r)
        return r;
    size_t sent = 0;
    for (; sent < n; sent++) {
        int argc = 3 + cmd[sent].nkeys + cmd[sent].nargs;
        const char **argv = malloc((size_t)argc * sizeof *argv);
        size_t *lens = malloc((size_t)argc * sizeof *lens);
        char nk[12];
        int ok = argv && lens;
        if (ok) {
            evalsha_argv(s, i, &cmd[sent], nk, argv, lens);
            /* hiredis copies the command into its output buffer */
            ok = redisAppendCommandArgv(s->c, argc, argv, lens) == REDIS_OK;
        }
        free(argv);
        free(lens);
        if (!ok)
            break;
    }
    for (size_t k = 0; k < sent; k++) {
        void *rep = NULL;
        if (redisGetReply(s->c, &rep) != REDIS_OK || !rep)
            return io_fail_locked(s, s->c->errstr[0] ? s->c->errstr : "connection lost", err,
                                  errlen);
        redisReply *x = rep;
        if (x->type != REDIS_REPLY_ERROR) {
            out[k] = x;
            rc[k] = 0;
            continue;
        }
        if (strncmp(x->str, "NOSCRIPT", 8))
            rc[k] = script_failed(s, x, err, errlen);
        else
            rc[k] = 1; /* sent again below, once every reply of the pipeline is read */
        freeReplyObject(x);
    }
    if (sent < n)
        return io_fail_locked(s, "out of memory for a pipeline", err, errlen);
    for (size_t k = 0; k < n; k++)
        if (rc[k] == 1)
            rc[k] = rnnd_store_eval_locked(s, i, cmd[k].nkeys, cmd[k].keys, cmd[k].nargs,
                                           cmd[k].args, cmd[k].arg_lens, &out[k], err, errlen);
    return RNND_OK;
}

/* A plain command, connecting first. */
int rnnd_store_call_locked(rnnd_store *s, int argc, const char **argv, redisReply **out, char *err,
                           size_t errlen)
{
    size_t lens[8];
    for (int k = 0; k < argc; k++)
        lens[k] = strlen(argv[k]);
    int rc = connect_locked(s, err, errlen);
    return rc ? rc : command_locked(s, argc, argv, lens, out, err, errlen);
}

int rnnd_store_unexpected_locked(rnnd_store *s, redisReply *r, const char *what, char *err,
                                 size_t errlen)
{
    freeReplyObject(r);
    return io_fail_locked(s, what, err, errlen);
}

/* ---- open, free ----------------------------------------------------------------------------- */

int rnnd_store_open(const rnnd_store_conf *conf, rnnd_store **out, int *up, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (up)
        *up = 0;
    rnnd_store *s = calloc(1, sizeof *s);
    if (!s)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "store: out of memory");
    int rc = rnnd_store_url_parse(conf->url, &s->url, err, errlen);
    if (!rc)
        rc = rnnd_store_name_check(conf->node, err, errlen);
    if (!rc && conf->password_file && conf->password_file[0]) {
        rc = rnnd_store_password_read(conf->password_file, s->pw, sizeof s->pw, err, errlen);
        s->has_pw = rc == 0;
    }
    if (rc) {
        rnnd_store_free(s);
        return rc;
    }
    snprintf(s->node, sizeof s->node, "%s", conf->node);
    s->lease_ms = conf->lease_ms;
    s->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : DEFAULT_TIMEOUT_MS;
    pthread_mutex_init(&s->mu, NULL);
    int ok = connect_locked(s, err, errlen) == 0;
    if (up)
        *up = ok;
    *out = s;
    return RNND_OK;
}

void rnnd_store_free(rnnd_store *s)
{
    if (!s)
        return;
    drop_locked(s);
    pthread_mutex_destroy(&s->mu);
    memset(s->pw, 0, sizeof s->pw);
    free(s);
}

/* ---- the node lease ----------------------------------------------------------------------- */

static void node_key(const rnnd_store *s, char *key)
{
    snprintf(key, KEY_MAX, "rnnd:node:%s", s->node);
}

uint64_t rnnd_store_incarnation(rnnd_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t inc = s->inc;
    pthread_mutex_unlock(&s->mu);
    return inc;
}

void rnnd_store_set_incarnation(rnnd_store *s, uint64_t inc)
{
    pthread_mutex_lock(&s->mu);
    s->inc = inc;
    pthread_mutex_unlock(&s->mu);
}

void rnnd_store_holder_locked(const rnnd_store *s, char *holder)
{
    snprintf(holder, RNND_STORE_HOLDER_MAX + 1, "%s %" PRIu64, s->node, s->inc);
}

void rnnd_store_holder(rnnd_store *s, char *holder)
{
    pthread_mutex_lock(&s->mu);
    rnnd_store_holder_locked(s, holder);
    pthread_mutex_unlock(&s->mu);
}

double rnnd_store_lease_until(rnnd_store *s)
{
    pthread_mutex_lock(&s->mu);
    double t = s->lease_until;
    pthread_mutex_unlock(&s->mu);
    return t;
}

/* SET rnnd:node:NAME INC NX PX lease_ms: 0 when set, 1 when another holds it. */
static int set_node_locked(rnnd_store *s, char *err, size_t errlen)
{
    char key[KEY_MAX], inc[24], px[24];
    node_key(s, key);
    snprintf(inc, sizeof inc, "%" PRIu64, s->inc);
    snprintf(px, sizeof px, "%" PRId64, s->lease_ms);
    const char *argv[] = {"SET", key, inc, "NX", "PX", px};
    double sent = rnnd_mono_s();
    redisReply *r = NULL;
    int rc = rnnd_store_call_locked(s, 6, argv, &r, err, errlen);
    if (rc)
        return rc;
    if (r->type == REDIS_REPLY_NIL)
        rc = 1;
    else if (r->type == REDIS_REPLY_STATUS)
        s->lease_until = sent + 0.9 * (double)s->lease_ms / 1000.0;
    else
        return rnnd_store_unexpected_locked(s, r, "SET: an unexpected reply", err, errlen);
    freeReplyObject(r);
    return rc;
}

int rnnd_store_register(rnnd_store *s, int64_t wait_ms, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    const char *argv[] = {"INCR", "rnnd:incarnation"};
    redisReply *r = NULL;
    int rc = rnnd_store_call_locked(s, 2, argv, &r, err, errlen);
    if (!rc && (r->type != REDIS_REPLY_INTEGER || r->integer < 1))
        rc = rnnd_store_unexpected_locked(s, r, "INCR: an unexpected reply", err, errlen);
    else if (!rc) {
        s->inc = (uint64_t)r->integer;
        freeReplyObject(r);
    }
    double deadline = rnnd_mono_s() + (double)wait_ms / 1000.0;
    while (!rc && (rc = set_node_locked(s, err, errlen)) == 1) {
        if (rnnd_mono_s() >= deadline) {
            rc = rnnd_fail(RNND_ERR_BUSY, err, errlen,
                           "store: node_name %s is held by another live incarnation", s->node);
            break;
        }
        rc = 0;
        struct timespec ts = {0, REGISTER_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_reregister(rnnd_store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    int rc = set_node_locked(s, err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc == 1 ? rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                               "store: node_name %s is held by another incarnation", s->node)
                   : rc;
}

/* Run a lease script on rnnd:node:NAME with INC (and lease_ms); *RESULT its integer. */
static int node_script_locked(rnnd_store *s, enum rnnd_store_script i, long long *result, char *err,
                              size_t errlen)
{
    char key[KEY_MAX], inc[24], px[24];
    node_key(s, key);
    snprintf(inc, sizeof inc, "%" PRIu64, s->inc);
    snprintf(px, sizeof px, "%" PRId64, s->lease_ms);
    const char *keys[] = {key}, *args[] = {inc, px};
    redisReply *r = NULL;
    int rc = rnnd_store_eval_locked(s, i, 1, keys, 2, args, NULL, &r, err, errlen);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_INTEGER)
        return rnnd_store_unexpected_locked(s, r, "lease script: an unexpected reply", err, errlen);
    *result = r->integer;
    freeReplyObject(r);
    return RNND_OK;
}

int rnnd_store_renew(rnnd_store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    double sent = rnnd_mono_s();
    long long renewed = 0;
    int rc = node_script_locked(s, S_RENEW, &renewed, err, errlen);
    if (!rc && renewed == 1)
        s->lease_until = sent + 0.9 * (double)s->lease_ms / 1000.0;
    else if (!rc)
        rc = rnnd_fail(RNND_ERR_CONFLICT, err, errlen,
                       "store: the node lease of %s lapsed (paused or cut off past lease_ms)",
                       s->node);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_mark(rnnd_store *s, const char *token, char *out, char *err, size_t errlen)
{
    char inc[24];
    out[0] = '\0';
    pthread_mutex_lock(&s->mu);
    snprintf(inc, sizeof inc, "%" PRIu64, s->inc);
    const char *keys[] = {"rnnd:data", "rnnd:incarnation"}, *args[] = {token, inc};
    redisReply *r = NULL;
    int rc = rnnd_store_eval_locked(s, S_MARK, 2, keys, 2, args, NULL, &r, err, errlen);
    if (!rc && r->type != REDIS_REPLY_STRING) {
        rc = rnnd_store_unexpected_locked(s, r, "mark: an unexpected reply", err, errlen);
    } else if (!rc) {
        snprintf(out, RNND_STORE_TOKEN_MAX + 1, "%.*s", (int)r->len, r->str);
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rnnd_store_release_node(rnnd_store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    long long dropped = 0;
    int rc = node_script_locked(s, S_DROP_NODE, &dropped, err, errlen);
    s->lease_until = 0;
    pthread_mutex_unlock(&s->mu);
    return rc;
}
