/* The v2 sequence map (src/v2_seq.h): numeric and string keys per model, replacement on a
 * new start, removal only of the mapping it names, the bound with its purge of entries whose
 * sessions are gone, and concurrent use from several threads. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"
#include "session.h"
#include "v2_seq.h"

static rnnd_session_table *table(size_t max)
{
    rnnd_session_limits l = {
        .max_sessions = max,
        .max_state_bytes = 1 << 30,
        .ttl_s = 10,
        .ttl_max_s = 100,
        .evict_lru = 0,
        .tombstone_s = 50,
        .max_tombstones = 1000,
    };
    return rnnd_session_table_new(&l, NULL, NULL);
}

static rnnd_session *mk(rnnd_session_table *t)
{
    rnnd_session *s;
    char err[256];
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 4}, &s, err,
                                         sizeof err),
                     0);
    return s;
}

static rnnd_v2_seq_key num_key(size_t model, uint64_t n)
{
    rnnd_v2_seq_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.model, sizeof k.model, "m%zu", model);
    k.num = n;
    return k;
}

static rnnd_v2_seq_key str_key(size_t model, const char *s)
{
    rnnd_v2_seq_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.model, sizeof k.model, "m%zu", model);
    k.is_str = 1;
    snprintf(k.str, sizeof k.str, "%s", s);
    return k;
}

START_TEST(test_keys)
{
    rnnd_session_table *t = table(100);
    rnnd_v2_seq *m = rnnd_v2_seq_new(t, 100);
    char old[RNND_ID_LEN + 1], got[RNND_ID_LEN + 1];
    /* 42, "42", and 42 on another model are three different sequences */
    rnnd_v2_seq_key a = num_key(0, 42), b = str_key(0, "42"), c = num_key(1, 42);
    ck_assert_int_eq(rnnd_v2_seq_put(m, &a, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", old), 0);
    ck_assert_str_eq(old, "");
    ck_assert_int_eq(rnnd_v2_seq_put(m, &b, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", old), 0);
    ck_assert_int_eq(rnnd_v2_seq_put(m, &c, "cccccccccccccccccccccccccccccccc", old), 0);
    ck_assert_uint_eq(rnnd_v2_seq_count(m), 3);
    ck_assert_int_eq(rnnd_v2_seq_get(m, &a, got), 0);
    ck_assert_str_eq(got, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    ck_assert_int_eq(rnnd_v2_seq_get(m, &b, got), 0);
    ck_assert_str_eq(got, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    ck_assert_int_eq(rnnd_v2_seq_get(m, &c, got), 0);
    ck_assert_str_eq(got, "cccccccccccccccccccccccccccccccc");
    rnnd_v2_seq_key d = num_key(0, 43);
    ck_assert_int_eq(rnnd_v2_seq_get(m, &d, got), RNND_ERR_INVALID);

    /* a new start replaces, and hands back the old session id */
    ck_assert_int_eq(rnnd_v2_seq_put(m, &a, "dddddddddddddddddddddddddddddddd", old), 0);
    ck_assert_str_eq(old, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    ck_assert_uint_eq(rnnd_v2_seq_count(m), 3);
    /* removal names the mapping: the old session's end does not drop the new one */
    ck_assert_int_eq(rnnd_v2_seq_remove(m, &a, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 0);
    ck_assert_int_eq(rnnd_v2_seq_get(m, &a, got), 0);
    ck_assert_int_eq(rnnd_v2_seq_remove(m, &a, "dddddddddddddddddddddddddddddddd"), 1);
    ck_assert_int_eq(rnnd_v2_seq_get(m, &a, got), RNND_ERR_INVALID);
    ck_assert_uint_eq(rnnd_v2_seq_count(m), 2);

    char buf[64];
    ck_assert_str_eq(rnnd_v2_seq_key_str(&c, buf, sizeof buf), "42");
    rnnd_v2_seq_key big = num_key(0, 18446744073709551615ull);
    ck_assert_str_eq(rnnd_v2_seq_key_str(&big, buf, sizeof buf), "18446744073709551615");
    ck_assert_str_eq(rnnd_v2_seq_key_str(&b, buf, sizeof buf), "42");
    rnnd_v2_seq_free(m);
    rnnd_session_table_free(t);
}
END_TEST

START_TEST(test_bound_and_purge)
{
    rnnd_session_table *t = table(100);
    rnnd_v2_seq *m = rnnd_v2_seq_new(t, 3);
    rnnd_session *s[4];
    char old[RNND_ID_LEN + 1], got[RNND_ID_LEN + 1];
    for (int i = 0; i < 3; i++) {
        s[i] = mk(t);
        rnnd_v2_seq_key k = num_key(0, (uint64_t)i + 1);
        ck_assert_int_eq(rnnd_v2_seq_put(m, &k, rnnd_session_id(s[i]), old), 0);
    }
    /* full of live sequences: refused */
    s[3] = mk(t);
    rnnd_v2_seq_key k4 = num_key(0, 4);
    ck_assert_int_eq(rnnd_v2_seq_put(m, &k4, rnnd_session_id(s[3]), old), RNND_ERR_LIMIT);
    ck_assert_uint_eq(rnnd_v2_seq_count(m), 3);
    /* a session leaves the table: its entry is purged to make room */
    ck_assert_int_eq(rnnd_session_remove(t, rnnd_session_id(s[1])), RNND_SESSION_FOUND);
    ck_assert_int_eq(rnnd_v2_seq_put(m, &k4, rnnd_session_id(s[3]), old), 0);
    ck_assert_uint_eq(rnnd_v2_seq_count(m), 3);
    rnnd_v2_seq_key k2 = num_key(0, 2), k1 = num_key(0, 1);
    ck_assert_int_eq(rnnd_v2_seq_get(m, &k2, got), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_v2_seq_get(m, &k1, got), 0);
    ck_assert_str_eq(got, rnnd_session_id(s[0]));
    ck_assert_int_eq(rnnd_v2_seq_get(m, &k4, got), 0);
    ck_assert_str_eq(got, rnnd_session_id(s[3]));
    /* a replacement never needs room */
    ck_assert_int_eq(rnnd_v2_seq_put(m, &k1, rnnd_session_id(s[3]), old), 0);
    ck_assert_str_eq(old, rnnd_session_id(s[0]));
    for (int i = 0; i < 4; i++)
        rnnd_session_unref(s[i]);
    rnnd_v2_seq_free(m);
    rnnd_session_table_free(t);
}
END_TEST

/* Many threads each start, look up and end their own sequences in one map. */
struct worker {
    rnnd_v2_seq *m;
    int id;
    int errors;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char sid[RNND_ID_LEN + 1], got[RNND_ID_LEN + 1], old[RNND_ID_LEN + 1];
    for (int i = 0; i < 2000; i++) {
        char name[32];
        snprintf(name, sizeof name, "w%d-%d", w->id, i % 7);
        rnnd_v2_seq_key k = str_key((size_t)(i % 2), name);
        snprintf(sid, sizeof sid, "%08x%08x%016x", (unsigned)w->id, (unsigned)i, 0u);
        if (rnnd_v2_seq_put(w->m, &k, sid, old))
            w->errors++;
        if (rnnd_v2_seq_get(w->m, &k, got) || strcmp(got, sid))
            w->errors++;
        if (i % 3 == 0 && rnnd_v2_seq_remove(w->m, &k, sid) != 1)
            w->errors++;
    }
    return NULL;
}

START_TEST(test_threads)
{
    rnnd_session_table *t = table(1000);
    rnnd_v2_seq *m = rnnd_v2_seq_new(t, 1000);
    pthread_t th[8];
    struct worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){m, i, 0};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(w[i].errors, 0);
    }
    ck_assert_uint_le(rnnd_v2_seq_count(m), 8 * 14);
    rnnd_v2_seq_free(m);
    rnnd_session_table_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("v2_seq");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_keys);
    tcase_add_test(tc, test_bound_and_purge);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
