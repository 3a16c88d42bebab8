/* Sampling (rnnd/sample.h, docs/text.md): the generator against the published xoshiro256**
 * and splitmix64 vectors; greedy, top-k = 1 and a tiny top-p all give the argmax without a
 * draw; seeds reproduce and differ; the draws follow the specified distribution (chi-square
 * over 20000 draws, fixed seeds); NaN/Inf rows; the three norms agree; top-k lists; and every
 * choice equals a second implementation of docs/text.md written here from the text. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/model.h"
#include "rnnd/sample.h"
#include "rnnd/status.h"
#include "testcheck.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static uint64_t rng_state = 0x13198a2e03707344ull;

static uint32_t rng_u32(void) { return tu_xorshift64star(&rng_state); }

static float rng_float(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rng_u32() >> 8) / 16777216.0f;
}

static void random_row(float *row, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        row[i] = rng_float(-scale, scale);
}

static size_t argmax(const float *row, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (row[i] > row[best])
            best = i;
    return best;
}

static int same_state(const rnnd_prng *a, const rnnd_prng *b)
{
    return !memcmp(a->s, b->s, sizeof a->s);
}

/* ---- the generator ------------------------------------------------------------------------ */

START_TEST(prng_published_vectors)
{
    /* xoshiro256** from the state {1, 2, 3, 4}: the reference outputs published with the
     * Rust rand_xoshiro crate (produced there with the authors' C code) */
    static const uint64_t want[] = {
        11520u,
        0u,
        1509978240u,
        1215971899390074240u,
        1216172134540287360u,
        607988272756665600u,
        16172922978634559625u,
        8476171486693032832u,
        10595114339597558777u,
        2904607092377533576u,
    };
    rnnd_prng g = {{1, 2, 3, 4}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(rnnd_prng_next(&g) == want[i], "output %zu", i);

    /* splitmix64 from 0: its published first outputs become the state */
    rnnd_prng_seed(&g, 0);
    ck_assert(g.s[0] == 0xe220a8397b1dcdafull);
    ck_assert(g.s[1] == 0x6e789e6aa1b965f4ull);
    ck_assert(g.s[2] == 0x06c45d188009454full);
    ck_assert(g.s[3] == 0xf88bb8a8724c81ecull);

    /* seed 42 through splitmix64, then xoshiro256**: values published by other
     * implementations of this same seeding */
    rnnd_prng_seed(&g, 42);
    ck_assert(rnnd_prng_next(&g) == 1546998764402558742ull);
    ck_assert(rnnd_prng_next(&g) == 6990951692964543102ull);
    ck_assert(rnnd_prng_next(&g) == 12544586762248559009ull);
    ck_assert(rnnd_prng_next(&g) == 17057574109182124193ull);
}
END_TEST

/* splitmix64 as published (Vigna, splitmix64.c), written out here for the seeding check. */
static uint64_t ref_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

START_TEST(prng_seed_and_uniform)
{
    for (int k = 0; k < 100; k++) {
        uint64_t seed = k < 3 ? (uint64_t)k - 1 : ((uint64_t)rng_u32() << 32) | rng_u32();
        rnnd_prng g;
        rnnd_prng_seed(&g, seed);
        uint64_t x = seed;
        for (int i = 0; i < 4; i++)
            ck_assert(g.s[i] == ref_splitmix64(&x));
        for (int i = 0; i < 20; i++) {
            rnnd_prng c = g;
            uint64_t r = rnnd_prng_next(&c);
            double u = rnnd_prng_uniform(&g);
            ck_assert(same_state(&c, &g));
            ck_assert(u == ldexp((double)(r >> 11), -53));
            ck_assert(u >= 0 && u < 1);
        }
    }
    /* different seeds give different streams, the same seed the same one */
    rnnd_prng a, b, c;
    rnnd_prng_seed(&a, 7);
    rnnd_prng_seed(&b, 8);
    rnnd_prng_seed(&c, 7);
    int differ = 0;
    for (int i = 0; i < 10; i++) {
        uint64_t x = rnnd_prng_next(&a);
        differ += x != rnnd_prng_next(&b);
        ck_assert(x == rnnd_prng_next(&c));
    }
    ck_assert_int_eq(differ, 10);
}
END_TEST

/* ---- parameters -------------------------------------------------------------------------- */

START_TEST(sampling_check)
{
    static const struct {
        rnnd_sampling p;
        const char *msg; /* NULL: valid */
    } cases[] = {
        {{0, 0, 1}, NULL},
        {{0.8, 40, 0.9}, NULL},
        {{1e-300, 1, 1e-300}, NULL},
        {{-0.1, 0, 1}, "temperature: expected a finite number >= 0"},
        {{INFINITY, 0, 1}, "temperature: expected a finite number >= 0"},
        {{NAN, 0, 1}, "temperature: expected a finite number >= 0"},
        {{1, -1, 1}, "top_k: expected an integer >= 0"},
        {{1, 0, 0}, "top_p: expected a number in (0, 1]"},
        {{1, 0, 1.0000001}, "top_p: expected a number in (0, 1]"},
        {{1, 0, NAN}, "top_p: expected a number in (0, 1]"},
        {{1, 0, -0.5}, "top_p: expected a number in (0, 1]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[128] = "";
        int rc = rnnd_sampling_check(&cases[i].p, err, sizeof err);
        if (!cases[i].msg) {
            ck_assert_msg(rc == 0, "case %zu: %s", i, err);
            continue;
        }
        ck_assert_msg(rc == RNND_ERR_INVALID, "case %zu: status %d", i, rc);
        ck_assert_msg(!strncmp(err, cases[i].msg, strlen(cases[i].msg)),
                      "case %zu: \"%s\", want \"%s...\"", i, err, cases[i].msg);
    }
}
END_TEST

/* ---- deterministic choices --------------------------------------------------------------- */

START_TEST(greedy_is_argmax)
{
    enum { N = 300 };
    rnnd_sampler *s = rnnd_sampler_new(N);
    ck_assert_ptr_nonnull(s);
    float row[N];
    rnnd_prng g, before;
    rnnd_prng_seed(&g, 99);
    for (int k = 0; k < 500; k++) {
        size_t n = 1 + rng_u32() % N;
        random_row(row, n, 5);
        if (k % 3 == 0) /* ties: the lowest id wins */
            for (size_t i = 0; i < n; i++)
                row[i] = (float)(rng_u32() % 4);
        size_t want = argmax(row, n);
        before = g;
        rnnd_sampling greedy = {0, (int32_t)(rng_u32() % 5), 1};
        ck_assert_int_eq(rnnd_sample(s, row, n, RNND_NORM_NONE, &greedy, &g), (int32_t)want);
        /* top_k 1 and a tiny top_p leave one candidate at any temperature */
        rnnd_sampling k1 = {0.1 + rng_float(0, 3), 1, 1};
        ck_assert_int_eq(rnnd_sample(s, row, n, RNND_NORM_NONE, &k1, &g), (int32_t)want);
        rnnd_sampling p0 = {0.1 + rng_float(0, 3), 0, 1e-12};
        ck_assert_int_eq(rnnd_sample(s, row, n, RNND_NORM_NONE, &p0, &g), (int32_t)want);
        ck_assert_msg(same_state(&g, &before), "a deterministic choice drew a number");
    }
    /* a single entry: no draw at any setting */
    rnnd_sampling hot = {2, 0, 1};
    before = g;
    ck_assert_int_eq(rnnd_sample(s, row, 1, RNND_NORM_NONE, &hot, &g), 0);
    ck_assert(same_state(&g, &before));
    /* more than one candidate: exactly one draw */
    row[0] = 1;
    row[1] = 1;
    rnnd_sample(s, row, 2, RNND_NORM_NONE, &hot, &g);
    rnnd_prng_next(&before);
    ck_assert(same_state(&g, &before));
    rnnd_sampler_free(s);
    rnnd_sampler_free(NULL);
}
END_TEST

START_TEST(nonfinite_rows)
{
    rnnd_sampler *s = rnnd_sampler_new(4);
    rnnd_prng g;
    rnnd_prng_seed(&g, 1);
    rnnd_sampling ps[] = {{0, 0, 1}, {1, 0, 1}, {1, 2, 0.5}};
    int32_t ids[4];
    float probs[4];
    for (size_t k = 0; k < 3; k++) {
        const rnnd_sampling *p = &ps[k];
        float nan_row[] = {1, NAN, 2, 3};
        float inf_row[] = {1, 2, INFINITY, 3};
        float ninf_row[] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        float neg_row[] = {-1, -2, -3, -4}; /* as probabilities: all <= 0 */
        for (int norm = 0; norm < 3; norm++) {
            ck_assert_int_eq(rnnd_sample(s, nan_row, 4, norm, p, &g), -1);
            ck_assert_int_eq(rnnd_sample(s, inf_row, 4, norm, p, &g), -1);
            ck_assert_int_eq(rnnd_sample(s, ninf_row, 4, norm, p, &g), -1);
            ck_assert_uint_eq(rnnd_top_k(s, nan_row, 4, norm, 2, ids, probs), 0);
            ck_assert_uint_eq(rnnd_top_k(s, inf_row, 4, norm, 2, ids, probs), 0);
            ck_assert_uint_eq(rnnd_top_k(s, ninf_row, 4, norm, 2, ids, probs), 0);
        }
        ck_assert_int_eq(rnnd_sample(s, neg_row, 4, RNND_NORM_SOFTMAX, p, &g), -1);
        ck_assert_int_ge(rnnd_sample(s, neg_row, 4, RNND_NORM_NONE, p, &g), 0);
        /* -inf entries are allowed and never chosen */
        float some[] = {-INFINITY, 0.5f, -INFINITY, 0.25f};
        for (int i = 0; i < 50; i++) {
            int32_t t = rnnd_sample(s, some, 4, RNND_NORM_LOG_SOFTMAX, p, &g);
            ck_assert(t == 1 || t == 3);
        }
        float zeros[] = {0, 0.3f, 0, 0.7f}; /* probabilities: 0 is never chosen */
        for (int i = 0; i < 50; i++) {
            int32_t t = rnnd_sample(s, zeros, 4, RNND_NORM_SOFTMAX, p, &g);
            ck_assert(t == 1 || t == 3);
        }
    }
    /* a row longer than the scratch */
    float row[5] = {0};
    ck_assert_int_eq(rnnd_sample(s, row, 5, 0, &ps[0], &g), -1);
    ck_assert_uint_eq(rnnd_top_k(s, row, 5, 0, 1, ids, probs), 0);
    rnnd_sampler_free(s);
}
END_TEST

/* ---- a second implementation of docs/text.md ---------------------------------------------- */

typedef struct {
    double x;
    int32_t id;
} ref_cand;

static int ref_cmp(const void *a, const void *b)
{
    const ref_cand *p = a, *q = b;
    if (p->x != q->x)
        return p->x > q->x ? -1 : 1;
    return p->id < q->id ? -1 : p->id > q->id;
}

/* Written from the numbered steps of docs/text.md, "Sampling". */
static int32_t ref_sample(const float *row, size_t n, int norm, const rnnd_sampling *p,
                          rnnd_prng *g)
{
    ref_cand *c = malloc(n * sizeof *c);
    ck_assert_ptr_nonnull(c);
    int all_ninf = 1;
    for (size_t i = 0; i < n; i++) {
        double x = row[i];
        if (norm == RNND_NORM_SOFTMAX)
            x = row[i] <= 0 ? -INFINITY : log(x);
        if (isnan(x) || x == INFINITY) {
            free(c);
            return -1;
        }
        all_ninf &= x == -INFINITY;
        c[i] = (ref_cand){x, (int32_t)i};
    }
    if (all_ninf) {
        free(c);
        return -1;
    }
    size_t m = p->top_k > 0 && (size_t)p->top_k < n ? (size_t)p->top_k : n;
    /* step 3: sorted only when something is cut; else id order */
    ref_cand *sorted = malloc(n * sizeof *sorted);
    ck_assert_ptr_nonnull(sorted);
    memcpy(sorted, c, n * sizeof *c);
    qsort(sorted, n, sizeof *sorted, ref_cmp);
    double xmax = sorted[0].x;
    int32_t out = sorted[0].id;
    if (m < n || p->top_p < 1)
        memcpy(c, sorted, n * sizeof *c);
    free(sorted);
    if (p->temperature == 0) {
        free(c);
        return out;
    }
    double S = 0;
    for (size_t j = 0; j < m; j++) {
        c[j].x = exp((c[j].x - xmax) / p->temperature);
        S += c[j].x;
    }
    if (p->top_p < 1) {
        double cum = 0;
        for (size_t j = 0; j < m; j++) {
            cum += c[j].x;
            if (cum >= p->top_p * S) {
                m = j + 1;
                S = cum;
                break;
            }
        }
    }
    if (m > 1) {
        double u = rnnd_prng_uniform(g) * S, cum = 0;
        out = c[m - 1].id;
        for (size_t j = 0; j < m; j++) {
            cum += c[j].x;
            if (cum > u) {
                out = c[j].id;
                break;
            }
        }
    }
    free(c);
    return out;
}

START_TEST(matches_reference)
{
    enum { N = 400 };
    rnnd_sampler *s = rnnd_sampler_new(N);
    float row[N];
    for (int k = 0; k < 3000; k++) {
        size_t n = 1 + rng_u32() % (k % 4 ? 40 : N);
        int norm = (int)(rng_u32() % 3);
        random_row(row, n, k % 2 ? 8 : 2);
        if (k % 5 == 0) /* many ties */
            for (size_t i = 0; i < n; i++)
                row[i] = (float)(rng_u32() % 3) * 0.5f;
        if (norm == RNND_NORM_SOFTMAX)
            for (size_t i = 0; i < n; i++)
                row[i] = k % 7 == 0 && i % 3 == 0 ? 0.0f : expf(row[i]) / (float)n;
        if (k % 11 == 0)
            row[rng_u32() % n] = -INFINITY;
        rnnd_sampling p = {rng_u32() % 8 ? rng_float(0.05f, 3) : 0,
                           rng_u32() % 2 ? (int32_t)(rng_u32() % (n + 3)) : 0,
                           rng_u32() % 2 ? rng_float(0.01f, 1) : 1};
        rnnd_prng g, h;
        rnnd_prng_seed(&g, (uint64_t)k);
        h = g;
        for (int draw = 0; draw < 5; draw++) {
            int32_t want = ref_sample(row, n, norm, &p, &h);
            int32_t got = rnnd_sample(s, row, n, norm, &p, &g);
            ck_assert_msg(got == want,
                          "case %d draw %d (n %zu, norm %d, T %g, k %d, p %g): "
                          "%d, want %d",
                          k, draw, n, norm, p.temperature, (int)p.top_k, p.top_p, (int)got,
                          (int)want);
            ck_assert(same_state(&g, &h));
        }
    }
    rnnd_sampler_free(s);
}
END_TEST

/* ---- the distribution -------------------------------------------------------------------- */

/* Chi-square of COUNTS (DRAWS in all) against probabilities P over N cells; cells with p 0
 * must be empty. */
static double chi_square(const long *counts, const double *p, size_t n, long draws)
{
    double chi = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == 0) {
            ck_assert_msg(counts[i] == 0, "cell %zu has probability 0 but %ld draws", i, counts[i]);
            continue;
        }
        double e = p[i] * (double)draws;
        chi += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
    }
    return chi;
}

START_TEST(distribution)
{
    enum { N = 10, DRAWS = 20000 };
    static const float logits[N] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, 1.5f, -1.0f, 0.2f, 1.2f, -2.0f};
    /* the order by logit: 3, 5, 8, 0, 1, 7, 4, 2, 6, 9 */
    static const int order[N] = {3, 5, 8, 0, 1, 7, 4, 2, 6, 9};
    static const struct {
        double T;
        int k;
        double top_p;
    } cases[] = {{1, 0, 1}, {0.7, 0, 1}, {2.5, 0, 1}, {1, 4, 1}, {1, 0, 0.8}, {0.8, 6, 0.7}};
    rnnd_sampler *s = rnnd_sampler_new(N);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        /* expected: softmax of logits / T over the kept most likely set, computed here */
        double p[N] = {0}, w[N] = {0}, sum = 0;
        size_t keep = cases[c].k ? (size_t)cases[c].k : N;
        for (size_t j = 0; j < keep; j++) {
            w[j] = exp(logits[order[j]] / cases[c].T);
            sum += w[j];
        }
        if (cases[c].top_p < 1) {
            double cum = 0;
            for (size_t j = 0; j < keep; j++) {
                cum += w[j] / sum;
                if (cum >= cases[c].top_p - 1e-12) {
                    keep = j + 1;
                    break;
                }
            }
            sum = 0;
            for (size_t j = 0; j < keep; j++)
                sum += w[j];
        }
        for (size_t j = 0; j < keep; j++)
            p[order[j]] = w[j] / sum;

        long counts[N] = {0};
        rnnd_prng g;
        rnnd_prng_seed(&g, 1000 + c);
        rnnd_sampling ps = {cases[c].T, cases[c].k, cases[c].top_p};
        for (int d = 0; d < DRAWS; d++) {
            int32_t t = rnnd_sample(s, logits, N, RNND_NORM_NONE, &ps, &g);
            ck_assert(t >= 0 && t < N);
            counts[t]++;
        }
        /* keep - 1 degrees of freedom (at most 9): 50 is far beyond the 1e-6 tail, while a
         * wrong weighting of even one cell by 10% gives hundreds */
        double chi = chi_square(counts, p, N, DRAWS);
        ck_assert_msg(chi < 50, "case %zu: chi-square %.1f over %zu cells", c, chi, keep);
    }
    rnnd_sampler_free(s);
}
END_TEST

START_TEST(seeds)
{
    enum { N = 50 };
    rnnd_sampler *s = rnnd_sampler_new(N);
    float row[N];
    random_row(row, N, 1);
    rnnd_sampling p = {1, 0, 1};
    int32_t a[200], b[200];
    for (uint64_t seed = 0; seed < 5; seed++) {
        rnnd_prng g, h, o;
        rnnd_prng_seed(&g, seed);
        rnnd_prng_seed(&h, seed);
        rnnd_prng_seed(&o, seed + 1000);
        int differ = 0;
        for (int i = 0; i < 200; i++) {
            a[i] = rnnd_sample(s, row, N, RNND_NORM_NONE, &p, &g);
            b[i] = rnnd_sample(s, row, N, RNND_NORM_NONE, &p, &h);
            differ += a[i] != rnnd_sample(s, row, N, RNND_NORM_NONE, &p, &o);
        }
        ck_assert(!memcmp(a, b, sizeof a));
        ck_assert_msg(differ > 150, "seed %d: only %d of 200 differ", (int)seed, differ);
    }
    rnnd_sampler_free(s);
}
END_TEST

START_TEST(norms_agree)
{
    enum { N = 64 };
    rnnd_sampler *s = rnnd_sampler_new(N);
    float logits[N], probs[N], logp[N];
    int same = 0, total = 0;
    for (int k = 0; k < 200; k++) {
        random_row(logits, N, 4);
        double mx = logits[argmax(logits, N)], sum = 0;
        for (size_t i = 0; i < N; i++)
            sum += exp(logits[i] - mx);
        for (size_t i = 0; i < N; i++) {
            probs[i] = (float)(exp(logits[i] - mx) / sum);
            logp[i] = (float)(logits[i] - mx - log(sum));
        }
        rnnd_prng g;
        rnnd_sampling greedy = {0, 0, 1};
        int32_t want = rnnd_sample(s, logits, N, RNND_NORM_NONE, &greedy, &g);
        ck_assert_int_eq(rnnd_sample(s, probs, N, RNND_NORM_SOFTMAX, &greedy, &g), want);
        ck_assert_int_eq(rnnd_sample(s, logp, N, RNND_NORM_LOG_SOFTMAX, &greedy, &g), want);
        /* sampling with one seed: the rows differ only by float rounding, so the tokens
         * agree but for draws that land within rounding of a boundary */
        rnnd_sampling hot = {0.9, 20, 0.95};
        rnnd_prng g1, g2, g3;
        rnnd_prng_seed(&g1, (uint64_t)k);
        g2 = g3 = g1;
        for (int d = 0; d < 10; d++) {
            int32_t t1 = rnnd_sample(s, logits, N, RNND_NORM_NONE, &hot, &g1);
            int32_t t2 = rnnd_sample(s, probs, N, RNND_NORM_SOFTMAX, &hot, &g2);
            int32_t t3 = rnnd_sample(s, logp, N, RNND_NORM_LOG_SOFTMAX, &hot, &g3);
            same += (t1 == t2) + (t1 == t3);
            total += 2;
        }
    }
    ck_assert_msg(same >= total - 10, "only %d of %d draws agree across norms", same, total);
    rnnd_sampler_free(s);
}
END_TEST

/* ---- top-k lists ------------------------------------------------------------------------- */

START_TEST(top_k_lists)
{
    enum { N = 200 };
    rnnd_sampler *s = rnnd_sampler_new(N);
    float row[N], probs[N], probs2[N];
    int32_t ids[N], ids2[N];
    for (int k = 0; k < 300; k++) {
        size_t n = 1 + rng_u32() % N;
        random_row(row, n, 6);
        if (k % 2)
            for (size_t i = 0; i < n; i++)
                row[i] = (float)(rng_u32() % 5);
        /* the softmax, computed here */
        double mx = row[argmax(row, n)], sum = 0, p[N];
        for (size_t i = 0; i < n; i++)
            sum += exp(row[i] - mx);
        for (size_t i = 0; i < n; i++)
            p[i] = exp(row[i] - mx) / sum;
        /* the full list: every id once, most likely first, lower id on ties */
        ck_assert_uint_eq(rnnd_top_k(s, row, n, RNND_NORM_NONE, n + 5, ids, probs), n);
        double total = 0;
        char seen[N] = {0};
        for (size_t j = 0; j < n; j++) {
            ck_assert(ids[j] >= 0 && (size_t)ids[j] < n && !seen[ids[j]]);
            seen[ids[j]] = 1;
            ck_assert_msg(fabs(probs[j] - p[ids[j]]) <= 1e-6 * p[ids[j]] + 1e-30,
                          "p[%d] = %g, want %g", (int)ids[j], probs[j], p[ids[j]]);
            total += probs[j];
            if (j) {
                ck_assert(row[ids[j - 1]] >= row[ids[j]]);
                if (row[ids[j - 1]] == row[ids[j]])
                    ck_assert_int_lt(ids[j - 1], ids[j]);
            }
        }
        ck_assert(fabs(total - 1) < 1e-5);
        /* a short list (the partial selection) is the head of the full one (the sort) */
        size_t kk = 1 + rng_u32() % (n < 70 ? n : 70);
        ck_assert_uint_eq(rnnd_top_k(s, row, n, RNND_NORM_NONE, kk, ids2, probs2), kk);
        ck_assert(!memcmp(ids, ids2, kk * sizeof *ids));
        ck_assert(!memcmp(probs, probs2, kk * sizeof *probs));
    }
    /* log-probabilities and probabilities give the same list */
    float lp[] = {logf(0.5f), logf(0.2f), logf(0.3f)};
    float pr[] = {0.5f, 0.2f, 0.3f};
    ck_assert_uint_eq(rnnd_top_k(s, lp, 3, RNND_NORM_LOG_SOFTMAX, 3, ids, probs), 3);
    ck_assert_uint_eq(rnnd_top_k(s, pr, 3, RNND_NORM_SOFTMAX, 3, ids2, probs2), 3);
    static const int32_t order[3] = {0, 2, 1};
    for (int j = 0; j < 3; j++) {
        ck_assert_int_eq(ids[j], order[j]);
        ck_assert_int_eq(ids2[j], ids[j]);
        ck_assert(fabsf(probs[j] - pr[ids[j]]) < 1e-6f);
        ck_assert(fabsf(probs2[j] - pr[ids[j]]) < 1e-6f);
    }
    ck_assert_uint_eq(rnnd_top_k(s, pr, 3, RNND_NORM_SOFTMAX, 0, ids, probs), 0);
    rnnd_sampler_free(s);
}
END_TEST

static Suite *sample_suite(void)
{
    Suite *s = suite_create("sample");
    TCase *tc = tcase_create("prng");
    tcase_add_test(tc, prng_published_vectors);
    tcase_add_test(tc, prng_seed_and_uniform);
    tcase_add_test(tc, sampling_check);
    suite_add_tcase(s, tc);

    tc = tcase_create("sample");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, greedy_is_argmax);
    tcase_add_test(tc, nonfinite_rows);
    tcase_add_test(tc, matches_reference);
    tcase_add_test(tc, distribution);
    tcase_add_test(tc, seeds);
    tcase_add_test(tc, norms_agree);
    tcase_add_test(tc, top_k_lists);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sample_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
