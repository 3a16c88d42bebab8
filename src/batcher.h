/* Cross-session batching for one model: the pending steps of many sessions run together as
 * one rnnd_net_step() call on a worker.
 *
 * A step job (a request of n steps on one session) enters the batcher's ready queue when it
 * reaches the head of its session's queue, so a session is in the ready queue at most once and
 * its requests run in arrival order. A batch round takes up to max_batch jobs, advances each by
 * ONE step, and puts the unfinished ones back at the tail: a long request shares the workers
 * with short ones, and since rnnd_net_step() is batch- and chunk-invariant, how requests are
 * batched or split never changes a result.
 *
 * A worker that finds fewer than max_batch jobs waits up to max_batch_wait_us for more, but
 * only while other workers are busy (their sessions are about to come back); with the others
 * idle it runs at once.
 *
 * Whole-sequence infer requests of the model queue here too (rnnd_batcher_infer()): an infer
 * round takes every waiting request up to max_infer_batch_steps steps in all (at least one)
 * and runs them as one rnnd_infer_run_many() call, which is batch-invariant as well. It waits
 * for more under the same rule as a step round (max_batch_wait_us, only while others compute).
 *
 * Lock order: the batcher's mutex, then the pool's (rnnd_pool_post and rnnd_pool_busy are
 * called with it held); a session's job callbacks run with no batcher lock held.
 *
 * Worker scratch: the pool's worker context must point to the worker's index (a size_t,
 * below the WORKERS given at creation); the batcher keeps one scratch block per worker (one
 * rnnd_work sized max_batch, input and output rows), made on that worker's first round of
 * this batcher, so later rounds never allocate and models loaded after start-up need no
 * change to the workers.
 *
 * Splitting a round: a step round of at least split_min sessions (default
 * RNND_BATCHER_SPLIT_MIN) runs its step with rnnd_net_step_par() on the pool
 * (rnnd_pool_parallel): the worker that took the round and any workers idle at that moment
 * share each stage of the step. Below that a step is too short to pay for waking another
 * worker. Results are bitwise the same either way (rnnd_net_step_par's contract).
 *
 * Scanning long requests: when the net is scannable (rnnd_net_scannable(): every layer a
 * minGRU or minLSTM), a job with at least scan_min steps left (default RNND_BATCHER_SCAN_MIN)
 * and no after_step hook advances by a chunk of up to RNND_BATCHER_SCAN_CHUNK steps in one
 * round: the round's long jobs run together as whole sequences through rnnd_net_forward()
 * (one product per layer over all their steps, then the scan), from their sessions' states,
 * on the round's worker alone; the round's other jobs step as above. A round big enough to
 * split (above) does not scan: it shares its steps among workers instead. At most
 * RNND_BATCHER_SCAN_ROUND steps are scanned per round (fewer for very wide models:
 * RNND_BATCHER_SCAN_BYTES), which bounds the round's time and scratch; a long job that does
 * not fit steps once instead. rnnd_net_forward() equals stepping bit for bit, so this
 * changes no result either, only the speed.
 *
 * Owner: a batcher belongs to a model version that may be retired by a reload while rounds
 * run; rnnd_batcher_set_owner() gives it hold/release functions it calls around each round,
 * so the owner (and the batcher with it) is never freed under a running round. */
#ifndef RNND_BATCHER_H
#define RNND_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "rnnd/infer.h"
#include "rnnd/rnn.h"
#include "session.h"

typedef struct rnnd_batcher rnnd_batcher;
typedef struct rnnd_step_job rnnd_step_job;

enum rnnd_step_outcome {
    RNND_STEP_OK = 0,
    RNND_STEP_CONFLICT, /* if_steps did not match; nothing ran */
    RNND_STEP_STOPPED,  /* the daemon is stopping; nothing (more) ran */
    RNND_STEP_FAILED,   /* the core refused (status, err); this round changed nothing */
};

struct rnnd_step_job {
    rnnd_job job; /* first member; job.finish is the caller's, job.start is ours */
    rnnd_batcher *batcher;
    size_t n_steps;        /* >= 1 */
    const int32_t *tokens; /* n_steps ids (token models), already range-checked */
    const float *vectors;  /* n_steps rows of input_dim (vector models) */
    int last_only;         /* keep only the last step's output */
    float *out;            /* n_steps or 1 rows of output_dim */
    int64_t if_steps;      /* < 0: no check */
    /* Optional, for jobs that choose their next input from an output (generation): called on
     * the worker after each step (done already counts it, the session's step count too) with
     * the step's output row. It may append inputs (tokens[n_steps++] = id; the buffer is the
     * caller's) or end the job early (n_steps = done). */
    void (*after_step)(rnnd_step_job *j, const float *row);

    /* results, valid in job.finish */
    int outcome; /* enum rnnd_step_outcome */
    int status;  /* the core's status for RNND_STEP_FAILED */
    char err[256];
    size_t done;          /* steps applied */
    uint64_t steps;       /* the session's step count after (or, on conflict, at) the job */
    long first_nonfinite; /* index of the first step with a NaN/Inf output, or -1 */

    rnnd_step_job *rnext; /* ready queue (batcher-private) */
};

typedef struct rnnd_infer_job rnnd_infer_job;

struct rnnd_infer_job {
    rnnd_infer_req *req; /* parsed for the batcher's net; its outcome is in it */
    /* Called once with the request run (or, with STOPPED set, not run because the daemon is
     * stopping), on a worker or on the stopping thread. No batcher lock held. */
    void (*finish)(rnnd_infer_job *job, size_t batch_requests);
    int stopped;
    rnnd_infer_job *next; /* the infer queue (batcher-private) */
};

/* One batcher per model version, for a pool of WORKERS workers (POOL may come later). */
int rnnd_batcher_new(const rnnd_net *net, size_t workers, rnnd_pool *pool, size_t max_batch,
                     long max_batch_wait_us, rnnd_batcher **out);
/* Nothing may be queued or running (its owner's last reference is gone, or the pool
 * stopped). NULL is a no-op. */
void rnnd_batcher_free(rnnd_batcher *b);

void rnnd_batcher_set_pool(rnnd_batcher *b, rnnd_pool *pool);
void rnnd_batcher_set_owner(rnnd_batcher *b, void (*hold)(void *), void (*release)(void *),
                            void *owner);

#define RNND_BATCHER_SPLIT_MIN 16

/* Rounds of at least MIN sessions split their step across idle workers (0: never). Before the
 * pool runs. */
void rnnd_batcher_set_split_min(rnnd_batcher *b, size_t min);
/* Step rounds that were split; stage parts that ran on a helping worker. */
uint64_t rnnd_batcher_split_rounds(const rnnd_batcher *b);
uint64_t rnnd_batcher_split_helped(const rnnd_batcher *b);

/* Scanning long requests (above). 8 steps: below that the product reuses each weight row
 * too little to beat stepping with the other sessions of the round. 256: a chunk keeps the
 * product near its speed on whole sequences (64 rows per pass over the weights). */
#define RNND_BATCHER_SCAN_MIN 8
#define RNND_BATCHER_SCAN_CHUNK 256
#define RNND_BATCHER_SCAN_ROUND 1024
/* ... and fewer when the whole-sequence scratch of that many (rnnd_net_forward_bytes) would
 * pass this: 16 MiB at H = I = 1024 (mingru) for 1024 steps. */
#define RNND_BATCHER_SCAN_BYTES ((size_t)64 << 20)

/* Jobs with at least MIN steps left are scanned on scannable nets (0: never). Before the pool
 * runs. */
void rnnd_batcher_set_scan_min(rnnd_batcher *b, size_t min);
/* Session steps computed by scanning (also counted in rnnd_batcher_steps()), and the rounds
 * that scanned. */
uint64_t rnnd_batcher_scan_steps(const rnnd_batcher *b);
uint64_t rnnd_batcher_scan_rounds(const rnnd_batcher *b);

/* Most steps (over all requests) one infer round takes; default 65536. Before the pool runs. */
void rnnd_batcher_set_infer_max_steps(rnnd_batcher *b, size_t max_steps);

/* Queue JOB (caller fills req and finish). Returns 0, or RNND_ERR_UNSUPPORTED once the batcher
 * stopped (JOB untouched, finish not called). */
int rnnd_batcher_infer(rnnd_batcher *b, rnnd_infer_job *job);

/* Prepare JOB (caller fills the inputs, out, if_steps and job.finish) for
 * rnnd_session_submit(). */
void rnnd_step_job_init(rnnd_step_job *job, rnnd_batcher *b);

/* Refuse new work and fail every queued job with RNND_STEP_STOPPED, every queued infer job with
 * STOPPED set (their finish runs on this thread). Step jobs in a running round complete; a
 * running infer round gives up at its next step and its requests fail with RNND_ERR_STOPPED. */
void rnnd_batcher_stop(rnnd_batcher *b);

/* Queue depth now: sessions waiting for a step round, infer requests waiting. */
void rnnd_batcher_queued(rnnd_batcher *b, size_t *steps, size_t *infers);

/* Statistics: step batches of each size 1..max_batch and in all (scanned chunks are not
 * batches), and session steps computed (stepped and scanned). */
size_t rnnd_batcher_max_batch(const rnnd_batcher *b);
uint64_t rnnd_batcher_hist(const rnnd_batcher *b, size_t size);
uint64_t rnnd_batcher_batches(const rnnd_batcher *b);
uint64_t rnnd_batcher_steps(const rnnd_batcher *b);

/* Infer rounds by requests run together: bucket i counts rounds of at most 2^i requests
 * (and more than 2^(i-1)); the last bucket counts all larger ones. */
#define RNND_INFER_HIST_BUCKETS 8
uint64_t rnnd_batcher_infer_hist(const rnnd_batcher *b, size_t bucket);
uint64_t rnnd_batcher_infer_rounds(const rnnd_batcher *b);
uint64_t rnnd_batcher_infer_requests(const rnnd_batcher *b);

#endif
