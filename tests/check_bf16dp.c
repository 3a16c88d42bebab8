/* The bf16 compute mode (docs/kernels.md, "bf16 compute"): this CPU's VDPBF16PS and
 * VCVTNE2PS2BF16 against src/bf16dp.h's statement bitwise (random lanes, large and small
 * magnitudes, cancellations, subnormals); that statement against one written again here
 * from the docs; every path's gemv against it bitwise over odd shapes (odd columns: the zero
 * pad), B = 1..70, row ranges and long rows; batch invariance; packing. */
#include "config.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef RNND_HAVE_X86
#include <immintrin.h>
#endif

#include "rnnd/kernels.h"
#include "rnnd/status.h"
#include "bf16dp.h"
#include "testcheck.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rng_u32(void) { return tu_xorshift64(&rng_state); }

static float rng_f(void) { return (float)((double)rng_u32() / 2147483648.0 - 1.0); }

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* equal bits, or both NaN (a NaN's payload is not part of the mode) */
static int same(float a, float b) { return f_bits(a) == f_bits(b) || (isnan(a) && isnan(b)); }

/* ---- the statement, written again from the docs ------------------------------------------ */

static float ref_flush(float f)
{
    int c = fpclassify(f);
    return c == FP_ZERO || c == FP_SUBNORMAL ? copysignf(0.0f, f) : f;
}

/* x to the nearest bf16 value, ties to even, through frexp / nearbyint (the default rounding
 * mode), a zero or subnormal to a zero of its sign. */
static float ref_round(float x)
{
    if (isnan(x) || isinf(x) || fpclassify(x) != FP_NORMAL)
        return isnan(x) ? x : ref_flush(x);
    int e;
    double m = frexp((double)x, &e);   /* [0.5, 1) */
    double r = nearbyint(ldexp(m, 8)); /* 8 significant bits */
    return (float)ldexp(r, e - 8);     /* exact, or beyond FLT_MAX: inf */
}

/* One step as the docs state it, through double: fma in double is exact here (a 24-bit
 * float plus a 16-bit product cannot need more than 53 bits to reach a 24-bit tie), then
 * rounded to 24 significant bits with nearbyint on frexp's fraction (no exponent limit), and
 * a magnitude below FLT_MIN after that rounding is a zero of its sign. */
static float ref_step(float w, float x, float acc)
{
    double e = fma((double)ref_flush(w), (double)ref_flush(x), (double)ref_flush(acc));
    if (e == 0.0 || isnan(e) || isinf(e))
        return (float)e;
    int ex;
    double m = frexp(e, &ex);
    double r = ldexp(nearbyint(ldexp(m, 24)), ex - 24);
    if (fabs(r) < (double)FLT_MIN)
        return copysignf(0.0f, (float)r);
    return (float)r; /* exact, or beyond FLT_MAX: inf */
}

/* y[j] for one input row: W [rows, cols] holds bf16 values as floats */
static float ref_dot(const float *w, const float *x, size_t cols, float bias)
{
    float acc = bias;
    for (size_t k = 0; k < cols; k += 2) {
        float w1 = k + 1 < cols ? w[k + 1] : 0.0f, x1 = k + 1 < cols ? ref_round(x[k + 1]) : 0.0f;
        acc = ref_step(w1, x1, acc);
        acc = ref_step(w[k], ref_round(x[k]), acc);
    }
    return acc;
}

/* a random bf16 value as a float: MODE 0 around 1, 1 any exponent (inf and NaN too),
 * 2 the subnormal and smallest normal range, 3 exponents whose products straddle FLT_MIN,
 * 4 exponents whose products are 2^-160 to 2^-140 (added to an accumulator near FLT_MIN) */
static uint16_t rng_bf16(int mode)
{
    uint16_t h = (uint16_t)rng_u32();
    unsigned e = mode == 0 ? 120 + rng_u32() % 16
        : mode == 1        ? rng_u32() % 256
        : mode == 2        ? rng_u32() % 4
        : mode == 3        ? 58 + rng_u32() % 14
                           : 47 + rng_u32() % 11;
    return (uint16_t)((h & 0x807fu) | e << 7);
}

/* ---- the instruction against the statement ----------------------------------------------- */

#ifdef RNND_HAVE_X86
__attribute__((target("avx512f,avx512bf16"))) static void hw_dp(const float *acc, const uint16_t *w,
                                                                const uint16_t *x, float *out)
{
    __m512bh wv, xv;
    memcpy(&wv, w, 64);
    memcpy(&xv, x, 64);
    _mm512_storeu_ps(out, _mm512_dpbf16_ps(_mm512_loadu_ps(acc), wv, xv));
}

__attribute__((target("avx512f,avx512bf16"))) static void hw_cvt(const float *x, uint16_t *out)
{
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
    memcpy(out, &v, 64);
}

static int have_bf16(void) { return __builtin_cpu_supports("avx512bf16"); }
#else
static int have_bf16(void) { return 0; }
#endif

/* 480,000 lanes in six kinds (the last: accumulators at +-FLT_MIN and just above, plus
 * products of 2^-160 to 2^-140, where x86's tininess after rounding decides the FTZ): the
 * instruction's result is the statement's, bit for bit
 * (one NaN for another). Where the CPU has no AVX512-BF16, the statement is held to the
 * test's own copy instead (done below in any case). */
START_TEST(hw_dot_matches_statement)
{
    rng_state = 0x9e3779b97f4a7c15ull;
    long lanes = 0;
    for (int it = 0; it < 30000; it++) {
        const int kind = it % 6;
        uint16_t w[32], x[32];
        float acc[16], out[16];
        for (int i = 0; i < 32; i++) {
            w[i] = rng_bf16(kind == 4 ? 0 : kind == 5 ? 4 : kind);
            x[i] = rng_bf16(kind == 4 ? 0 : kind == 5 ? 4 : kind);
        }
        for (int i = 0; i < 16; i++) {
            if (kind == 4) { /* cancellation: acc near -(w1 x1), exact 0 among them */
                float p = rnnd_bf16_to_f32(w[2 * i + 1]) * rnnd_bf16_to_f32(x[2 * i + 1]);
                acc[i] = -p * (1.0f + (float)((int)(rng_u32() % 5) - 2) * 0x1p-20f);
            } else if (kind == 5) { /* +-FLT_MIN and its next few floats: the FTZ boundary */
                acc[i] = bits_f(((rng_u32() & 1u) << 31) | (0x00800000u + rng_u32() % 4));
            } else if (kind == 2 || kind == 3) { /* tiny, often subnormal, accumulators */
                acc[i] = rng_u32() % 2 ? bits_f(rng_u32() & 0x80ffffffu) : 0.0f;
            } else {
                acc[i] = bits_f((rng_u32() & 0x807fffffu) | (120u + rng_u32() % 16) << 23);
            }
            if (rng_u32() % 7 == 0)
                acc[i] = rng_u32() % 2 ? -0.0f : 0.0f;
        }
        for (int i = 0; i < 16; i++) {
            float want = rnnd_bf16dp_pair(acc[i], w[2 * i], w[2 * i + 1], x[2 * i], x[2 * i + 1]);
            float mine =
                ref_step(rnnd_bf16_to_f32(w[2 * i + 1]), rnnd_bf16_to_f32(x[2 * i + 1]), acc[i]);
            mine = ref_step(rnnd_bf16_to_f32(w[2 * i]), rnnd_bf16_to_f32(x[2 * i]), mine);
            expect(same(want, mine), "statement %a, test's copy %a", want, mine);
        }
        if (!have_bf16())
            continue;
#ifdef RNND_HAVE_X86
        hw_dp(acc, w, x, out);
        for (int i = 0; i < 16; i++, lanes++) {
            float want = rnnd_bf16dp_pair(acc[i], w[2 * i], w[2 * i + 1], x[2 * i], x[2 * i + 1]);
            expect(same(out[i], want),
                   "kind %d: acc %a + w1 %a x1 %a + w0 %a x0 %a: vdpbf16ps %a, statement %a", kind,
                   acc[i], rnnd_bf16_to_f32(w[2 * i + 1]), rnnd_bf16_to_f32(x[2 * i + 1]),
                   rnnd_bf16_to_f32(w[2 * i]), rnnd_bf16_to_f32(x[2 * i]), out[i], want);
        }
#endif
    }
    if (!have_bf16())
        fprintf(stderr,
                "check_bf16dp: this CPU has no AVX512-BF16; the instruction itself was "
                "not compared\n");
    else
        ck_assert_int_eq(lanes, 480000);
}
END_TEST

/* The input rounding: vcvtne2ps2bf16 against rnnd_bf16dp_round on random bit patterns of
 * every class (subnormals, NaN, values that round to inf) and against the test's frexp copy. */
START_TEST(hw_round_matches_statement)
{
    rng_state = 0x51ed27a4ull;
    for (int it = 0; it < 20000; it++) {
        float x[32];
        uint16_t out[32];
        for (int i = 0; i < 32; i++) {
            uint32_t u = rng_u32();
            switch (i % 4) {
            case 0: u &= 0x807fffffu; break;                    /* subnormal, zero */
            case 1: u = (u & 0x807fffffu) | 0x7f000000u; break; /* near FLT_MAX */
            case 2: u = (u & 0x80ffffffu) | (u % 3 == 0 ? 0x7f800000u : 0); break;
            default: break;
            }
            x[i] = bits_f(u);
            float r = ref_round(x[i]), s = rnnd_bf16_to_f32(rnnd_bf16dp_round(x[i]));
            expect(same(r, s), "round %a: statement %a, frexp copy %a", x[i], s, r);
            if (isnan(x[i]))
                expect((rnnd_bf16dp_round(x[i]) & 0x40u) != 0, "NaN made quiet");
        }
        if (!have_bf16())
            continue;
#ifdef RNND_HAVE_X86
        hw_cvt(x, out);
        for (int i = 0; i < 32; i++)
            expect(out[i] == rnnd_bf16dp_round(x[i]), "vcvtne2ps2bf16 %a: %#x, statement %#x", x[i],
                   out[i], rnnd_bf16dp_round(x[i]));
#endif
    }
}
END_TEST

/* ---- the gemv of every path --------------------------------------------------------------- */

static const char *const paths[] = {"scalar", "avx2", "avx512"};

/* A random matrix of bf16 values (so packing is exact): mostly around 1, some tiny
 * (subnormal bf16, read as 0), some rows zero. */
static void random_w(float *W, size_t rows, size_t cols)
{
    for (size_t j = 0; j < rows; j++) {
        int zero_row = rng_u32() % 23 == 0;
        for (size_t k = 0; k < cols; k++) {
            uint16_t h = rng_bf16(rng_u32() % 29 == 0 ? 2 : 0);
            W[j * cols + k] = zero_row ? 0.0f : rnnd_bf16_to_f32(h) * 0.25f;
        }
    }
}

static void ref_gemv(const float *W, const float *bias, const float *X, size_t B, size_t rows,
                     size_t cols, float *Y)
{
    for (size_t b = 0; b < B; b++)
        for (size_t j = 0; j < rows; j++)
            Y[b * rows + j] = ref_dot(W + j * cols, X + b * cols, cols, bias ? bias[j] : 0.0f);
}

/* One shape on every path this CPU runs: the test's statement, bitwise; whole, by row
 * ranges of whole panels (only those rows written), and each batch row alone (B = 1). */
static void check_shape(size_t rows, size_t cols, size_t B, int with_bias)
{
    float *W = malloc(rows * cols * sizeof(float) + 4), *bias = malloc(rows * sizeof(float) + 4);
    float *X = malloc(B * cols * sizeof(float) + 4);
    float *want = malloc(B * rows * sizeof(float) + 4), *got = malloc(B * rows * sizeof(float) + 4);
    ck_assert(W && bias && X && want && got);
    random_w(W, rows, cols);
    for (size_t j = 0; j < rows; j++)
        bias[j] = j % 11 == 0 ? -0.0f : rng_f();
    for (size_t i = 0; i < B * cols; i++) /* rows of different magnitudes, a few tiny */
        X[i] = rng_f() * (float)(1 + (i / cols) % 5) * (i % 7 == 0 ? 100.0f : 1.0f) *
            (i % 53 == 0 ? 0x1p-128f : 1.0f);
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack_bf16dp(W, (int)rows, (int)cols, &P), RNND_OK);
    ck_assert_int_eq(P.type, RNND_PACKED_BF16DP);
    ref_gemv(W, with_bias ? bias : NULL, X, B, rows, cols, want);
    const float *bv = with_bias ? bias : NULL;
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const rnnd_kernels *k = rnnd_kernels_by_name(paths[p]);
        if (!k)
            continue;
        for (size_t i = 0; i < B * rows; i++)
            got[i] = -999.0f;
        k->gemv(&P, bv, X, cols, B, got, rows, 0, (int)rows);
        for (size_t i = 0; i < B * rows; i++)
            expect(same(got[i], want[i]),
                   "%s rows %zu cols %zu B %zu: y[%zu][%zu] = %a, the statement %a", paths[p], rows,
                   cols, B, i / rows, i % rows, got[i], want[i]);
        /* a row range from a panel boundary to anywhere */
        size_t r0 = rows ? (rng_u32() % ((rows + 15) / 16)) * 16 : 0;
        size_t r1 = r0 + rng_u32() % (rows - r0 + 1);
        for (size_t i = 0; i < B * rows; i++)
            got[i] = -999.0f;
        k->gemv(&P, bv, X, cols, B, got, rows, (int)r0, (int)r1);
        for (size_t i = 0; i < B * rows; i++) {
            size_t j = i % rows;
            if (j >= r0 && j < r1)
                expect(same(got[i], want[i]), "%s range [%zu, %zu) y %zu", paths[p], r0, r1, i);
            else
                expect(got[i] == -999.0f, "%s range [%zu, %zu): row %zu written", paths[p], r0, r1,
                       j);
        }
        /* batch invariance: each row alone */
        for (size_t b = 0; b < B; b++) {
            k->gemv(&P, bv, X + b * cols, cols, 1, got + b * rows, rows, 0, (int)rows);
            for (size_t j = 0; j < rows; j++)
                expect(same(got[b * rows + j], want[b * rows + j]), "%s B %zu row %zu alone: %zu",
                       paths[p], B, b, j);
        }
    }
    rnnd_pack_release(&P);
    free(W);
    free(bias);
    free(X);
    free(want);
    free(got);
}

/* Random odd shapes, every B from 1 to 70 once: loop index = B - 1. */
START_TEST(gemv_shapes)
{
    rng_state = 0x7654321ull + (uint64_t)_i * 7919u;
    size_t B = (size_t)_i + 1;
    size_t rows = 1 + rng_u32() % 80, cols = 1 + rng_u32() % 70;
    check_shape(rows, cols, B, _i % 3 != 0);
}
END_TEST

/* One row, one column, both parities, a panel and a bit, 8-panel tiles and remainders,
 * rows around the 1024-column rounding block, a batch past the L2 row block (inputs rounded
 * once per block), rows too long for that (rounded per tile, 1024 columns at a time). */
START_TEST(gemv_edges)
{
    static const size_t shapes[][3] = {
        {1, 1, 1},      {16, 2, 2},     {17, 5, 3},    {15, 6, 1},    {16, 7, 9},    {129, 33, 1},
        {128, 64, 2},   {200, 100, 17}, {33, 1023, 1}, {40, 1024, 8}, {17, 1025, 7}, {20, 2049, 3},
        {40, 700, 100}, {17, 9300, 9},  {0, 5, 2},     {5, 0, 3},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_shape(shapes[i][0], shapes[i][1], shapes[i][2], (int)(i % 2));
}
END_TEST

/* Infinities and NaN in an input row make that row's outputs NaN or inf as the statement
 * says, on every path, without touching the other rows. */
START_TEST(gemv_nonfinite)
{
    rng_state = 0xabcdefull;
    const size_t rows = 37, cols = 21, B = 5;
    float W[37 * 21], X[5 * 21], want[5 * 37], got[5 * 37];
    random_w(W, rows, cols);
    for (size_t i = 0; i < B * cols; i++)
        X[i] = rng_f();
    X[1 * cols + 4] = INFINITY;
    X[2 * cols + 20] = NAN;
    X[3 * cols + 7] = 3.4e38f; /* rounds to inf in bf16 */
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack_bf16dp(W, (int)rows, (int)cols, &P), RNND_OK);
    ref_gemv(W, NULL, X, B, rows, cols, want);
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const rnnd_kernels *k = rnnd_kernels_by_name(paths[p]);
        if (!k)
            continue;
        k->gemv(&P, NULL, X, cols, B, got, rows, 0, (int)rows);
        for (size_t i = 0; i < B * rows; i++)
            expect(same(got[i], want[i]), "%s y %zu: %a, the statement %a", paths[p], i, got[i],
                   want[i]);
    }
    ck_assert(isnan(want[2 * rows]) && !isnan(want[0]));
    rnnd_pack_release(&P);
}
END_TEST

/* The layout (pairs of columns per row, zero pad), exact packing, and the refusals. */
START_TEST(pack_layout)
{
    const float W[3 * 3] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 1.00390625f, 9.0f};
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack_typed(W, NULL, 3, 3, RNND_PACKED_BF16DP, &P), RNND_OK);
    const uint16_t *d = P.data;
    ck_assert_int_eq(P.panels, 1);
    for (size_t r = 0; r < 3; r++)
        for (size_t k = 0; k < 4; k++) {
            float want = k < 3 ? W[r * 3 + k] : 0.0f;
            if (r == 2 && k == 1) /* 1 + 2^-8: a tie, to even (1.0) */
                want = 1.0f;
            ck_assert_uint_eq(d[(k / 2) * 32 + r * 2 + k % 2], rnnd_f32_to_bf16(want));
        }
    ck_assert_uint_eq(d[32 + 3 * 2], 0); /* past the rows */
    rnnd_pack_release(&P);
    const float big[1] = {3.4e38f};
    ck_assert_int_eq(rnnd_pack_bf16dp(big, 1, 1, &P), RNND_ERR_INVALID);
    ck_assert_ptr_null(P.data);
    ck_assert_int_eq(rnnd_pack_bf16dp(W, -1, 3, &P), RNND_ERR_INVALID);
}
END_TEST

static Suite *bf16dp_suite(void)
{
    Suite *s = suite_create("bf16dp");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, hw_dot_matches_statement);
    tcase_add_test(tc, hw_round_matches_statement);
    tcase_add_loop_test(tc, gemv_shapes, 0, 70);
    tcase_add_test(tc, gemv_edges);
    tcase_add_test(tc, gemv_nonfinite);
    tcase_add_test(tc, pack_layout);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bf16dp_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
