/* The (model, sequence_id) -> session id map of the v2 sequence extension (see v2_seq.h). */
#include "v2_seq.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

struct entry {
    struct entry *next;
    rnnd_v2_seq_key key;
    char sid[RNND_ID_LEN + 1];
};

struct rnnd_v2_seq {
    pthread_mutex_t mu;
    rnnd_session_table *sessions;
    size_t max, count;
    size_t mask; /* buckets - 1 (a power of two) */
    struct entry **buckets;
};

rnnd_v2_seq *rnnd_v2_seq_new(rnnd_session_table *sessions, size_t max)
{
    rnnd_v2_seq *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    size_t n = 16;
    while (n < max && n < ((size_t)1 << 20))
        n *= 2;
    m->buckets = calloc(n, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->sessions = sessions;
    m->max = max ? max : 1;
    m->mask = n - 1;
    return m;
}

void rnnd_v2_seq_free(rnnd_v2_seq *m)
{
    if (!m)
        return;
    for (size_t i = 0; i <= m->mask; i++) {
        struct entry *e = m->buckets[i];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&m->mu);
    free(m->buckets);
    free(m);
}

/* FNV-1a over the model name, the kind and the value. */
static size_t hash_key(const rnnd_v2_seq_key *k)
{
    uint64_t h = 1469598103934665603ull;
    uint64_t words[3] = {(uint64_t)k->is_str, k->is_str ? 0 : k->num, k->owner};
    const unsigned char *p = (const unsigned char *)words;
    for (size_t i = 0; i < sizeof words; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    for (p = (const unsigned char *)k->model; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    if (k->is_str)
        for (p = (const unsigned char *)k->str; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

static int key_eq(const rnnd_v2_seq_key *a, const rnnd_v2_seq_key *b)
{
    if (strcmp(a->model, b->model) || a->is_str != b->is_str || a->owner != b->owner)
        return 0;
    return a->is_str ? !strcmp(a->str, b->str) : a->num == b->num;
}

/* The link that points at KEY's entry, or at the bucket's terminating NULL. */
static struct entry **find_locked(rnnd_v2_seq *m, const rnnd_v2_seq_key *key)
{
    struct entry **pp = &m->buckets[hash_key(key) & m->mask];
    while (*pp && !key_eq(&(*pp)->key, key))
        pp = &(*pp)->next;
    return pp;
}

/* Drop every entry whose session has left the table. */
static void purge_locked(rnnd_v2_seq *m)
{
    for (size_t i = 0; i <= m->mask; i++) {
        struct entry **pp = &m->buckets[i];
        while (*pp) {
            rnnd_session *s = NULL;
            if (rnnd_session_get(m->sessions, (*pp)->sid, &s) == RNND_SESSION_FOUND) {
                rnnd_session_unref(s);
                pp = &(*pp)->next;
            } else {
                struct entry *dead = *pp;
                *pp = dead->next;
                free(dead);
                m->count--;
            }
        }
    }
}

int rnnd_v2_seq_put(rnnd_v2_seq *m, const rnnd_v2_seq_key *key, const char *sid,
                    char old_sid[RNND_ID_LEN + 1])
{
    old_sid[0] = '\0';
    pthread_mutex_lock(&m->mu);
    struct entry **pp = find_locked(m, key);
    if (*pp) {
        snprintf(old_sid, RNND_ID_LEN + 1, "%s", (*pp)->sid);
        snprintf((*pp)->sid, sizeof(*pp)->sid, "%s", sid);
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    if (m->count >= m->max) {
        purge_locked(m);
        if (m->count >= m->max) {
            pthread_mutex_unlock(&m->mu);
            return RNND_ERR_LIMIT;
        }
        pp = find_locked(m, key); /* the purge may have relinked the bucket */
    }
    struct entry *e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&m->mu);
        return RNND_ERR_NOMEM;
    }
    e->key = *key;
    snprintf(e->sid, sizeof e->sid, "%s", sid);
    *pp = e;
    m->count++;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

int rnnd_v2_seq_get(rnnd_v2_seq *m, const rnnd_v2_seq_key *key, char sid[RNND_ID_LEN + 1])
{
    pthread_mutex_lock(&m->mu);
    struct entry *e = *find_locked(m, key);
    if (e)
        snprintf(sid, RNND_ID_LEN + 1, "%s", e->sid);
    pthread_mutex_unlock(&m->mu);
    return e ? 0 : RNND_ERR_INVALID;
}

int rnnd_v2_seq_remove(rnnd_v2_seq *m, const rnnd_v2_seq_key *key, const char *sid)
{
    pthread_mutex_lock(&m->mu);
    struct entry **pp = find_locked(m, key);
    int dropped = 0;
    if (*pp && !strcmp((*pp)->sid, sid)) {
        struct entry *e = *pp;
        *pp = e->next;
        free(e);
        m->count--;
        dropped = 1;
    }
    pthread_mutex_unlock(&m->mu);
    return dropped;
}

size_t rnnd_v2_seq_count(rnnd_v2_seq *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

const char *rnnd_v2_seq_key_str(const rnnd_v2_seq_key *key, char *buf, size_t len)
{
    if (key->is_str)
        snprintf(buf, len, "%s", key->str);
    else
        snprintf(buf, len, "%" PRIu64, key->num);
    return buf;
}
