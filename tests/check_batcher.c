/* The batcher on a real pool and session table: many sessions stepped concurrently, in
 * chunks, several requests queued per session, give outputs bitwise equal to stepping each
 * session alone one step at a time; batches really hold several sessions; if_steps and stop
 * behave. Models are random (tests/testutil.c). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batcher.h"
#include "pool.h"
#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/status.h"
#include "session.h"
#include "testutil.h"

static const char *const tok_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":23,"
    "\"embedding_dim\":7},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":19,\"direction\":\"forward\"},"
    "{\"type\":\"gru\",\"hidden_size\":13,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":23,\"in_dim\":13,\"norm\":\"log_softmax\"}}";

static const char *const vec_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":5},\"layers\":["
    "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\"},"
    "{\"type\":\"jordan\",\"hidden_size\":9,\"direction\":\"forward\",\"output_size\":4}]}";

/* every layer a minGRU / minLSTM: long requests scan (batcher.h) */
static const char *const min_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":5},\"layers\":["
    "{\"type\":\"mingru\",\"hidden_size\":17,\"direction\":\"forward\"},"
    "{\"type\":\"minlstm\",\"hidden_size\":9,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":4,\"in_dim\":9,\"norm\":\"softmax\"}}";

/* min_arch with an MLP head wider than the output: the scan applies it as a step does */
static const char *const min_mlp_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":5},\"layers\":["
    "{\"type\":\"mingru\",\"hidden_size\":17,\"direction\":\"forward\"},"
    "{\"type\":\"minlstm\",\"hidden_size\":9,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":4,\"in_dim\":9,\"norm\":\"softmax\",\"layers\":["
    "{\"op\":\"layernorm\"},{\"op\":\"linear\",\"in_dim\":9,\"out_dim\":31},"
    "{\"op\":\"gelu\"},{\"op\":\"layernorm\",\"affine\":false},{\"op\":\"tanh\"},"
    "{\"op\":\"linear\",\"in_dim\":31,\"out_dim\":4}]}}";

typedef struct fixture {
    rnnd_net *net;
    rnnd_batcher *b;
    rnnd_pool *pool;
    rnnd_session_table *t;
    int tokens;
    size_t in_dim, out_dim, state_floats;
} fixture;

/* batcher.h: a worker's context is its index */
static void *wctx_new(void *arg, size_t i)
{
    (void)arg;
    size_t *w = malloc(sizeof *w);
    if (w)
        *w = i;
    return w;
}

static void wctx_free(void *arg, void *w)
{
    (void)arg;
    free(w);
}

static void setup(fixture *f, const char *arch, size_t max_batch, long wait_us, size_t workers)
{
    memset(f, 0, sizeof *f);
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/check_batcher_%ld.rnnd", tu_tmpdir(), (long)getpid());
    ck_assert_int_eq(tu_write_random_model(path, arch, 11), 0);
    rnnd_model *m;
    ck_assert_msg(rnnd_model_open(path, &m, err, sizeof err) == 0, "%s", err);
    unlink(path);
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    ck_assert_ptr_nonnull(k);
    ck_assert_msg(rnnd_net_new(m, k, &f->net, err, sizeof err) == 0, "%s", err);
    const rnnd_model_spec *spec = rnnd_model_get_spec(m);
    f->tokens = spec->input_kind == RNND_INPUT_TOKENS;
    f->in_dim = f->tokens ? (size_t)spec->vocab_size : (size_t)spec->input_dim;
    f->out_dim = (size_t)rnnd_net_output_dim(f->net);
    f->state_floats = rnnd_net_state_floats(f->net);
    rnnd_model_unref(m);
    ck_assert_int_eq(rnnd_batcher_new(f->net, workers, NULL, max_batch, wait_us, &f->b), 0);
    ck_assert_int_eq(rnnd_pool_new(workers, wctx_new, wctx_free, f, &f->pool, err, sizeof err), 0);
    rnnd_batcher_set_pool(f->b, f->pool);
    rnnd_session_limits lim = {.max_sessions = 1000,
                               .max_state_bytes = 1 << 30,
                               .ttl_s = 600,
                               .ttl_max_s = 600,
                               .tombstone_s = 60,
                               .max_tombstones = 100};
    f->t = rnnd_session_table_new(&lim, NULL, NULL);
}

static void teardown(fixture *f)
{
    rnnd_pool_free(f->pool);
    rnnd_batcher_free(f->b);
    rnnd_session_table_free(f->t);
    rnnd_net_free(f->net);
}

/* ---- jobs ---- */

typedef struct tjob {
    rnnd_step_job sj;
    int32_t *tokens;
    float *vectors, *out;
    atomic_int *done;
} tjob;

static void tjob_finish(rnnd_job *job)
{
    tjob *j = (tjob *)job;
    atomic_fetch_add(j->done, 1);
}

static tjob *tjob_new(fixture *f, const int32_t *tokens, const float *vectors, size_t n,
                      int64_t if_steps, atomic_int *done)
{
    tjob *j = calloc(1, sizeof *j);
    if (f->tokens) {
        j->tokens = malloc(n * sizeof *j->tokens);
        memcpy(j->tokens, tokens, n * sizeof *j->tokens);
    } else {
        j->vectors = malloc(n * f->in_dim * sizeof *j->vectors);
        memcpy(j->vectors, vectors, n * f->in_dim * sizeof *j->vectors);
    }
    j->out = calloc(n * f->out_dim, sizeof *j->out);
    rnnd_step_job_init(&j->sj, f->b);
    j->sj.job.finish = tjob_finish;
    j->sj.n_steps = n;
    j->sj.tokens = j->tokens;
    j->sj.vectors = j->vectors;
    j->sj.out = j->out;
    j->sj.if_steps = if_steps;
    j->done = done;
    return j;
}

static void tjob_free(tjob *j)
{
    free(j->tokens);
    free(j->vectors);
    free(j->out);
    free(j);
}

static void wait_done(atomic_int *done, int want)
{
    for (int i = 0; i < 20000 && atomic_load(done) < want; i++)
        usleep(500);
    ck_assert_int_eq(atomic_load(done), want);
}

/* ---- the concurrency test ---- */

#define N_SESS 32
#define LEN 30
#define N_THREADS 4

typedef struct sess_plan {
    rnnd_session *s;
    int32_t tokens[LEN];
    float vectors[LEN * 8];
    size_t chunks[LEN];
    size_t n_chunks;
    tjob *jobs[LEN];
} sess_plan;

typedef struct client_arg {
    fixture *f;
    sess_plan *plans;
    int first, count;
    atomic_int *done;
} client_arg;

/* Submit every chunk of this thread's sessions at once: several requests queue per session. */
static void *client(void *p)
{
    client_arg *a = p;
    for (size_t c = 0; c < LEN; c++) {
        for (int k = a->first; k < a->first + a->count; k++) {
            sess_plan *sp = &a->plans[k];
            if (c >= sp->n_chunks)
                continue;
            size_t pos = 0;
            for (size_t i = 0; i < c; i++)
                pos += sp->chunks[i];
            sp->jobs[c] = tjob_new(a->f, sp->tokens + pos, sp->vectors + pos * a->f->in_dim,
                                   sp->chunks[c], -1, a->done);
            ck_assert_int_eq(rnnd_session_submit(sp->s, &sp->jobs[c]->sj.job), RNND_SESSION_FOUND);
        }
    }
    return NULL;
}

/* Chunks of 1 .. MAX_CHUNK steps. */
static void run_concurrency(const char *arch, size_t max_batch, long wait_us, size_t max_chunk)
{
    fixture f;
    setup(&f, arch, max_batch, wait_us, 2);
    static sess_plan plans[N_SESS];
    memset(plans, 0, sizeof plans);
    unsigned seed = 5;
    int total_jobs = 0;
    char err[256];
    for (int k = 0; k < N_SESS; k++) {
        sess_plan *sp = &plans[k];
        ck_assert_int_eq(rnnd_session_create(f.t,
                                             &(rnnd_session_init){.state_floats = f.state_floats},
                                             &sp->s, err, sizeof err),
                         0);
        for (int i = 0; i < LEN; i++)
            sp->tokens[i] = (int32_t)(rand_r(&seed) % f.in_dim);
        for (size_t i = 0; !f.tokens && i < LEN * f.in_dim; i++)
            sp->vectors[i] = (float)(rand_r(&seed) % 2001) / 1000.0f - 1.0f;
        size_t left = LEN;
        while (left) {
            size_t n = 1 + (size_t)rand_r(&seed) % max_chunk;
            n = n < left ? n : left;
            sp->chunks[sp->n_chunks++] = n;
            left -= n;
        }
        total_jobs += (int)sp->n_chunks;
    }
    atomic_int done = 0;
    pthread_t th[N_THREADS];
    client_arg args[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (client_arg){&f, plans, i * (N_SESS / N_THREADS), N_SESS / N_THREADS, &done};
        pthread_create(&th[i], NULL, client, &args[i]);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    wait_done(&done, total_jobs);

    /* the reference: each session alone, one step per call, on this thread */
    rnnd_work *w = rnnd_work_new(f.net, 1);
    float *state = calloc(f.state_floats, sizeof *state), *out = calloc(f.out_dim, sizeof *out);
    for (int k = 0; k < N_SESS; k++) {
        sess_plan *sp = &plans[k];
        memset(state, 0, f.state_floats * sizeof *state);
        size_t pos = 0;
        for (size_t c = 0; c < sp->n_chunks; c++) {
            tjob *j = sp->jobs[c];
            ck_assert_int_eq(j->sj.outcome, RNND_STEP_OK);
            ck_assert_uint_eq(j->sj.done, sp->chunks[c]);
            for (size_t i = 0; i < sp->chunks[c]; i++, pos++) {
                float *states[1] = {state};
                ck_assert_int_eq(rnnd_net_step(f.net, w, 1, f.tokens ? &sp->tokens[pos] : NULL,
                                               f.tokens ? NULL : sp->vectors + pos * f.in_dim,
                                               states, out, err, sizeof err),
                                 0);
                ck_assert_msg(!memcmp(out, j->out + i * f.out_dim, f.out_dim * sizeof *out),
                              "session %d step %zu differs from stepping alone", k, pos);
            }
            ck_assert_uint_eq(j->sj.steps, pos); /* the count after this request */
            tjob_free(j);
        }
        ck_assert(!memcmp(state, rnnd_session_state(sp->s), f.state_floats * sizeof *state));
        ck_assert_uint_eq(rnnd_session_steps(sp->s), LEN);
        rnnd_session_unref(sp->s);
    }
    free(state);
    free(out);
    rnnd_work_free(w);

    /* every step counted once; batches really held several sessions, never > max_batch */
    uint64_t batches = rnnd_batcher_batches(f.b), sum = 0, multi = 0;
    for (size_t k = 1; k <= max_batch; k++) {
        sum += k * rnnd_batcher_hist(f.b, k);
        if (k > 1)
            multi += rnnd_batcher_hist(f.b, k);
    }
    /* steps of long requests of a minGRU/minLSTM net were scanned, the rest stepped */
    uint64_t scanned = rnnd_batcher_scan_steps(f.b);
    if (rnnd_net_scannable(f.net))
        ck_assert_msg(scanned > 0 && rnnd_batcher_scan_rounds(f.b) > 0, "nothing scanned");
    else
        ck_assert_uint_eq(scanned, 0);
    ck_assert_uint_eq(sum + scanned, N_SESS * LEN);
    ck_assert_uint_eq(rnnd_batcher_steps(f.b), N_SESS * LEN);
    ck_assert_uint_eq(rnnd_batcher_hist(f.b, max_batch + 1), 0);
    ck_assert_msg(multi > 0, "no batch of more than one session in %llu batches",
                  (unsigned long long)batches);
    teardown(&f);
}

START_TEST(test_concurrent_tokens) { run_concurrency(tok_arch, 8, 0, 7); }
END_TEST

START_TEST(test_concurrent_vectors_wait) { run_concurrency(vec_arch, 64, 300, 7); }
END_TEST

/* minGRU/minLSTM: requests of 8+ steps scan a chunk at a time, beside requests that step,
 * and every output and state is still bitwise that of stepping alone. */
START_TEST(test_concurrent_min_scan) { run_concurrency(min_arch, 8, 0, 20); }
END_TEST

/* Two sessions with a request of several chunks (RNND_BATCHER_SCAN_CHUNK) each, one keeping
 * only its last output, on a min net whose rounds split at SPLIT_MIN sessions (0 never):
 * bitwise stepping alone either way. Returns the steps scanned. */
static uint64_t run_long_pair(const char *arch, size_t split_min)
{
    fixture f;
    setup(&f, arch, 4, 0, 2);
    rnnd_batcher_set_split_min(f.b, split_min);
    char err[256];
    size_t n = 2 * RNND_BATCHER_SCAN_CHUNK + 37;
    float *x = malloc(n * f.in_dim * sizeof *x);
    unsigned seed = 3;
    for (size_t i = 0; i < n * f.in_dim; i++)
        x[i] = (float)(rand_r(&seed) % 2001) / 1000.0f - 1.0f;
    rnnd_session *s[2];
    tjob *j[2];
    atomic_int done = 0;
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(rnnd_session_create(f.t,
                                             &(rnnd_session_init){.state_floats = f.state_floats},
                                             &s[i], err, sizeof err),
                         0);
        j[i] = tjob_new(&f, NULL, x, n, -1, &done);
        j[i]->sj.last_only = i;
        ck_assert_int_eq(rnnd_session_submit(s[i], &j[i]->sj.job), RNND_SESSION_FOUND);
    }
    wait_done(&done, 2);
    rnnd_work *w = rnnd_work_new(f.net, 1);
    float *state = calloc(f.state_floats, sizeof *state), *out = calloc(f.out_dim, sizeof *out);
    for (size_t t = 0; t < n; t++) {
        float *states[1] = {state};
        ck_assert_int_eq(rnnd_net_step(f.net, w, 1, NULL, x + t * f.in_dim, states, out, err,
                                       sizeof err),
                         0);
        ck_assert(!memcmp(out, j[0]->out + t * f.out_dim, f.out_dim * sizeof *out));
    }
    ck_assert(!memcmp(out, j[1]->out, f.out_dim * sizeof *out));
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(j[i]->sj.outcome, RNND_STEP_OK);
        ck_assert_uint_eq(j[i]->sj.done, n);
        ck_assert_uint_eq(rnnd_session_steps(s[i]), n);
        ck_assert(!memcmp(state, rnnd_session_state(s[i]), f.state_floats * sizeof *state));
        rnnd_session_unref(s[i]);
        tjob_free(j[i]);
    }
    uint64_t scanned = rnnd_batcher_scan_steps(f.b);
    ck_assert_uint_eq(rnnd_batcher_steps(f.b), 2 * n);
    if (split_min)
        ck_assert_uint_gt(rnnd_batcher_split_rounds(f.b), 0);
    free(state);
    free(out);
    free(x);
    rnnd_work_free(w);
    teardown(&f);
    return scanned;
}

/* Requests of several chunks scan (outputs kept, or the last only). */
START_TEST(test_scan_last_only)
{
    ck_assert_uint_eq(run_long_pair(min_arch, 0), 2 * (2 * RNND_BATCHER_SCAN_CHUNK + 37));
}
END_TEST

/* An MLP head on a min net: the scanned rows are bitwise the stepped rows, concurrent or
 * several chunks long. */
START_TEST(test_min_scan_mlp_head)
{
    run_concurrency(min_mlp_arch, 8, 0, 20);
    ck_assert_uint_eq(run_long_pair(min_mlp_arch, 0), 2 * (2 * RNND_BATCHER_SCAN_CHUNK + 37));
}
END_TEST

/* Rounds that split among workers step instead of scanning. */
START_TEST(test_split_rounds_do_not_scan) { ck_assert_uint_eq(run_long_pair(min_arch, 1), 0); }
END_TEST

START_TEST(test_if_steps_and_stop)
{
    fixture f;
    setup(&f, tok_arch, 4, 0, 1);
    rnnd_session *s;
    char err[256];
    ck_assert_int_eq(rnnd_session_create(f.t, &(rnnd_session_init){.state_floats = f.state_floats},
                                         &s, err, sizeof err),
                     0);
    atomic_int done = 0;
    int32_t toks[3] = {1, 2, 3};
    tjob *a = tjob_new(&f, toks, NULL, 3, 0, &done);
    tjob *b = tjob_new(&f, toks, NULL, 1, 5, &done); /* stale: the count will be 3 */
    tjob *c = tjob_new(&f, toks, NULL, 2, 3, &done);
    rnnd_session_submit(s, &a->sj.job);
    rnnd_session_submit(s, &b->sj.job);
    rnnd_session_submit(s, &c->sj.job);
    wait_done(&done, 3);
    ck_assert_int_eq(a->sj.outcome, RNND_STEP_OK);
    ck_assert_int_eq(b->sj.outcome, RNND_STEP_CONFLICT);
    ck_assert_uint_eq(b->sj.steps, 3);
    ck_assert_uint_eq(b->sj.done, 0);
    ck_assert_int_eq(c->sj.outcome, RNND_STEP_OK);
    ck_assert_uint_eq(c->sj.steps, 5);
    ck_assert_uint_eq(rnnd_session_steps(s), 5);
    /* "last" keeps only the last step's output, equal to the "all" run's last row */
    tjob *d = tjob_new(&f, toks, NULL, 3, -1, &done);
    d->sj.last_only = 1;
    rnnd_session *s2;
    ck_assert_int_eq(rnnd_session_create(f.t, &(rnnd_session_init){.state_floats = f.state_floats},
                                         &s2, err, sizeof err),
                     0);
    rnnd_session_submit(s2, &d->sj.job);
    wait_done(&done, 4);
    ck_assert(!memcmp(d->out, a->out + 2 * f.out_dim, f.out_dim * sizeof(float)));
    /* after stop nothing runs: the job is finished as STOPPED */
    rnnd_batcher_stop(f.b);
    tjob *e = tjob_new(&f, toks, NULL, 1, -1, &done);
    rnnd_session_submit(s, &e->sj.job);
    wait_done(&done, 5);
    ck_assert_int_eq(e->sj.outcome, RNND_STEP_STOPPED);
    ck_assert_uint_eq(rnnd_session_steps(s), 5);
    tjob_free(a);
    tjob_free(b);
    tjob_free(c);
    tjob_free(d);
    tjob_free(e);
    rnnd_session_unref(s);
    rnnd_session_unref(s2);
    teardown(&f);
}
END_TEST

/* ---- split rounds: a big round shares its step with an idle worker ---- */

static const char *const big_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":40,"
    "\"embedding_dim\":24},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":200,\"direction\":\"forward\"},"
    "{\"type\":\"gru\",\"hidden_size\":72,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":40,\"in_dim\":72,\"norm\":\"softmax\"}}";

/* A task that holds its worker until released, so jobs can queue up behind it. */
typedef struct blocker {
    rnnd_task task;
    atomic_int started, release;
} blocker;

static void blocker_run(rnnd_task *t, void *wctx)
{
    (void)wctx;
    blocker *bl = (blocker *)t;
    atomic_fetch_add(&bl->started, 1);
    while (!atomic_load(&bl->release))
        usleep(200);
}

#define SPLIT_SESS 64
#define SPLIT_LEN 12

/* SPLIT_SESS sessions, one request of SPLIT_LEN steps each, all queued before any round runs:
 * every round then holds all of them. OUT receives [SPLIT_SESS][SPLIT_LEN][out_dim]. */
static void run_split(size_t workers, float *out, size_t out_dim, uint64_t *split_rounds,
                      uint64_t *helped)
{
    fixture f;
    setup(&f, big_arch, 64, 0, workers);
    ck_assert_uint_eq(f.out_dim, out_dim);
    blocker bl[2];
    for (size_t i = 0; i < workers; i++) {
        memset(&bl[i], 0, sizeof bl[i]);
        bl[i].task.run = blocker_run;
        ck_assert_int_eq(rnnd_pool_post(f.pool, &bl[i].task), 0);
    }
    for (size_t i = 0; i < workers; i++)
        while (!atomic_load(&bl[i].started))
            usleep(100);
    rnnd_session *s[SPLIT_SESS];
    tjob *j[SPLIT_SESS];
    atomic_int done = 0;
    char err[256];
    unsigned seed = 9;
    for (int k = 0; k < SPLIT_SESS; k++) {
        int32_t toks[SPLIT_LEN];
        for (int i = 0; i < SPLIT_LEN; i++)
            toks[i] = (int32_t)(rand_r(&seed) % f.in_dim);
        ck_assert_int_eq(rnnd_session_create(f.t,
                                             &(rnnd_session_init){.state_floats = f.state_floats},
                                             &s[k], err, sizeof err),
                         0);
        j[k] = tjob_new(&f, toks, NULL, SPLIT_LEN, -1, &done);
        ck_assert_int_eq(rnnd_session_submit(s[k], &j[k]->sj.job), RNND_SESSION_FOUND);
    }
    for (size_t i = 0; i < workers; i++)
        atomic_store(&bl[i].release, 1);
    wait_done(&done, SPLIT_SESS);
    for (int k = 0; k < SPLIT_SESS; k++) {
        ck_assert_int_eq(j[k]->sj.outcome, RNND_STEP_OK);
        memcpy(out + (size_t)k * SPLIT_LEN * out_dim, j[k]->out,
               SPLIT_LEN * out_dim * sizeof(float));
        tjob_free(j[k]);
        rnnd_session_unref(s[k]);
    }
    /* every round held every session */
    ck_assert_uint_eq(rnnd_batcher_hist(f.b, SPLIT_SESS), SPLIT_LEN);
    *split_rounds = rnnd_batcher_split_rounds(f.b);
    *helped = rnnd_batcher_split_helped(f.b);
    teardown(&f);
}

START_TEST(test_split_round_bitwise)
{
    size_t out_dim = 40, n = (size_t)SPLIT_SESS * SPLIT_LEN * out_dim;
    float *one = malloc(n * sizeof(float)), *two = malloc(n * sizeof(float));
    uint64_t rounds1, helped1, rounds2, helped2 = 0, tries = 0;
    run_split(1, one, out_dim, &rounds1, &helped1);
    ck_assert_uint_eq(rounds1, 0); /* one worker: nobody to share with */
    /* two workers: every round is split; the idle one joins as soon as it wakes, which on a
     * loaded machine may take longer than the part it was woken for (a round has only a few
     * parallel parts since cells split by batch rows), so allow many runs for it to help at
     * least once */
    while (helped2 == 0 && tries++ < 20) {
        run_split(2, two, out_dim, &rounds2, &helped2);
        ck_assert_uint_eq(rounds2, SPLIT_LEN);
        ck_assert_msg(!memcmp(one, two, n * sizeof(float)),
                      "a round split across 2 workers differs from 1 worker");
    }
    ck_assert_msg(helped2 > 0, "the second worker never helped in %d runs", (int)tries - 1);
    printf("split rounds: %llu, stage parts run by the helping worker: %llu\n",
           (unsigned long long)rounds2, (unsigned long long)helped2);
    /* and the reference is right: stepping each session alone gives the same bits */
    fixture f;
    setup(&f, big_arch, 64, 0, 1);
    rnnd_work *w = rnnd_work_new(f.net, 1);
    float *st = calloc(f.state_floats, sizeof *st), out[40];
    unsigned seed = 9;
    char err[256];
    for (int k = 0; k < SPLIT_SESS; k++) {
        int32_t toks[SPLIT_LEN];
        for (int i = 0; i < SPLIT_LEN; i++)
            toks[i] = (int32_t)(rand_r(&seed) % f.in_dim);
        memset(st, 0, f.state_floats * sizeof *st);
        for (int i = 0; i < SPLIT_LEN; i++) {
            float *sp[1] = {st};
            ck_assert_int_eq(rnnd_net_step(f.net, w, 1, &toks[i], NULL, sp, out, err, sizeof err),
                             0);
            ck_assert(!memcmp(out, one + ((size_t)k * SPLIT_LEN + i) * out_dim, sizeof out));
        }
    }
    free(st);
    rnnd_work_free(w);
    teardown(&f);
    free(one);
    free(two);
}
END_TEST

/* A round gathering while another worker is busy stops waiting as soon as the batch is full,
 * not at max_batch_wait_us (arrivals below a full batch do not wake it; the one that fills it
 * must). */
START_TEST(test_gather_ends_when_full)
{
    enum { FULL = 4 };
    const long wait_us = 10 * 1000 * 1000;
    fixture f;
    setup(&f, tok_arch, FULL, wait_us, 2);
    blocker bl;
    memset(&bl, 0, sizeof bl);
    bl.task.run = blocker_run;
    ck_assert_int_eq(rnnd_pool_post(f.pool, &bl.task), 0);
    for (int i = 0; i < 5000 && !atomic_load(&bl.started); i++)
        usleep(1000);
    ck_assert(atomic_load(&bl.started)); /* one worker busy: the other's round gathers */
    atomic_int done = 0;
    char err[256];
    rnnd_session *s[FULL];
    tjob *j[FULL];
    int32_t tok = 1;
    double t0 = rnnd_mono_s();
    for (int i = 0; i < FULL; i++) {
        ck_assert_int_eq(rnnd_session_create(f.t,
                                             &(rnnd_session_init){.state_floats = f.state_floats},
                                             &s[i], err, sizeof err),
                         0);
        j[i] = tjob_new(&f, &tok, NULL, 1, -1, &done);
        ck_assert_int_eq(rnnd_session_submit(s[i], &j[i]->sj.job), RNND_SESSION_FOUND);
        usleep(20000); /* the first job's round is waiting before the next arrives */
    }
    for (int i = 0; i < 10000 && atomic_load(&done) < FULL; i++)
        usleep(500);
    double secs = rnnd_mono_s() - t0;
    ck_assert_int_eq(atomic_load(&done), FULL);
    ck_assert_msg(secs < wait_us / 2e6, "the full batch waited %.3f s", secs);
    ck_assert_uint_eq(rnnd_batcher_hist(f.b, FULL), 1); /* one round took all four */
    ck_assert_uint_eq(rnnd_batcher_batches(f.b), 1);
    atomic_store(&bl.release, 1);
    for (int i = 0; i < FULL; i++) {
        ck_assert_int_eq(j[i]->sj.outcome, RNND_STEP_OK);
        tjob_free(j[i]);
        rnnd_session_unref(s[i]);
    }
    teardown(&f);
}
END_TEST

/* rnnd_defer: no stretch open, nothing is held; in one, calls wait for the outermost end and
 * run in order; past RNND_DEFER_MAX the caller is told to call itself. */
static int defer_log[RNND_DEFER_MAX + 8], defer_n;

static void defer_record(void *arg) { defer_log[defer_n++] = (int)(intptr_t)arg; }

START_TEST(test_defer_stretch)
{
    defer_n = 0;
    ck_assert_int_eq(rnnd_defer(defer_record, (void *)1), -1); /* no stretch */
    rnnd_defer_begin();
    ck_assert_int_eq(rnnd_defer(defer_record, (void *)1), 0);
    rnnd_defer_begin(); /* nested */
    ck_assert_int_eq(rnnd_defer(defer_record, (void *)2), 0);
    rnnd_defer_end();
    ck_assert_int_eq(defer_n, 0); /* the outer stretch is still open */
    ck_assert_int_eq(rnnd_defer(defer_record, (void *)3), 0);
    rnnd_defer_end();
    ck_assert_int_eq(defer_n, 3);
    ck_assert_int_eq(defer_log[0], 1);
    ck_assert_int_eq(defer_log[1], 2);
    ck_assert_int_eq(defer_log[2], 3);
    ck_assert_int_eq(rnnd_defer(defer_record, (void *)4), -1); /* closed again */
    defer_n = 0;
    rnnd_defer_begin();
    for (int i = 0; i < RNND_DEFER_MAX; i++)
        ck_assert_int_eq(rnnd_defer(defer_record, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(rnnd_defer(defer_record, (void *)-1), -1); /* full */
    rnnd_defer_end();
    ck_assert_int_eq(defer_n, RNND_DEFER_MAX);
    ck_assert_int_eq(defer_log[RNND_DEFER_MAX - 1], RNND_DEFER_MAX - 1);
}
END_TEST

/* A round's finish callbacks run inside a stretch: what they hold (rnnd_req_complete's
 * resume of a parked connection) runs once every job of the round has finished. */
static atomic_int held_finished, held_ok, held_seen_all;

static void held_wake(void *arg)
{
    int round = (int)(intptr_t)arg;
    if (atomic_load(&held_finished) == round)
        atomic_fetch_add(&held_seen_all, 1);
}

static void held_finish(rnnd_job *job)
{
    tjob *j = (tjob *)job;
    if (rnnd_defer(held_wake, (void *)(intptr_t)4) == 0)
        atomic_fetch_add(&held_ok, 1);
    atomic_fetch_add(&held_finished, 1);
    atomic_fetch_add(j->done, 1);
}

START_TEST(test_round_holds_wakeups)
{
    enum { FULL = 4 };
    fixture f;
    setup(&f, tok_arch, FULL, 10L * 1000 * 1000, 2);
    blocker bl;
    memset(&bl, 0, sizeof bl);
    bl.task.run = blocker_run;
    ck_assert_int_eq(rnnd_pool_post(f.pool, &bl.task), 0);
    for (int i = 0; i < 5000 && !atomic_load(&bl.started); i++)
        usleep(1000);
    ck_assert(atomic_load(&bl.started)); /* one worker busy: the other's round gathers all */
    atomic_store(&held_finished, 0);
    atomic_store(&held_ok, 0);
    atomic_store(&held_seen_all, 0);
    atomic_int done = 0;
    char err[256];
    rnnd_session *s[FULL];
    tjob *j[FULL];
    int32_t tok = 2;
    for (int i = 0; i < FULL; i++) {
        ck_assert_int_eq(rnnd_session_create(f.t,
                                             &(rnnd_session_init){.state_floats = f.state_floats},
                                             &s[i], err, sizeof err),
                         0);
        j[i] = tjob_new(&f, &tok, NULL, 1, -1, &done);
        j[i]->sj.job.finish = held_finish;
        ck_assert_int_eq(rnnd_session_submit(s[i], &j[i]->sj.job), RNND_SESSION_FOUND);
    }
    wait_done(&done, FULL);
    for (int i = 0; i < 2000 && atomic_load(&held_seen_all) < FULL; i++)
        usleep(500);
    ck_assert_uint_eq(rnnd_batcher_hist(f.b, FULL), 1);  /* one round took all four */
    ck_assert_int_eq(atomic_load(&held_ok), FULL);       /* every finish was in a stretch */
    ck_assert_int_eq(atomic_load(&held_seen_all), FULL); /* every wake after all finished */
    atomic_store(&bl.release, 1);
    for (int i = 0; i < FULL; i++) {
        tjob_free(j[i]);
        rnnd_session_unref(s[i]);
    }
    teardown(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("batcher");
    TCase *tc = tcase_create("batcher");
    tcase_add_test(tc, test_concurrent_tokens);
    tcase_add_test(tc, test_concurrent_vectors_wait);
    tcase_add_test(tc, test_concurrent_min_scan);
    tcase_add_test(tc, test_scan_last_only);
    tcase_add_test(tc, test_min_scan_mlp_head);
    tcase_add_test(tc, test_split_rounds_do_not_scan);
    tcase_add_test(tc, test_if_steps_and_stop);
    tcase_add_test(tc, test_split_round_bitwise);
    tcase_add_test(tc, test_gather_ends_when_full);
    tcase_add_test(tc, test_defer_stretch);
    tcase_add_test(tc, test_round_holds_wakeups);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
