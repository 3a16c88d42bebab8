/* Next-token choice (rnnd/sample.h); the algorithm is specified step by step in docs/text.md
 * so that a client can reproduce a seeded generation exactly.
 *
 * Every sum runs in one documented order in double, and only exp()/log() from libm are used,
 * so a reimplementation with the same libm agrees bit for bit. Sorting uses an in-place
 * heapsort (glibc's qsort may malloc a merge buffer): the (score desc, id asc) order is
 * total, so any correct sort gives the same sequence. */
#include "rnnd/sample.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "rnnd/model.h"
#include "rnnd/status.h"

/* ---- the generator: splitmix64 seeding, xoshiro256** (Blackman & Vigna) ------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rnnd_prng_seed(rnnd_prng *g, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = splitmix64(&seed);
}

uint64_t rnnd_prng_next(rnnd_prng *g)
{
    uint64_t *s = g->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rnnd_prng_uniform(rnnd_prng *g) { return (double)(rnnd_prng_next(g) >> 11) * 0x1.0p-53; }

/* ---- scratch ----------------------------------------------------------------------------- */

typedef struct {
    double x; /* score, then weight or probability */
    int32_t id;
} cand;

struct rnnd_sampler {
    size_t cap;
    cand *c;
};

rnnd_sampler *rnnd_sampler_new(size_t n)
{
    rnnd_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cap = n;
    s->c = calloc(n ? n : 1, sizeof *s->c);
    if (!s->c) {
        free(s);
        return NULL;
    }
    return s;
}

void rnnd_sampler_free(rnnd_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s);
}

int rnnd_sampling_check(const rnnd_sampling *p, char *err, size_t errlen)
{
    if (!isfinite(p->temperature) || p->temperature < 0)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "temperature: expected a finite number >= 0, got %g", p->temperature);
    if (p->top_k < 0)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "top_k: expected an integer >= 0 (0: no limit), got %d", (int)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen,
                         "top_p: expected a number in (0, 1] (1: no limit), got %g", p->top_p);
    return 0;
}

/* ---- ordering ---------------------------------------------------------------------------- */

/* The candidate order: higher score first, lower id on equal scores. Total (no NaN here). */
static int better(const cand *a, const cand *b)
{
    return a->x > b->x || (a->x == b->x && a->id < b->id);
}

/* Restore the heap below I: every parent no better than its children (root = worst). */
static void sift(cand *c, size_t i, size_t n)
{
    for (;;) {
        size_t ch = 2 * i + 1;
        if (ch >= n)
            return;
        if (ch + 1 < n && better(&c[ch], &c[ch + 1]))
            ch++; /* the worse child */
        if (!better(&c[i], &c[ch]))
            return;
        cand t = c[i];
        c[i] = c[ch];
        c[ch] = t;
        i = ch;
    }
}

/* Sort all N best first. */
static void sort_all(cand *c, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(c, i, n);
    for (size_t end = n; end-- > 1;) {
        cand t = c[0];
        c[0] = c[end];
        c[end] = t;
        sift(c, 0, end);
    }
}

/* Put the K best of the N entries in C[0..K), best first (K <= N). Insertion into a sorted
 * prefix for a small K (one comparison per entry that does not make it); a full sort else. */
static void select_best(cand *c, size_t n, size_t k)
{
    if (!k)
        return;
    if (k > 64 || k == n) {
        sort_all(c, n);
        return;
    }
    size_t have = 0;
    for (size_t i = 0; i < n; i++) {
        cand v = c[i];
        if (have == k && !better(&v, &c[k - 1]))
            continue;
        size_t j = have < k ? have++ : k - 1;
        while (j > 0 && better(&v, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = v;
    }
}

/* Step 1: scores from ROW per NORM into C, with the first maximum's position in *AMAX.
 * Returns 0, or -1 when a score is NaN or +inf or every score is -inf. */
static int read_row(cand *c, const float *row, size_t n, int norm, size_t *amax)
{
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
        double x = row[i];
        if (norm == RNND_NORM_SOFTMAX)
            x = x > 0 ? log(x) : (x <= 0 ? -INFINITY : x); /* NaN stays NaN */
        if (isnan(x) || x == INFINITY)
            return -1;
        c[i].x = x;
        c[i].id = (int32_t)i;
        if (x != -INFINITY && (best == n || x > c[best].x))
            best = i;
    }
    if (best == n)
        return -1;
    *amax = best;
    return 0;
}

int32_t rnnd_sample(rnnd_sampler *s, const float *row, size_t n, int norm, const rnnd_sampling *p,
                    rnnd_prng *g)
{
    cand *c = s->c;
    size_t amax;

    if (!n || n > s->cap || read_row(c, row, n, norm, &amax))
        return -1;
    if (p->temperature == 0) /* step 2 */
        return c[amax].id;

    double xmax = c[amax].x, T = p->temperature;
    size_t m = n; /* step 3 */
    if (p->top_k > 0 && (size_t)p->top_k < n)
        m = (size_t)p->top_k;
    if (m < n || p->top_p < 1) /* without truncation the id order serves: no sort */
        select_best(c, n, m);

    double S = 0; /* step 4 */
    for (size_t j = 0; j < m; j++) {
        c[j].x = exp((c[j].x - xmax) / T);
        S += c[j].x;
    }
    if (p->top_p < 1) { /* step 5 */
        double target = p->top_p * S, run = 0;
        for (size_t j = 0; j < m; j++) {
            run += c[j].x;
            if (run >= target) {
                m = j + 1;
                S = run;
                break;
            }
        }
    }
    if (m == 1) /* step 6 */
        return c[0].id;
    double u = rnnd_prng_uniform(g) * S, run = 0;
    for (size_t j = 0; j < m; j++) {
        run += c[j].x;
        if (run > u)
            return c[j].id;
    }
    return c[m - 1].id;
}

size_t rnnd_top_k(rnnd_sampler *s, const float *row, size_t n, int norm, size_t k, int32_t *ids,
                  float *probs)
{
    cand *c = s->c;
    size_t amax;

    if (!n || n > s->cap || read_row(c, row, n, norm, &amax))
        return 0;
    if (k > n)
        k = n;
    double xmax = c[amax].x, sum = 0;
    for (size_t i = 0; i < n; i++) {
        c[i].x = exp(c[i].x - xmax);
        sum += c[i].x;
    }
    for (size_t i = 0; i < n; i++)
        c[i].x /= sum;
    select_best(c, n, k);
    for (size_t j = 0; j < k; j++) {
        ids[j] = c[j].id;
        probs[j] = (float)c[j].x;
    }
    return k;
}
