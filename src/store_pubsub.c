/* Hand-over requests between nodes over Redis pub/sub (rnnd/store.h; docs/cluster.md,
 * "Takeover, hand-over, redirect"): a node asks the holder of a session on the holder's
 * channel rnnd:handover:NAME, and each node listens on its own channel with a store of its
 * own (a subscribed connection takes no other command). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "rnnd/status.h"
#include "store_internal.h"

#define CHANNEL_MAX (sizeof "rnnd:handover:" + RNND_STORE_NAME_MAX)

static void channel(char *out, const char *node)
{
    snprintf(out, CHANNEL_MAX, "rnnd:handover:%s", node);
}

/* Ids are 32 lowercase hex digits (the session table's). */
static int id_ok(const char *id, size_t len)
{
    return len == RNND_STORE_ID_LEN && strspn(id, "0123456789abcdef") >= len;
}

int rnnd_store_handover_ask(rnnd_store *s, const char *holder, const char *id, long long *receivers,
                            char *err, size_t errlen)
{
    *receivers = 0;
    char name[RNND_STORE_NAME_MAX + 1];
    size_t n = strcspn(holder, " ");
    if (!id_ok(id, strlen(id)) || n == 0 || n > RNND_STORE_NAME_MAX)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "store: a malformed hand-over request");
    memcpy(name, holder, n);
    name[n] = '\0';
    char chan[CHANNEL_MAX], msg[RNND_STORE_ID_LEN + 1 + RNND_STORE_NAME_MAX + 1];
    channel(chan, name);
    snprintf(msg, sizeof msg, "%s %s", id, s->node);
    const char *argv[] = {"PUBLISH", chan, msg};
    redisReply *r = NULL;
    pthread_mutex_lock(&s->mu);
    int rc = rnnd_store_call_locked(s, 3, argv, &r, err, errlen);
    if (!rc && r->type != REDIS_REPLY_INTEGER)
        rc = rnnd_store_unexpected_locked(s, r, "PUBLISH: an unexpected reply", err, errlen);
    else if (!rc) {
        *receivers = r->integer;
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void drop_locked(rnnd_store *s)
{
    if (s->c)
        redisFree(s->c);
    s->c = NULL;
    s->subscribed = 0;
}

/* Connect and SUBSCRIBE to this node's channel unless done (a connection the open made is
 * dropped first: only one this function set up is known to listen). */
static int subscribe_locked(rnnd_store *s, char *err, size_t errlen)
{
    if (s->c && s->subscribed)
        return RNND_OK;
    drop_locked(s);
    char chan[CHANNEL_MAX];
    channel(chan, s->node);
    const char *argv[] = {"SUBSCRIBE", chan};
    redisReply *r = NULL;
    int rc = rnnd_store_call_locked(s, 2, argv, &r, err, errlen);
    if (!rc && (r->type != REDIS_REPLY_ARRAY || r->elements != 3))
        rc = rnnd_store_unexpected_locked(s, r, "SUBSCRIBE: an unexpected reply", err, errlen);
    else if (!rc)
        freeReplyObject(r);
    if (rc)
        drop_locked(s); /* connected but not subscribed: never left half set up */
    else
        s->subscribed = 1;
    return rc;
}

/* The next reply already read or readable within WAIT_MS into *OUT (NULL: none yet). */
static int next_reply_locked(rnnd_store *s, int wait_ms, redisReply **out)
{
    void *reply = NULL;
    if (redisGetReplyFromReader(s->c, &reply) != REDIS_OK)
        return RNND_ERR_IO;
    if (!reply) {
        /* poll first: a read timeout would leave the context unusable */
        struct pollfd p = {.fd = s->c->fd, .events = POLLIN};
        int n = poll(&p, 1, wait_ms);
        if (n < 0 && errno != EINTR)
            return RNND_ERR_IO;
        if (n > 0 &&
            (redisBufferRead(s->c) != REDIS_OK ||
             redisGetReplyFromReader(s->c, &reply) != REDIS_OK))
            return RNND_ERR_IO;
    }
    *out = reply;
    return RNND_OK;
}

int rnnd_store_handover_next(rnnd_store *s, int wait_ms, char *id, char *from, char *err,
                             size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    int rc = subscribe_locked(s, err, errlen);
    redisReply *r = NULL;
    if (!rc && next_reply_locked(s, wait_ms, &r)) {
        rc = rnnd_fail(RNND_ERR_IO, err, errlen, "store %s:%d: %s", s->url.host, s->url.port,
                       s->c->errstr[0] ? s->c->errstr : "connection lost");
        drop_locked(s);
    }
    if (!rc && !r)
        rc = 1;
    if (!rc) {
        /* ["message", channel, "ID FROM"]; anything else (a malformed message) is skipped */
        rc = 1;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "message") &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            const char *m = r->element[2]->str, *sp = strchr(m, ' ');
            size_t fl = sp ? strlen(sp + 1) : 0;
            if (sp && id_ok(m, (size_t)(sp - m)) && fl > 0 && fl <= RNND_STORE_NAME_MAX) {
                memcpy(id, m, RNND_STORE_ID_LEN);
                id[RNND_STORE_ID_LEN] = '\0';
                memcpy(from, sp + 1, fl + 1);
                rc = RNND_OK;
            }
        }
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
