/* Cross-session batching (see batcher.h). */
#include "batcher.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rnnd/status.h"

struct scratch;

struct rnnd_batcher {
    const rnnd_net *net;
    size_t workers;
    struct scratch **scratch; /* [workers], each made by its worker on first use */
    void (*hold)(void *), (*release)(void *);
    void *owner;
    rnnd_pool *pool;
    size_t max_batch;
    long wait_us;
    int tokens; /* token input (else vectors) */
    size_t in_dim, out_dim;

    pthread_mutex_t mu;  /* guards the queue and the flags */
    pthread_cond_t more; /* a job entered the ready queue */
    rnnd_step_job *head, *tail;
    size_t n_ready;
    int scheduled; /* a round is queued on the pool or gathering */
    int stopped;
    atomic_int halt; /* set by rnnd_batcher_stop(): a running round gives up */
    rnnd_task task;  /* the one queued round (scheduled guards it) */

    pthread_cond_t infer_more; /* an infer job was queued */
    rnnd_infer_job *ihead, *itail;
    size_t infer_steps; /* queued steps */
    size_t infer_max_steps;
    int infer_scheduled;
    rnnd_task infer_task;

    size_t split_min;  /* rounds this big split their step; 0 never */
    int scannable;     /* rnnd_net_scannable(net) */
    size_t scan_min;   /* jobs with this many steps left scan; 0 never */
    size_t scan_round; /* most steps scanned per round */
    size_t state_floats;
    atomic_uint_least64_t scan_steps, scan_rounds;
    atomic_uint_least64_t split_rounds, split_helped;
    atomic_uint_least64_t *hist; /* [max_batch + 1] */
    atomic_uint_least64_t batches, steps;
    atomic_uint_least64_t infer_hist[RNND_INFER_HIST_BUCKETS];
    atomic_uint_least64_t infer_rounds, infer_requests;
};

struct scratch {
    rnnd_work *work;
    int32_t *tokens;
    float *vectors, *out;
    float **states;
    rnnd_step_job **jobs;
    /* scanning (scannable nets only): per scanned job its chunk, input and output rows,
     * state and final state (here, so a failed call changes no session) */
    rnnd_step_job **scan;
    size_t *lens;
    const int32_t **tp;
    const float **vp, **init;
    float **op, **fp;
    float *finals; /* [max_batch, state_floats] */
    float *last;   /* [scan_round, out_dim]: last_only jobs' rows */
};

static void round_run(rnnd_task *task, void *wctx);
static void round_cancel(rnnd_task *task);
static void infer_round_run(rnnd_task *task, void *wctx);
static void infer_round_cancel(rnnd_task *task);

int rnnd_batcher_new(const rnnd_net *net, size_t workers, rnnd_pool *pool, size_t max_batch,
                     long max_batch_wait_us, rnnd_batcher **out)
{
    *out = NULL;
    rnnd_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return RNND_ERR_NOMEM;
    b->hist = calloc(max_batch + 1, sizeof *b->hist);
    b->scratch = calloc(workers ? workers : 1, sizeof *b->scratch);
    if (!b->hist || !b->scratch) {
        free(b->hist);
        free(b->scratch);
        free(b);
        return RNND_ERR_NOMEM;
    }
    b->workers = workers;
    const rnnd_model_spec *spec = rnnd_model_get_spec(rnnd_net_model(net));
    b->net = net;
    b->pool = pool;
    b->max_batch = max_batch;
    b->wait_us = max_batch_wait_us;
    b->tokens = spec->input_kind == RNND_INPUT_TOKENS;
    b->in_dim = (size_t)spec->input_dim;
    b->out_dim = (size_t)rnnd_net_output_dim(net);
    b->task.run = round_run;
    b->task.cancel = round_cancel;
    b->infer_task.run = infer_round_run;
    b->infer_task.cancel = infer_round_cancel;
    atomic_init(&b->halt, 0);
    b->infer_max_steps = 65536;
    b->split_min = RNND_BATCHER_SPLIT_MIN;
    b->scannable = rnnd_net_scannable(net);
    b->scan_min = RNND_BATCHER_SCAN_MIN;
    /* the round's whole-sequence scratch stays within RNND_BATCHER_SCAN_BYTES (a very wide
     * model scans fewer steps per round, or none) */
    size_t row = rnnd_net_forward_bytes(net, 1, 1, 1);
    b->scan_round = row && row != SIZE_MAX ? RNND_BATCHER_SCAN_BYTES / row : 0;
    if (b->scan_round > RNND_BATCHER_SCAN_ROUND)
        b->scan_round = RNND_BATCHER_SCAN_ROUND;
    b->state_floats = rnnd_net_state_floats(net);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->more, &ca);
    pthread_cond_init(&b->infer_more, &ca);
    pthread_condattr_destroy(&ca);
    *out = b;
    return RNND_OK;
}

void rnnd_batcher_set_pool(rnnd_batcher *b, rnnd_pool *pool) { b->pool = pool; }

void rnnd_batcher_set_owner(rnnd_batcher *b, void (*hold)(void *), void (*release)(void *),
                            void *owner)
{
    b->hold = hold;
    b->release = release;
    b->owner = owner;
}

static void scratch_free(struct scratch *s);

void rnnd_batcher_free(rnnd_batcher *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->workers; i++)
        scratch_free(b->scratch[i]);
    free(b->scratch);
    pthread_cond_destroy(&b->more);
    pthread_cond_destroy(&b->infer_more);
    pthread_mutex_destroy(&b->mu);
    free(b->hist);
    free(b);
}

static void scratch_free(struct scratch *s)
{
    if (!s)
        return;
    rnnd_work_free(s->work);
    free(s->tokens);
    free(s->vectors);
    free(s->out);
    free(s->states);
    free(s->jobs);
    free(s->scan);
    free(s->lens);
    free(s->tp);
    free(s->vp);
    free(s->init);
    free(s->op);
    free(s->fp);
    free(s->finals);
    free(s->last);
    free(s);
}

static struct scratch *scratch_new(const rnnd_batcher *b)
{
    struct scratch *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    size_t B = b->max_batch;
    s->work = rnnd_work_new(b->net, B);
    s->tokens = calloc(B, sizeof *s->tokens);
    s->vectors = calloc(B * (b->tokens ? 1 : b->in_dim), sizeof *s->vectors);
    s->out = calloc(B * b->out_dim, sizeof *s->out);
    s->states = calloc(B, sizeof *s->states);
    s->jobs = calloc(B, sizeof *s->jobs);
    if (!s->work || !s->tokens || !s->vectors || !s->out || !s->states || !s->jobs) {
        scratch_free(s);
        return NULL;
    }
    if (b->scannable) {
        s->scan = calloc(B, sizeof *s->scan);
        s->lens = calloc(B, sizeof *s->lens);
        s->tp = calloc(B, sizeof *s->tp);
        s->vp = calloc(B, sizeof *s->vp);
        s->init = calloc(B, sizeof *s->init);
        s->op = calloc(B, sizeof *s->op);
        s->fp = calloc(B, sizeof *s->fp);
        s->finals = calloc(B * (b->state_floats ? b->state_floats : 1), sizeof *s->finals);
        s->last = calloc((b->scan_round ? b->scan_round : 1) * b->out_dim, sizeof *s->last);
        if (!s->scan || !s->lens || !s->tp || !s->vp || !s->init || !s->op || !s->fp ||
            !s->finals || !s->last) {
            scratch_free(s);
            return NULL;
        }
    }
    return s;
}

size_t rnnd_batcher_max_batch(const rnnd_batcher *b) { return b->max_batch; }

void rnnd_batcher_queued(rnnd_batcher *b, size_t *steps, size_t *infers)
{
    pthread_mutex_lock(&b->mu);
    *steps = b->n_ready;
    size_t n = 0;
    for (const rnnd_infer_job *j = b->ihead; j; j = j->next)
        n++;
    *infers = n;
    pthread_mutex_unlock(&b->mu);
}
uint64_t rnnd_batcher_batches(const rnnd_batcher *b) { return atomic_load(&b->batches); }
uint64_t rnnd_batcher_steps(const rnnd_batcher *b) { return atomic_load(&b->steps); }

uint64_t rnnd_batcher_infer_rounds(const rnnd_batcher *b) { return atomic_load(&b->infer_rounds); }

uint64_t rnnd_batcher_infer_requests(const rnnd_batcher *b)
{
    return atomic_load(&b->infer_requests);
}

uint64_t rnnd_batcher_infer_hist(const rnnd_batcher *b, size_t bucket)
{
    return bucket < RNND_INFER_HIST_BUCKETS ? atomic_load(&b->infer_hist[bucket]) : 0;
}

void rnnd_batcher_set_split_min(rnnd_batcher *b, size_t min) { b->split_min = min; }
void rnnd_batcher_set_scan_min(rnnd_batcher *b, size_t min) { b->scan_min = min; }

uint64_t rnnd_batcher_scan_steps(const rnnd_batcher *b) { return atomic_load(&b->scan_steps); }
uint64_t rnnd_batcher_scan_rounds(const rnnd_batcher *b) { return atomic_load(&b->scan_rounds); }

uint64_t rnnd_batcher_split_rounds(const rnnd_batcher *b) { return atomic_load(&b->split_rounds); }

uint64_t rnnd_batcher_split_helped(const rnnd_batcher *b) { return atomic_load(&b->split_helped); }

void rnnd_batcher_set_infer_max_steps(rnnd_batcher *b, size_t max_steps)
{
    b->infer_max_steps = max_steps ? max_steps : 1;
}

uint64_t rnnd_batcher_hist(const rnnd_batcher *b, size_t size)
{
    return size <= b->max_batch ? atomic_load(&b->hist[size]) : 0;
}

/* Finish each job of the list (linked by rnext) with OUTCOME. No lock held. */
static void fail_list(rnnd_step_job *list, int outcome)
{
    while (list) {
        rnnd_step_job *next = list->rnext;
        list->rnext = NULL;
        list->outcome = outcome;
        list->steps = rnnd_session_steps(list->job.session);
        rnnd_session_job_done(&list->job);
        list = next;
    }
}

/* Schedule a round if work is waiting and none is scheduled. Called with b->mu held; returns
 * the ready jobs to fail when the pool refuses (it stopped). */
static rnnd_step_job *schedule_locked(rnnd_batcher *b)
{
    if (!b->n_ready || b->scheduled)
        return NULL;
    if (b->pool && rnnd_pool_post(b->pool, &b->task) == RNND_OK) {
        b->scheduled = 1;
        return NULL;
    }
    b->stopped = 1;
    rnnd_step_job *list = b->head;
    b->head = b->tail = NULL;
    b->n_ready = 0;
    return list;
}

static void append_locked(rnnd_batcher *b, rnnd_step_job *j)
{
    j->rnext = NULL;
    if (b->tail)
        b->tail->rnext = j;
    else
        b->head = j;
    b->tail = j;
    b->n_ready++;
}

/* The job reached the head of its session's queue. */
static int step_start(rnnd_job *job)
{
    rnnd_step_job *j = (rnnd_step_job *)job;
    rnnd_batcher *b = j->batcher;
    uint64_t steps = rnnd_session_steps(job->session);
    if (j->if_steps >= 0 && (uint64_t)j->if_steps != steps) {
        j->outcome = RNND_STEP_CONFLICT;
        j->steps = steps;
        return RNND_JOB_DONE;
    }
    if (steps > (uint64_t)INT64_MAX - j->n_steps) { /* a count past 2^63-1 fits no API */
        j->outcome = RNND_STEP_FAILED;
        j->status = RNND_ERR_CONFLICT;
        snprintf(j->err, sizeof j->err,
                 "the session has %" PRIu64 " steps; %zu more would pass %" PRId64
                 ", the most a session counts; nothing was run",
                 steps, j->n_steps, INT64_MAX);
        j->steps = steps;
        return RNND_JOB_DONE;
    }
    pthread_mutex_lock(&b->mu);
    if (b->stopped) {
        pthread_mutex_unlock(&b->mu);
        j->outcome = RNND_STEP_STOPPED;
        j->steps = steps;
        return RNND_JOB_DONE;
    }
    append_locked(b, j);
    /* a gathering round waits only for a full batch: waking it for less is a wasted
     * context switch per request */
    if (b->n_ready >= b->max_batch)
        pthread_cond_signal(&b->more);
    rnnd_step_job *refused = schedule_locked(b);
    pthread_mutex_unlock(&b->mu);
    /* our own job may be among the refused: it is then finished through the session */
    fail_list(refused, RNND_STEP_STOPPED);
    return RNND_JOB_PENDING;
}

void rnnd_step_job_init(rnnd_step_job *job, rnnd_batcher *b)
{
    job->batcher = b;
    job->job.start = step_start;
    job->job.not_a_use = 0;
    job->outcome = RNND_STEP_OK;
    job->status = RNND_OK;
    job->err[0] = '\0';
    job->done = 0;
    job->steps = 0;
    job->first_nonfinite = -1;
    job->after_step = NULL;
    job->rnext = NULL;
}

static int row_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* This worker's scratch, made on its first round here. NULL when out of memory. */
static struct scratch *my_scratch(rnnd_batcher *b, void *wctx)
{
    size_t w = *(const size_t *)wctx;
    if (w >= b->workers)
        return NULL;
    if (!b->scratch[w])
        b->scratch[w] = scratch_new(b);
    return b->scratch[w];
}

static void round_body(rnnd_batcher *b, struct scratch *s);

/* rnnd_parallel over the pool: the calling worker and whichever workers are idle. */
typedef struct pool_par {
    rnnd_pool *pool;
    size_t helped;
} pool_par;

static void pool_par_run(void *ctx, void (*fn)(void *arg, size_t i), void *arg, size_t n)
{
    pool_par *pp = ctx;
    pp->helped += rnnd_pool_parallel(pp->pool, n - 1, fn, arg, n);
}

static void round_run(rnnd_task *task, void *wctx)
{
    rnnd_batcher *b = (rnnd_batcher *)((char *)task - offsetof(rnnd_batcher, task));
    /* the queued jobs keep the owner alive until here; the hold keeps it past their end */
    void (*release)(void *) = b->release;
    void *owner = b->owner;
    if (b->hold)
        b->hold(owner);
    round_body(b, my_scratch(b, wctx));
    if (release)
        release(owner); /* may free B: nothing after this */
}

/* Move the round's jobs that scan this round to the end of S->jobs (both parts keep their
 * order), each chunk in S->lens; returns how many step. */
static size_t take_scans(rnnd_batcher *b, struct scratch *s, size_t k)
{
    if (!b->scannable || !b->scan_min)
        return k;
    size_t budget = b->scan_round, ks = 0, n_scan = 0;
    for (size_t i = 0; i < k; i++) {
        rnnd_step_job *j = s->jobs[i];
        size_t left = j->n_steps - j->done;
        size_t n = left < RNND_BATCHER_SCAN_CHUNK ? left : RNND_BATCHER_SCAN_CHUNK;
        n = n < budget ? n : budget;
        if (j->after_step || left < b->scan_min || n < b->scan_min) {
            s->jobs[ks++] = j;
            continue;
        }
        s->scan[n_scan] = j;
        s->lens[n_scan++] = n;
        budget -= n;
    }
    memcpy(s->jobs + ks, s->scan, n_scan * sizeof *s->jobs);
    return ks;
}

/* Jobs [ks, k) of S: their chunks as whole sequences, one call. Their sessions' states are
 * not touched (the final states go to S->finals; scan_done() stores them). */
static int run_scans(rnnd_batcher *b, struct scratch *s, size_t ks, size_t k, char *err,
                     size_t errlen)
{
    size_t n = k - ks, D = b->in_dim, O = b->out_dim, last = 0, steps = 0;
    for (size_t i = 0; i < n; i++) {
        rnnd_step_job *j = s->jobs[ks + i];
        s->tp[i] = b->tokens ? j->tokens + j->done : NULL;
        s->vp[i] = b->tokens ? NULL : j->vectors + j->done * D;
        s->init[i] = rnnd_session_state(j->job.session);
        s->fp[i] = s->finals + i * b->state_floats;
        if (j->last_only) {
            s->op[i] = s->last + last * O;
            last += s->lens[i];
        } else {
            s->op[i] = j->out + j->done * O;
        }
        steps += s->lens[i];
    }
    rnnd_seq_batch seqs = {.B = n,
                           .lens = s->lens,
                           .tokens = s->tp,
                           .vectors = s->vp,
                           .init = s->init,
                           .outputs = s->op,
                           .final = s->fp};
    int rc = rnnd_net_forward(b->net, &seqs, err, errlen);
    if (!rc) {
        atomic_fetch_add(&b->scan_rounds, 1);
        atomic_fetch_add(&b->scan_steps, steps);
        atomic_fetch_add(&b->steps, steps);
    }
    return rc;
}

/* Scanned job J (slot I of run_scans) ran its chunk: its state, outputs and counts. */
static void scan_done(rnnd_batcher *b, struct scratch *s, rnnd_step_job *j, size_t i)
{
    size_t n = s->lens[i], O = b->out_dim;
    memcpy(rnnd_session_state(j->job.session), s->fp[i], b->state_floats * sizeof(float));
    if (j->last_only)
        memcpy(j->out, s->op[i] + (n - 1) * O, O * sizeof(float));
    for (size_t t = 0; j->first_nonfinite < 0 && t < n; t++)
        if (!row_finite(s->op[i] + t * O, O))
            j->first_nonfinite = (long)(j->done + t);
    j->done += n;
    rnnd_session_add_steps(j->job.session, n);
}

static void round_body(rnnd_batcher *b, struct scratch *s)
{
    size_t D = b->in_dim, O = b->out_dim;
    if (!s) {
        /* no memory for this worker's scratch: fail what is ready rather than spin */
        pthread_mutex_lock(&b->mu);
        rnnd_step_job *list = b->head;
        b->head = b->tail = NULL;
        b->n_ready = 0;
        b->scheduled = 0;
        pthread_mutex_unlock(&b->mu);
        for (rnnd_step_job *j = list; j; j = j->rnext) {
            j->status = RNND_ERR_NOMEM;
            snprintf(j->err, sizeof j->err, "out of memory for a worker's scratch");
        }
        fail_list(list, RNND_STEP_FAILED);
        return;
    }

    pthread_mutex_lock(&b->mu);
    /* Fill the batch a little, but only while others compute: their sessions come back soon.
     * With every other worker idle, waiting would only add latency. */
    if (b->n_ready < b->max_batch && b->wait_us > 0 && !b->stopped && b->pool &&
        rnnd_pool_busy(b->pool) > 1) {
        struct timespec until;
        rnnd_mono_deadline(&until, b->wait_us);
        while (b->n_ready < b->max_batch && !b->stopped &&
               pthread_cond_timedwait(&b->more, &b->mu, &until) == 0)
            ;
    }
    size_t k = 0;
    while (b->head && k < b->max_batch) {
        rnnd_step_job *j = b->head;
        b->head = j->rnext;
        j->rnext = NULL;
        s->jobs[k++] = j;
    }
    if (!b->head)
        b->tail = NULL;
    b->n_ready -= k;
    b->scheduled = 0;
    rnnd_step_job *refused = schedule_locked(b); /* more than one batch waiting */
    pthread_mutex_unlock(&b->mu);
    fail_list(refused, RNND_STEP_STOPPED);
    if (!k)
        return;

    /* a big round: its stages are shared with idle workers (parts are planned for the whole
     * pool, capped; the parts of absent helpers run here) */
    size_t threads = b->pool ? rnnd_pool_size(b->pool) : 1;
    if (threads > RNND_POOL_MAX_HELPERS + 1)
        threads = RNND_POOL_MAX_HELPERS + 1;
    /* A round that splits steps as many sessions as it can share among workers: its product
     * reads each weight once for all of them, already near the kernels' full speed from 4
     * rows on (docs/kernels.md), while a scan would run on this worker alone. */
    int splits = b->split_min > 0 && k >= b->split_min && threads > 1;
    size_t ks = splits ? k : take_scans(b, s, k); /* jobs [ks, k) scan, [0, ks) step */
    for (size_t i = 0; i < ks; i++) {
        rnnd_step_job *j = s->jobs[i];
        if (b->tokens)
            s->tokens[i] = j->tokens[j->done];
        else
            memcpy(s->vectors + i * D, j->vectors + j->done * D, D * sizeof(float));
        s->states[i] = rnnd_session_state(j->job.session);
    }
    char err[256] = "";
    pool_par pp = {b->pool, 0};
    rnnd_parallel par = {pool_par_run, &pp, threads, NULL};
    int split = b->split_min > 0 && ks >= b->split_min && threads > 1;
    int rc = RNND_OK;
    if (ks) {
        rc = rnnd_net_step_par(b->net, s->work, ks, b->tokens ? s->tokens : NULL,
                               b->tokens ? NULL : s->vectors, s->states, s->out,
                               split ? &par : NULL, err, sizeof err);
        if (split) {
            atomic_fetch_add(&b->split_rounds, 1);
            atomic_fetch_add(&b->split_helped, pp.helped);
        }
        atomic_fetch_add(&b->hist[ks], 1);
        atomic_fetch_add(&b->batches, 1);
        if (!rc)
            atomic_fetch_add(&b->steps, ks);
    }
    char scan_err[256] = "";
    int scan_rc = k > ks ? run_scans(b, s, ks, k, scan_err, sizeof scan_err) : RNND_OK;

    rnnd_step_job *again = NULL, **again_tail = &again, *finished = NULL;
    for (size_t i = 0; i < k; i++) {
        rnnd_step_job *j = s->jobs[i];
        if (i >= ks) {
            if (scan_rc) {
                j->outcome = RNND_STEP_FAILED;
                j->status = scan_rc;
                snprintf(j->err, sizeof j->err, "%s", scan_err);
            } else {
                scan_done(b, s, j, i - ks);
            }
        } else if (rc) {
            j->outcome = RNND_STEP_FAILED;
            j->status = rc;
            snprintf(j->err, sizeof j->err, "%s", err);
        } else {
            const float *row = s->out + i * O;
            memcpy(j->out + (j->last_only ? 0 : j->done * O), row, O * sizeof(float));
            if (j->first_nonfinite < 0 && !row_finite(row, O))
                j->first_nonfinite = (long)j->done;
            j->done++;
            rnnd_session_add_steps(j->job.session, 1);
            /* a generation stops at the most a session counts (step_start's bound) */
            if (j->after_step && rnnd_session_steps(j->job.session) < (uint64_t)INT64_MAX)
                j->after_step(j, row);
            else if (j->after_step)
                j->n_steps = j->done;
        }
        if ((i < ks ? rc : scan_rc) || j->done == j->n_steps) {
            j->rnext = finished;
            finished = j;
        } else {
            *again_tail = j;
            again_tail = &j->rnext;
        }
    }
    if (again) {
        pthread_mutex_lock(&b->mu);
        if (b->stopped) {
            refused = again;
        } else {
            for (rnnd_step_job *j = again, *next; j; j = next) {
                next = j->rnext;
                append_locked(b, j);
            }
            if (b->n_ready >= b->max_batch)
                pthread_cond_signal(&b->more);
            refused = schedule_locked(b);
        }
        pthread_mutex_unlock(&b->mu);
        fail_list(refused, RNND_STEP_STOPPED);
    }
    /* last: finishing a job may start the session's next one, which may enqueue here. The
     * request threads are woken once the round's replies are all written (rnnd_defer). */
    rnnd_defer_begin();
    while (finished) {
        rnnd_step_job *next = finished->rnext;
        finished->rnext = NULL;
        finished->steps = rnnd_session_steps(finished->job.session);
        rnnd_session_job_done(&finished->job);
        finished = next;
    }
    rnnd_defer_end();
}

/* The whole infer queue, emptied. Called with b->mu held. */
static rnnd_infer_job *take_infer_locked(rnnd_batcher *b)
{
    rnnd_infer_job *list = b->ihead;
    b->ihead = b->itail = NULL;
    b->infer_steps = 0;
    return list;
}

/* Finish each infer job of the list as not run. No lock held. */
static void stop_infer_list(rnnd_infer_job *list)
{
    while (list) {
        rnnd_infer_job *next = list->next;
        list->next = NULL;
        list->stopped = 1;
        list->finish(list, 0);
        list = next;
    }
}

/* The pool stopped with our round queued: nobody will run it. */
static void round_cancel(rnnd_task *task)
{
    rnnd_batcher *b = (rnnd_batcher *)((char *)task - offsetof(rnnd_batcher, task));
    pthread_mutex_lock(&b->mu);
    b->scheduled = 0;
    b->stopped = 1;
    rnnd_step_job *list = b->head;
    b->head = b->tail = NULL;
    b->n_ready = 0;
    rnnd_infer_job *ilist = take_infer_locked(b);
    pthread_mutex_unlock(&b->mu);
    fail_list(list, RNND_STEP_STOPPED);
    stop_infer_list(ilist);
}

/* Schedule an infer round if requests wait and none is scheduled. Called with b->mu held;
 * returns the queue to finish as stopped when the pool refuses. */
static rnnd_infer_job *schedule_infer_locked(rnnd_batcher *b)
{
    if (!b->ihead || b->infer_scheduled)
        return NULL;
    if (b->pool && rnnd_pool_post(b->pool, &b->infer_task) == RNND_OK) {
        b->infer_scheduled = 1;
        return NULL;
    }
    b->stopped = 1;
    return take_infer_locked(b);
}

int rnnd_batcher_infer(rnnd_batcher *b, rnnd_infer_job *job)
{
    job->stopped = 0;
    job->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->stopped) {
        pthread_mutex_unlock(&b->mu);
        return RNND_ERR_UNSUPPORTED;
    }
    if (b->itail)
        b->itail->next = job;
    else
        b->ihead = job;
    b->itail = job;
    b->infer_steps += rnnd_infer_req_steps(job->req);
    if (b->infer_steps >= b->infer_max_steps) /* as for steps: only a full round wakes */
        pthread_cond_signal(&b->infer_more);
    rnnd_infer_job *refused = schedule_infer_locked(b);
    pthread_mutex_unlock(&b->mu);
    stop_infer_list(refused); /* may include JOB: it was accepted, then stopped */
    return RNND_OK;
}

static size_t infer_bucket(size_t k)
{
    size_t i = 0;
    while (i + 1 < RNND_INFER_HIST_BUCKETS && ((size_t)1 << i) < k)
        i++;
    return i;
}

static void infer_round_body(rnnd_batcher *b);

static void infer_round_run(rnnd_task *task, void *wctx)
{
    (void)wctx;
    rnnd_batcher *b = (rnnd_batcher *)((char *)task - offsetof(rnnd_batcher, infer_task));
    void (*release)(void *) = b->release;
    void *owner = b->owner;
    if (b->hold)
        b->hold(owner);
    infer_round_body(b);
    if (release)
        release(owner); /* may free B: nothing after this */
}

static void infer_round_body(rnnd_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    /* As for steps: fill a little, but only while other workers compute. */
    if (b->infer_steps < b->infer_max_steps && b->wait_us > 0 && !b->stopped && b->pool &&
        rnnd_pool_busy(b->pool) > 1) {
        struct timespec until;
        rnnd_mono_deadline(&until, b->wait_us);
        while (b->infer_steps < b->infer_max_steps && !b->stopped &&
               pthread_cond_timedwait(&b->infer_more, &b->mu, &until) == 0)
            ;
    }
    /* Take from the head while the steps fit; the first job always goes. */
    rnnd_infer_job *list = NULL, **tail = &list;
    size_t k = 0, steps = 0;
    while (b->ihead) {
        size_t n = rnnd_infer_req_steps(b->ihead->req);
        if (k && n > b->infer_max_steps - steps)
            break;
        rnnd_infer_job *j = b->ihead;
        b->ihead = j->next;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
        steps += n > b->infer_max_steps ? b->infer_max_steps : n;
        b->infer_steps -= n;
        k++;
    }
    if (!b->ihead)
        b->itail = NULL;
    b->infer_scheduled = 0;
    rnnd_infer_job *refused = schedule_infer_locked(b); /* more than one round waiting */
    pthread_mutex_unlock(&b->mu);
    stop_infer_list(refused);
    if (!k)
        return;

    /* Each request's outcome is kept in it; the returned first failure is not needed. */
    char err[256];
    size_t per_call = k;
    rnnd_parallel par = {.stop = &b->halt}; /* one thread, but interruptible */
    rnnd_infer_req **reqs = malloc(k * sizeof *reqs);
    if (reqs) {
        size_t i = 0;
        for (rnnd_infer_job *j = list; j; j = j->next)
            reqs[i++] = j->req;
        rnnd_infer_run_many_par(b->net, reqs, k, &par, err, sizeof err);
        free(reqs);
    } else {
        /* no room for the table: one by one, which gives the same results */
        per_call = 1;
        for (rnnd_infer_job *j = list; j; j = j->next)
            rnnd_infer_run_many_par(b->net, &j->req, 1, &par, err, sizeof err);
    }
    atomic_fetch_add(&b->infer_hist[infer_bucket(per_call)], k / per_call);
    atomic_fetch_add(&b->infer_rounds, k / per_call);
    atomic_fetch_add(&b->infer_requests, k);
    while (list) {
        rnnd_infer_job *next = list->next;
        list->next = NULL;
        list->finish(list, per_call);
        list = next;
    }
}

static void infer_round_cancel(rnnd_task *task)
{
    rnnd_batcher *b = (rnnd_batcher *)((char *)task - offsetof(rnnd_batcher, infer_task));
    pthread_mutex_lock(&b->mu);
    b->infer_scheduled = 0;
    b->stopped = 1;
    rnnd_infer_job *list = take_infer_locked(b);
    pthread_mutex_unlock(&b->mu);
    stop_infer_list(list);
}

void rnnd_batcher_stop(rnnd_batcher *b)
{
    atomic_store(&b->halt, 1);
    pthread_mutex_lock(&b->mu);
    b->stopped = 1;
    rnnd_step_job *list = b->head;
    b->head = b->tail = NULL;
    b->n_ready = 0;
    rnnd_infer_job *ilist = take_infer_locked(b);
    pthread_cond_broadcast(&b->more);
    pthread_cond_broadcast(&b->infer_more);
    pthread_mutex_unlock(&b->mu);
    fail_list(list, RNND_STEP_STOPPED);
    stop_infer_list(ilist);
}
