/* Next-token choice for token models: softmax over one output row, top-k lists, and sampling
 * with temperature, top-k and top-p from a seeded generator (docs/api.md, "Sampling").
 *
 * Everything here is plain scalar C in a fixed order with double accumulation, so the same
 * row, parameters and seed give the same token on every ISA path and however the server is
 * loaded (the row itself is batch-invariant: docs/kernels.md).
 *
 * A row is read according to the model head's norm (enum rnnd_head_norm): NONE = logits,
 * SOFTMAX = probabilities (turned into log-probabilities, log 0 = -inf), LOG_SOFTMAX =
 * log-probabilities. */
#ifndef RNND_SAMPLE_H
#define RNND_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct rnnd_sampling {
    double temperature; /* 0: greedy (argmax, lowest id on ties); else > 0 */
    int32_t top_k;      /* 0: no limit; else keep the k most likely */
    double top_p;       /* in (0, 1]; 1: no limit; else the smallest most-likely set
                             * whose probability reaches top_p */
} rnnd_sampling;

/* xoshiro256** seeded through splitmix64: a fixed, documented stream per seed. */
typedef struct rnnd_prng {
    uint64_t s[4];
} rnnd_prng;

void rnnd_prng_seed(rnnd_prng *g, uint64_t seed);
uint64_t rnnd_prng_next(rnnd_prng *g);
double rnnd_prng_uniform(rnnd_prng *g); /* [0, 1) with 53 random bits */

/* Scratch for rows of up to N entries, so the hot path does not allocate. */
typedef struct rnnd_sampler rnnd_sampler;
rnnd_sampler *rnnd_sampler_new(size_t n);
void rnnd_sampler_free(rnnd_sampler *s); /* NULL is a no-op */

/* Check P: temperature finite and >= 0, top_k >= 0, 0 < top_p <= 1. Returns 0 or
 * RNND_ERR_INVALID naming the field. */
int rnnd_sampling_check(const rnnd_sampling *p, char *err, size_t errlen);

/* Choose the next token from ROW (N entries read per NORM) under P, drawing from G only when
 * the choice is random (temperature > 0 and more than one candidate). Returns the id, or -1
 * when no entry is finite (NaN/Inf row). N <= the sampler's size. */
int32_t rnnd_sample(rnnd_sampler *s, const float *row, size_t n, int norm, const rnnd_sampling *p,
                    rnnd_prng *g);

/* The K (<= N) most likely entries of ROW, most likely first (lowest id on ties), with their
 * softmax probabilities at temperature 1 over the whole row. Returns how many were written
 * (K, or 0 when no entry is finite). */
size_t rnnd_top_k(rnnd_sampler *s, const float *row, size_t n, int norm, size_t k, int32_t *ids,
                  float *probs);

#endif
