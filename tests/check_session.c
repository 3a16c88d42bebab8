/* The session table: ids, lookup, expiry with a fake clock, tombstones, limits (reject and
 * LRU), paging, job order, and a multithreaded stress test. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rnnd/status.h"
#include "session.h"

typedef struct fake_clock {
    double t;
} fake_clock;
static double fake_now(void *arg) { return ((fake_clock *)arg)->t; }

static rnnd_session_limits limits(void)
{
    rnnd_session_limits l = {
        .max_sessions = 1000,
        .max_state_bytes = 1 << 30,
        .ttl_s = 10,
        .ttl_max_s = 100,
        .evict_lru = 0,
        .tombstone_s = 50,
        .max_tombstones = 1000,
    };
    return l;
}

static rnnd_session *mk(rnnd_session_table *t, size_t floats, double ttl)
{
    rnnd_session *s;
    char err[256];
    rnnd_session_init si = {.state_floats = floats, .ttl_s = ttl};
    ck_assert_int_eq(rnnd_session_create(t, &si, &s, err, sizeof err), 0);
    return s;
}

START_TEST(test_ids)
{
    rnnd_session_limits l = limits();
    rnnd_session_table *t = rnnd_session_table_new(&l, NULL, NULL);
    char seen[200][RNND_ID_LEN + 1];
    for (int i = 0; i < 200; i++) {
        rnnd_session *s = mk(t, 4, 0);
        const char *id = rnnd_session_id(s);
        ck_assert_uint_eq(strlen(id), 32);
        ck_assert(rnnd_id_valid(id));
        for (int j = 0; j < i; j++)
            ck_assert_str_ne(seen[j], id);
        strcpy(seen[i], id);
        rnnd_session_unref(s);
    }
    ck_assert(!rnnd_id_valid("0123456789abcdef0123456789abcdeF"));
    ck_assert(!rnnd_id_valid("0123456789abcdef0123456789abcde"));
    ck_assert(!rnnd_id_valid("0123456789abcdef0123456789abcdef0"));
    ck_assert(!rnnd_id_valid("../../etc/passwd"));
    rnnd_session_table_free(t);
}
END_TEST

/* An attacker guessing ids: 10^6 well-formed random guesses against 10^4 live sessions
 * find none (the chance is 10^10 / 2^128). Guesses use the kernel's randomness like real
 * ids, so this also checks that ids are not predictable from each other in any cheap way a
 * guesser could share: the guesses come from the same source and still never collide. */
START_TEST(test_guess_scan)
{
    rnnd_session_limits l = limits();
    l.max_sessions = 20000;
    rnnd_session_table *t = rnnd_session_table_new(&l, NULL, NULL);
    enum { LIVE = 10000, GUESSES = 1000000 };
    for (int i = 0; i < LIVE; i++)
        rnnd_session_unref(mk(t, 1, 0));
    size_t found = 0;
    char id[RNND_ID_LEN + 1];
    for (int i = 0; i < GUESSES; i++) {
        ck_assert_int_eq(rnnd_random_id(id), 0);
        rnnd_session *s;
        if (rnnd_session_get(t, id, &s) == RNND_SESSION_FOUND) {
            found++;
            rnnd_session_unref(s);
        }
    }
    ck_assert_uint_eq(found, 0);
    rnnd_session_table_free(t);
}
END_TEST

START_TEST(test_get_remove)
{
    rnnd_session_limits l = limits();
    rnnd_session_table *t = rnnd_session_table_new(&l, NULL, NULL);
    float init[3] = {1, 2, 3};
    rnnd_session *s, *g;
    char err[256];
    rnnd_session_init si = {.model = (void *)t, .state_floats = 3, .state = init, .steps = 7};
    ck_assert_int_eq(rnnd_session_create(t, &si, &s, err, sizeof err), 0);
    ck_assert_uint_eq(rnnd_session_steps(s), 7);
    ck_assert(rnnd_session_model(s) == (void *)t);
    ck_assert(rnnd_session_state(s)[2] == 3.0f);
    char id[33];
    strcpy(id, rnnd_session_id(s));
    ck_assert_int_eq(rnnd_session_get(t, id, &g), RNND_SESSION_FOUND);
    ck_assert_ptr_eq(g, s);
    rnnd_session_unref(g);
    ck_assert_int_eq(rnnd_session_get(t, "00000000000000000000000000000000", &g),
                     RNND_SESSION_MISSING);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(rnnd_session_remove(t, id), RNND_SESSION_FOUND);
    ck_assert_int_eq(rnnd_session_get(t, id, &g), RNND_SESSION_MISSING);
    ck_assert_int_eq(rnnd_session_remove(t, id), RNND_SESSION_MISSING);
    /* the caller's reference still works after the table let go */
    ck_assert(rnnd_session_state(s)[0] == 1.0f);
    rnnd_session_stats st;
    rnnd_session_table_stats(t, &st);
    ck_assert_uint_eq(st.sessions, 0);
    ck_assert_uint_eq(st.state_bytes, 12);
    rnnd_session_unref(s);
    rnnd_session_table_stats(t, &st);
    ck_assert_uint_eq(st.state_bytes, 0);
    ck_assert_uint_eq(st.deleted, 1);
    rnnd_session_table_free(t);
}
END_TEST

START_TEST(test_ttl_and_tombstone)
{
    fake_clock c = {1000};
    rnnd_session_limits l = limits();
    rnnd_session_table *t = rnnd_session_table_new(&l, fake_now, &c);
    rnnd_session *a = mk(t, 2, 0), *b = mk(t, 2, 30), *g;
    char ida[33], idb[33];
    strcpy(ida, rnnd_session_id(a));
    strcpy(idb, rnnd_session_id(b));
    rnnd_session_unref(a);
    rnnd_session_unref(b);
    c.t += 9.5;
    ck_assert_int_eq(rnnd_session_get(t, ida, &g), RNND_SESSION_FOUND);
    rnnd_session_info info;
    rnnd_session_get_info(g, &info);
    ck_assert(info.idle_s > 9.4 && info.idle_s < 9.6);
    ck_assert(info.expires_in > 0.4 && info.expires_in < 0.6);
    rnnd_session_unref(g);
    c.t += 1; /* a lookup does not refresh a session: it is past its ttl now */
    ck_assert_int_eq(rnnd_session_get(t, ida, &g), RNND_SESSION_EXPIRED);
    ck_assert_int_eq(rnnd_session_get(t, ida, &g), RNND_SESSION_EXPIRED);
    ck_assert_int_eq(rnnd_session_get(t, idb, &g), RNND_SESSION_FOUND); /* own ttl 30 */
    rnnd_session_unref(g);
    c.t += 25;
    ck_assert_uint_eq(rnnd_session_expire(t), 1); /* b, by the sweep */
    ck_assert_int_eq(rnnd_session_get(t, idb, &g), RNND_SESSION_EXPIRED);
    c.t += 30; /* a's tombstone (50 s) is past, b's is not */
    ck_assert_int_eq(rnnd_session_get(t, ida, &g), RNND_SESSION_MISSING);
    ck_assert_int_eq(rnnd_session_get(t, idb, &g), RNND_SESSION_EXPIRED);
    c.t += 30;
    rnnd_session_expire(t);
    rnnd_session_stats st;
    rnnd_session_table_stats(t, &st);
    ck_assert_uint_eq(st.tombstones, 0);
    ck_assert_uint_eq(st.expired, 2);
    ck_assert_int_eq(rnnd_session_get(t, idb, &g), RNND_SESSION_MISSING);
    char err[256];
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 1, .ttl_s = 101},
                                         &g, err, sizeof err),
                     RNND_ERR_INVALID);
    rnnd_session_table_free(t);
}
END_TEST

/* ---- jobs ---- */

typedef struct test_job {
    rnnd_job job;
    int tag;
    int pend; /* start returns PENDING */
    int *log, *nlog;
    struct test_job **parked;
} test_job;

static int tj_start(rnnd_job *j)
{
    test_job *t = (test_job *)j;
    t->log[(*t->nlog)++] = t->tag;
    if (t->pend) {
        *t->parked = t;
        return RNND_JOB_PENDING;
    }
    return RNND_JOB_DONE;
}

static void tj_finish(rnnd_job *j)
{
    test_job *t = (test_job *)j;
    t->log[(*t->nlog)++] = -t->tag;
}

START_TEST(test_job_order_and_busy)
{
    fake_clock c = {0};
    rnnd_session_limits l = limits();
    rnnd_session_table *t = rnnd_session_table_new(&l, fake_now, &c);
    rnnd_session *s = mk(t, 1, 0), *g;
    int log[32], nlog = 0;
    test_job *parked = NULL;
    test_job j[4];
    for (int i = 0; i < 4; i++) {
        j[i] = (test_job){.job = {.start = tj_start, .finish = tj_finish},
                          .tag = i + 1,
                          .pend = i == 0 || i == 2,
                          .log = log,
                          .nlog = &nlog,
                          .parked = &parked};
    }
    ck_assert_int_eq(rnnd_session_submit(s, &j[0].job), RNND_SESSION_FOUND);
    ck_assert_int_eq(nlog, 1); /* started, pending */
    ck_assert_ptr_eq(parked, &j[0]);
    rnnd_session_submit(s, &j[1].job);
    rnnd_session_submit(s, &j[2].job);
    rnnd_session_submit(s, &j[3].job);
    ck_assert_int_eq(nlog, 1); /* queued behind the first */
    /* busy sessions never expire */
    c.t += 1000;
    ck_assert_uint_eq(rnnd_session_expire(t), 0);
    ck_assert_int_eq(rnnd_session_get(t, rnnd_session_id(s), &g), RNND_SESSION_FOUND);
    rnnd_session_info info;
    rnnd_session_get_info(g, &info);
    ck_assert(info.busy);
    ck_assert(info.idle_s == 0);
    rnnd_session_unref(g);
    rnnd_session_job_done(&parked->job); /* 1 finishes, 2 runs inline, 3 pends */
    int want1[] = {1, -1, 2, -2, 3};
    ck_assert_int_eq(nlog, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(log[i], want1[i]);
    ck_assert_ptr_eq(parked, &j[2]);
    rnnd_session_job_done(&parked->job);
    int want2[] = {-3, 4, -4};
    ck_assert_int_eq(nlog, 8);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(log[5 + i], want2[i]);
    /* idle again: expires after its ttl from the last job */
    c.t += 9;
    ck_assert_uint_eq(rnnd_session_expire(t), 0);
    c.t += 2;
    ck_assert_uint_eq(rnnd_session_expire(t), 1);
    /* a job submitted to an expired session is refused and not run */
    test_job late = {.job = {.start = tj_start, .finish = tj_finish},
                     .tag = 9,
                     .log = log,
                     .nlog = &nlog,
                     .parked = &parked};
    ck_assert_int_eq(rnnd_session_submit(s, &late.job), RNND_SESSION_EXPIRED);
    ck_assert_int_eq(nlog, 8);
    rnnd_session_unref(s);
    rnnd_session_table_free(t);
}
END_TEST

START_TEST(test_limits_reject)
{
    rnnd_session_limits l = limits();
    l.max_sessions = 3;
    rnnd_session_table *t = rnnd_session_table_new(&l, NULL, NULL);
    rnnd_session *s[3], *x;
    for (int i = 0; i < 3; i++)
        s[i] = mk(t, 4, 0);
    char err[256];
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 4}, &x, err,
                                         sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert(strstr(err, "max_sessions"));
    ck_assert_int_eq(rnnd_session_remove(t, rnnd_session_id(s[1])), RNND_SESSION_FOUND);
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 4}, &x, err,
                                         sizeof err),
                     0);
    rnnd_session_unref(x);
    for (int i = 0; i < 3; i++)
        rnnd_session_unref(s[i]);
    rnnd_session_table_free(t);

    /* memory cap: 3 blocks of 400 bytes fit in 1300, a fourth does not */
    l = limits();
    l.max_state_bytes = 1300;
    t = rnnd_session_table_new(&l, NULL, NULL);
    for (int i = 0; i < 3; i++)
        rnnd_session_unref(mk(t, 100, 0));
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 100}, &x, err,
                                         sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 1000}, &x, err,
                                         sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 25}, &x, err,
                                         sizeof err),
                     0);
    rnnd_session_unref(x);
    rnnd_session_table_free(t);
}
END_TEST

START_TEST(test_limits_lru)
{
    fake_clock c = {0};
    rnnd_session_limits l = limits();
    l.max_sessions = 3;
    l.evict_lru = 1;
    rnnd_session_table *t = rnnd_session_table_new(&l, fake_now, &c);
    rnnd_session *s[3], *x, *g;
    char ids[3][33];
    for (int i = 0; i < 3; i++) {
        c.t += 1;
        s[i] = mk(t, 4, 0);
        strcpy(ids[i], rnnd_session_id(s[i]));
    }
    /* touch s[0] with a job so s[1] becomes the least recently used */
    int log[8], nlog = 0;
    test_job *parked = NULL;
    test_job j = {.job = {.start = tj_start, .finish = tj_finish},
                  .tag = 1,
                  .log = log,
                  .nlog = &nlog,
                  .parked = &parked};
    c.t += 1;
    rnnd_session_submit(s[0], &j.job);
    char err[256];
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 4}, &x, err,
                                         sizeof err),
                     0);
    ck_assert_int_eq(rnnd_session_get(t, ids[1], &g), RNND_SESSION_EVICTED);
    ck_assert_int_eq(rnnd_session_get(t, ids[0], &g), RNND_SESSION_FOUND);
    rnnd_session_unref(g);
    ck_assert_int_eq(rnnd_session_get(t, ids[2], &g), RNND_SESSION_FOUND);
    rnnd_session_unref(g);
    rnnd_session_unref(x);
    /* busy sessions are never evicted: with all three busy, creation is refused */
    test_job p[3];
    for (int i = 0; i < 3; i++)
        rnnd_session_unref(s[i]);
    rnnd_session *live[3];
    size_t n = 0;
    rnnd_session_info infos[3];
    int more;
    ck_assert_uint_eq(rnnd_session_list(t, NULL, NULL, 3, infos, &more), 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(rnnd_session_get(t, infos[i].id, &live[n]), RNND_SESSION_FOUND);
        p[n] = (test_job){.job = {.start = tj_start, .finish = tj_finish},
                          .tag = 5,
                          .pend = 1,
                          .log = log,
                          .nlog = &nlog,
                          .parked = &parked};
        nlog = 0;
        rnnd_session_submit(live[n], &p[n].job);
        n++;
    }
    ck_assert_int_eq(rnnd_session_create(t, &(rnnd_session_init){.state_floats = 4}, &x, err,
                                         sizeof err),
                     RNND_ERR_LIMIT);
    for (size_t i = 0; i < n; i++) {
        nlog = 0;
        rnnd_session_job_done(&p[i].job);
        rnnd_session_unref(live[i]);
    }
    rnnd_session_stats st;
    rnnd_session_table_stats(t, &st);
    ck_assert_uint_eq(st.evicted, 1);
    ck_assert_uint_eq(st.rejected, 1);
    rnnd_session_table_free(t);
}
END_TEST

START_TEST(test_list_paging)
{
    rnnd_session_limits l = limits();
    rnnd_session_table *t = rnnd_session_table_new(&l, NULL, NULL);
    int ma, mb;
    char all[25][33];
    for (int i = 0; i < 25; i++) {
        rnnd_session *s;
        char err[256];
        rnnd_session_init si = {.model = i % 5 ? (void *)&ma : (void *)&mb, .state_floats = 1};
        ck_assert_int_eq(rnnd_session_create(t, &si, &s, err, sizeof err), 0);
        strcpy(all[i], rnnd_session_id(s));
        rnnd_session_unref(s);
    }
    rnnd_session_info page[10];
    char after[33] = "";
    int more = 1, seen = 0;
    for (int round = 0; more && round < 10; round++) {
        size_t n = rnnd_session_list(t, after, NULL, 10, page, &more);
        ck_assert_uint_eq(n, round < 2 ? 10 : 5);
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_gt(strcmp(page[i].id, after), 0);
            strcpy(after, page[i].id);
        }
        seen += (int)n;
    }
    ck_assert_int_eq(seen, 25);
    ck_assert_uint_eq(rnnd_session_list(t, NULL, &mb, 10, page, &more), 5);
    ck_assert(!more);
    for (int i = 0; i < 5; i++)
        ck_assert_ptr_eq(page[i].model, &mb);
    rnnd_session_table_free(t);
}
END_TEST

/* ---- stress: many threads create, look up, step, delete and expire at once ---- */

#define ST_THREADS 6
#define ST_ROUNDS 1500

typedef struct stress {
    rnnd_session_table *t;
    rnnd_session *shared;
    atomic_int in_use; /* 1 while a job of the shared session runs */
    atomic_int violations;
    atomic_int done_jobs;
    atomic_int stop;
    pthread_mutex_t qmu; /* a "worker" queue for pending jobs */
    rnnd_job *queue[ST_THREADS * ST_ROUNDS];
    size_t qhead, qtail;
} stress;

typedef struct stress_job {
    rnnd_job job;
    stress *st;
    int pend;
} stress_job;

static void sj_work(stress_job *j)
{
    stress *st = j->st;
    if (atomic_exchange(&st->in_use, 1))
        atomic_fetch_add(&st->violations, 1);
    float *state = rnnd_session_state(j->job.session);
    state[0] += 1.0f; /* not atomic on purpose: jobs of one session must not overlap */
    rnnd_session_add_steps(j->job.session, 1);
    atomic_store(&st->in_use, 0);
}

static int sj_start(rnnd_job *job)
{
    stress_job *j = (stress_job *)job;
    if (!j->pend) {
        sj_work(j);
        return RNND_JOB_DONE;
    }
    pthread_mutex_lock(&j->st->qmu);
    j->st->queue[j->st->qtail++] = job;
    pthread_mutex_unlock(&j->st->qmu);
    return RNND_JOB_PENDING;
}

static void sj_finish(rnnd_job *job)
{
    stress_job *j = (stress_job *)job;
    atomic_fetch_add(&j->st->done_jobs, 1);
    free(j);
}

static void *stress_worker(void *arg)
{
    stress *st = arg;
    for (;;) {
        rnnd_job *job = NULL;
        pthread_mutex_lock(&st->qmu);
        if (st->qhead < st->qtail)
            job = st->queue[st->qhead++];
        pthread_mutex_unlock(&st->qmu);
        if (job) {
            sj_work((stress_job *)job);
            rnnd_session_job_done(job);
        } else if (atomic_load(&st->stop)) {
            return NULL;
        } else {
            sched_yield();
        }
    }
}

static void *stress_client(void *arg)
{
    stress *st = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    char mine[8][33];
    int nmine = 0;
    for (int r = 0; r < ST_ROUNDS; r++) {
        stress_job *j = calloc(1, sizeof *j);
        j->job.start = sj_start;
        j->job.finish = sj_finish;
        j->st = st;
        j->pend = rand_r(&seed) & 1;
        ck_assert_int_eq(rnnd_session_submit(st->shared, &j->job), RNND_SESSION_FOUND);

        rnnd_session *s, *g;
        char err[256];
        if (rnnd_session_create(st->t, &(rnnd_session_init){.state_floats = 8}, &s, err,
                                sizeof err) == 0) {
            if (nmine < 8) {
                strcpy(mine[nmine++], rnnd_session_id(s));
            } else {
                int k = rand_r(&seed) % 8;
                rnnd_session_remove(st->t, mine[k]); /* may have been evicted */
                strcpy(mine[k], rnnd_session_id(s));
            }
            rnnd_session_unref(s);
        }
        int k = rand_r(&seed) % (nmine ? nmine : 1);
        if (nmine && rnnd_session_get(st->t, mine[k], &g) == RNND_SESSION_FOUND) {
            ck_assert_str_eq(rnnd_session_id(g), mine[k]);
            rnnd_session_unref(g);
        }
        if (r % 100 == 0)
            rnnd_session_expire(st->t);
    }
    return NULL;
}

START_TEST(test_stress)
{
    static stress st;
    memset(&st, 0, sizeof st);
    rnnd_session_limits l = limits();
    l.max_sessions = 40; /* small, so creation hits the limit and evicts */
    l.evict_lru = 1;
    st.t = rnnd_session_table_new(&l, NULL, NULL);
    pthread_mutex_init(&st.qmu, NULL);
    char err[256];
    /* the shared session lives in a table of its own, where nothing evicts it */
    rnnd_session_limits l2 = limits();
    rnnd_session_table *t2 = rnnd_session_table_new(&l2, NULL, NULL);
    ck_assert_int_eq(rnnd_session_create(t2, &(rnnd_session_init){.state_floats = 4, .ttl_s = 100},
                                         &st.shared, err, sizeof err),
                     0);
    pthread_t w, c[ST_THREADS];
    pthread_create(&w, NULL, stress_worker, &st);
    for (int i = 0; i < ST_THREADS; i++)
        pthread_create(&c[i], NULL, stress_client, &st);
    for (int i = 0; i < ST_THREADS; i++)
        pthread_join(c[i], NULL);
    /* wait (bounded) for the worker to drain the pending jobs */
    for (int i = 0; i < 10000 && atomic_load(&st.done_jobs) < ST_THREADS * ST_ROUNDS; i++)
        usleep(1000);
    atomic_store(&st.stop, 1);
    pthread_join(w, NULL);
    ck_assert_int_eq(atomic_load(&st.done_jobs), ST_THREADS * ST_ROUNDS);
    ck_assert_int_eq(atomic_load(&st.violations), 0);
    ck_assert(rnnd_session_state(st.shared)[0] == (float)(ST_THREADS * ST_ROUNDS));
    ck_assert_uint_eq(rnnd_session_steps(st.shared), ST_THREADS * ST_ROUNDS);
    rnnd_session_stats ss;
    rnnd_session_table_stats(st.t, &ss);
    ck_assert_uint_le(ss.sessions, 40);
    ck_assert_uint_eq(ss.created, ss.sessions + ss.expired + ss.evicted + ss.deleted);
    rnnd_session_unref(st.shared);
    rnnd_session_table_free(st.t);
    rnnd_session_table_free(t2);
    pthread_mutex_destroy(&st.qmu);
}
END_TEST

/* The gone hook's calls: how many, and the last reason. */
typedef struct gone_log {
    int n, why;
    char id[RNND_ID_LEN + 1];
} gone_log;

static void on_gone(void *arg, rnnd_session *s, int why)
{
    gone_log *g = arg;
    g->n++;
    g->why = why;
    strcpy(g->id, rnnd_session_id(s));
}

/* Cluster mode's hooks (store_sync.c): the gone hook hears of every expiry (at lookup and at
 * the sweep) and eviction, never of a removal; a job that is not a use leaves the idle clock
 * alone, and rnnd_session_idle_s reads it busy or not. */
START_TEST(test_gone_hook_and_idle)
{
    fake_clock c = {100};
    rnnd_session_limits l = limits();
    l.max_sessions = 2;
    l.evict_lru = 1;
    rnnd_session_table *t = rnnd_session_table_new(&l, fake_now, &c);
    gone_log g = {0, 0, ""};
    rnnd_session_table_set_gone(t, on_gone, &g);
    rnnd_session *a = mk(t, 1, 5), *b = mk(t, 1, 5), *x;
    char ida[RNND_ID_LEN + 1], idb[RNND_ID_LEN + 1];
    strcpy(ida, rnnd_session_id(a));
    strcpy(idb, rnnd_session_id(b));
    /* a job that is not a use: B's idle clock runs on through it */
    c.t += 2;
    int log[8], nlog = 0;
    test_job q = {.job = {.start = tj_start, .finish = tj_finish, .not_a_use = 1},
                  .tag = 1,
                  .log = log,
                  .nlog = &nlog};
    ck_assert_int_eq(rnnd_session_submit(b, &q.job), RNND_SESSION_FOUND);
    ck_assert_int_eq(nlog, 2);
    ck_assert(rnnd_session_idle_s(b) == 2);
    /* a use (a job without the flag) restarts it */
    test_job u = {.job = {.start = tj_start, .finish = tj_finish},
                  .tag = 2,
                  .log = log,
                  .nlog = &nlog};
    c.t += 1;
    rnnd_session_submit(a, &u.job);
    ck_assert(rnnd_session_idle_s(a) == 0);
    /* a third session evicts B, the least recently used */
    rnnd_session *d = mk(t, 1, 5);
    ck_assert_int_eq(g.n, 1);
    ck_assert_int_eq(g.why, RNND_SESSION_EVICTED);
    ck_assert_str_eq(g.id, idb);
    /* a removal is not an end the hook hears of */
    ck_assert_int_eq(rnnd_session_remove(t, rnnd_session_id(d)), RNND_SESSION_FOUND);
    ck_assert_int_eq(g.n, 1);
    /* A expires at its lookup */
    c.t += 6;
    ck_assert_int_eq(rnnd_session_get(t, ida, &x), RNND_SESSION_EXPIRED);
    ck_assert_int_eq(g.n, 2);
    ck_assert_int_eq(g.why, RNND_SESSION_EXPIRED);
    ck_assert_str_eq(g.id, ida);
    /* and one more at the sweep */
    rnnd_session *e = mk(t, 1, 1);
    c.t += 2;
    ck_assert_uint_eq(rnnd_session_expire(t), 1);
    ck_assert_int_eq(g.n, 3);
    ck_assert_str_eq(g.id, rnnd_session_id(e));
    rnnd_session_unref(a);
    rnnd_session_unref(b);
    rnnd_session_unref(d);
    rnnd_session_unref(e);
    rnnd_session_table_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_ids);
    tcase_add_test(tc, test_guess_scan);
    tcase_add_test(tc, test_get_remove);
    tcase_add_test(tc, test_ttl_and_tombstone);
    tcase_add_test(tc, test_job_order_and_busy);
    tcase_add_test(tc, test_limits_reject);
    tcase_add_test(tc, test_limits_lru);
    tcase_add_test(tc, test_list_paging);
    tcase_add_test(tc, test_gone_hook_and_idle);
    tcase_add_test(tc, test_stress);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
