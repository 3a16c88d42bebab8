/* The recurrent-network core: a model's weights packed for the kernels, and forward passes.
 *
 * Session state layout (rnnd_net_state_floats() floats, contiguous): for each layer in order,
 * for each direction (forward first): h [out_dim], then for lstm c [hidden], for slstm c, n
 * and m [hidden] each (rnnd_layer_cell_floats()), for clockwork the step counter t as two
 * floats (rnnd_clock_put). This is also the order of the STATE JSON of the infer contract
 * (where t is an integer, "t").
 *
 * Two ways to run:
 * - rnnd_net_step(): B sessions each advance one step; forward-only models. Batch- and
 *   chunk-invariant: a session's results are bitwise the same whatever else is in the batch
 *   and however its steps are split across calls.
 * - rnnd_net_forward(): whole sequences of different lengths, any direction. The input
 *   projection of every step of every sequence is one matrix product; each element is summed
 *   exactly as the step path sums it, so for forward-only models a sequence's results are
 *   bitwise those of feeding it step by step (from the same initial state), whatever else is
 *   in the call. rnnd_net_use_openblas() trades that for OpenBLAS's sgemm. Its scratch is
 *   kept in the net between calls (a small cache with its own lock), so repeated calls of
 *   similar sizes allocate nothing.
 *
 * Threads: the _par variants split each stage of a step (a weight matrix's row panels, or the
 * hidden units of the elementwise gate math) across the threads PAR provides. No reduction is
 * ever split, so every element is computed exactly as with one thread: results are bitwise
 * the same for any thread count.
 */
#ifndef RNND_RNN_H
#define RNND_RNN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "rnnd/model.h"
#include "rnnd/kernels.h"

typedef struct rnnd_net rnnd_net;

/* A team of threads lent to one call. run(ctx, fn, arg, n) must call fn(arg, i) once for
 * every i < n, on any threads (the caller's included), and return when all calls returned;
 * n is at most THREADS. A call makes several run() calls (a few per layer and step). NULL, or
 * THREADS <= 1, runs everything on the calling thread. */
typedef struct rnnd_parallel {
    void (*run)(void *ctx, void (*fn)(void *arg, size_t i), void *arg, size_t n);
    void *ctx;
    size_t threads;
    /* rnnd_net_forward_par() checks it between steps: once nonzero it gives up with
     * RNND_ERR_STOPPED (a server stopping must not wait for a long sequence). NULL: never. */
    const atomic_int *stop;
} rnnd_parallel;

/* Pack MODEL's weights for KERNELS. Takes its own reference on MODEL. */
int rnnd_net_new(rnnd_model *model, const rnnd_kernels *kernels, rnnd_net **out, char *err,
                 size_t errlen);
void rnnd_net_free(rnnd_net *net); /* NULL is a no-op */

/* Route rnnd_net_forward()'s big products (input projections, head) through OpenBLAS: a
 * little faster on large batches, but then results equal the step path only within float
 * tolerance. Off by default. Call before the net is shared between threads. Ignored for an
 * int8 model: sgemm would multiply float inputs by the integers, not the model's products. */
void rnnd_net_use_openblas(rnnd_net *net, int on);

rnnd_model *rnnd_net_model(const rnnd_net *net);
const rnnd_kernels *rnnd_net_kernels(const rnnd_net *net);
size_t rnnd_net_state_floats(const rnnd_net *net);
int rnnd_net_output_dim(const rnnd_net *net);

/* 1 when every layer is forward-only and its gates read only its input (minGRU, minLSTM):
 * then rnnd_net_forward() over N steps does each layer as one product over all N steps plus
 * an elementwise scan, with results bitwise those of N rnnd_net_step() calls, so a long
 * session request is better run that way. */
int rnnd_net_scannable(const rnnd_net *net);

/* Scratch for rnnd_net_step() with up to MAX_BATCH sessions; one per thread. */
typedef struct rnnd_work rnnd_work;
rnnd_work *rnnd_work_new(const rnnd_net *net, size_t max_batch);
void rnnd_work_free(rnnd_work *w);

/* Advance B sessions one step. Input: TOKENS (B ids) for token models, else VECTORS
 * (B rows of input_dim floats). STATES[b] is session b's state block, updated in place.
 * OUT, if not NULL, receives B rows of output_dim floats. Returns 0, RNND_ERR_INVALID (a token
 * id out of range: nothing is changed), or RNND_ERR_UNSUPPORTED (model not forward-only). */
int rnnd_net_step(const rnnd_net *net, rnnd_work *work, size_t B, const int32_t *tokens,
                  const float *vectors, float *const *states, float *out, char *err, size_t errlen);

/* rnnd_net_step() with its work split across PAR's threads (NULL: one thread). WORK is used
 * by all of them for this call: one rnnd_work per concurrent call, not per thread. */
int rnnd_net_step_par(const rnnd_net *net, rnnd_work *work, size_t B, const int32_t *tokens,
                      const float *vectors, float *const *states, float *out,
                      const rnnd_parallel *par, char *err, size_t errlen);

/* Whole sequences, the arguments of rnnd_net_forward(). For b < B: sequence b has LENS[b] >= 1
 * steps given as TOKENS[b] (ids) or VECTORS[b] (LENS[b] rows of input_dim). INIT[b] is its
 * initial state or NULL (zeros); INIT itself may be NULL. OUTPUTS[b] receives LENS[b] rows of
 * output_dim floats, or one row when the model pools (spec.pool: the pooled last-layer output
 * through the head). FINAL, if not NULL, FINAL[b] (if not NULL) receives the final state (a
 * reverse direction's final state is its state after reading the first step). */
typedef struct rnnd_seq_batch {
    size_t B;
    const size_t *lens;
    const int32_t *const *tokens;
    const float *const *vectors;
    const float *const *init;
    float *const *outputs;
    float *const *final;
} rnnd_seq_batch;

/* Run the sequences of SEQS (see rnnd_seq_batch). */
int rnnd_net_forward(const rnnd_net *net, const rnnd_seq_batch *seqs, char *err, size_t errlen);

/* rnnd_net_forward() with its work split across PAR's threads (NULL: one thread); when
 * PAR->stop becomes nonzero it returns RNND_ERR_STOPPED at the next step, outputs unfinished. */
int rnnd_net_forward_par(const rnnd_net *net, const rnnd_seq_batch *seqs, const rnnd_parallel *par,
                         char *err, size_t errlen);

/* The bytes of scratch rnnd_net_forward() allocates for B sequences of N steps in all, the
 * longest T: known before the call, so a server can refuse work that does not fit its
 * memory budget instead of allocating it. SIZE_MAX when the sizes overflow. */
size_t rnnd_net_forward_bytes(const rnnd_net *net, size_t B, size_t N, size_t T);

#endif
