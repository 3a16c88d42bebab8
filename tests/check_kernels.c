/* The kernel layer: every path this machine runs against the scalar reference (bitwise for
 * gemv), against float64 for accuracy, and the avx2/avx512 activations against each other
 * (bitwise); packing; the choice of path by RNND_ISA. */
#include "config.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/status.h"
#include "half.h"
#include "testcheck.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng_u32(void) { return tu_xorshift64(&rng_state); }

/* Uniform in [-1, 1). */
static float rng_f(void) { return (float)((double)rng_u32() / 2147483648.0 - 1.0); }

static void fill(float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] = rng_f();
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    expect(p != NULL, "out of memory");
    return p;
}

/* The paths this machine runs, scalar first; returns how many. */
static int get_paths(const rnnd_kernels *out[3])
{
    int n = 0;
    for (const char *const *a = rnnd_kernels_available(); *a != NULL; a++) {
        out[n] = rnnd_kernels_by_name(*a);
        ck_assert_ptr_nonnull(out[n]);
        ck_assert_str_eq(out[n]->name, *a);
        n++;
    }
    ck_assert_int_ge(n, 1);
    ck_assert_str_eq(out[0]->name, "scalar");
    return n;
}

/* Y is filled with this NaN pattern before a call, so writes outside the range show. */
#define SENTINEL 0x7fc0beefu

static float *sentinel_buf(size_t n)
{
    float *y = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        y[i] = from_bits(SENTINEL);
    return y;
}

/* Y[b*ldy + j] is sentinel for j outside [rb, re) (and every b). */
static void assert_outside_untouched(const float *Y, size_t B, size_t ldy, int rb, int re,
                                     const char *what)
{
    for (size_t b = 0; b < B; b++)
        for (size_t j = 0; j < ldy; j++)
            if ((int)j < rb || (int)j >= re)
                expect(bits(Y[b * ldy + j]) == SENTINEL,
                       "%s: wrote Y[%zu][%zu] outside rows [%d,%d)", what, b, j, rb, re);
}

/* ---- fmaf and packing ----------------------------------------------------------------------- */

START_TEST(test_fmaf_is_fused)
{
    /* (1 + 2^-13)^2 = 1 + 2^-12 + 2^-26: a float product loses the 2^-26, a fused op keeps
     * it. volatile keeps the compiler from folding the call at build time. */
    volatile float a = 1.0f + 0x1p-13f, c = -(1.0f + 0x1p-12f);
    ck_assert(fmaf(a, a, c) == 0x1p-26f);
    /* One rounding of the exact sum, not two (as float64 arithmetic then a cast would do):
     * a*b + c = 1 + 2^-23 + 2^-24 - 2^-70 is just below a tie, so it rounds down; rounded
     * to double first it becomes the tie and rounds to even, up. */
    volatile float x = 1.0f + 0x1p-23f, y = 0x1p-24f - 0x1p-47f, z = 1.0f + 0x1p-23f;
    ck_assert(fmaf(x, y, z) == 1.0f + 0x1p-23f);
    /* The same through the path tables: a 1x1 gemv is one fma. */
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    float w = a, xv = a, bias = c;
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack(&w, 1, 1, &P), 0);
    for (int i = 0; i < np; i++) {
        float yv = 1.0f;
        k[i]->gemv(&P, &bias, &xv, 1, 1, &yv, 1, 0, 1);
        expect(yv == 0x1p-26f, "%s: gemv is not fused", k[i]->name);
    }
    rnnd_pack_release(&P);
}
END_TEST

START_TEST(test_pack_layout)
{
    static const int shapes[][2] = {{1, 1}, {5, 3}, {16, 7}, {17, 1}, {37, 13}, {33, 64}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        float *W = xmalloc((size_t)rows * cols * sizeof(float));
        fill(W, (size_t)rows * cols);
        rnnd_packed P;
        ck_assert_int_eq(rnnd_pack(W, rows, cols, &P), RNND_OK);
        ck_assert_int_eq(P.rows, rows);
        ck_assert_int_eq(P.cols, cols);
        ck_assert_int_eq(P.panels, (rows + 15) / 16);
        ck_assert_uint_eq((uintptr_t)P.data % 64, 0);
        for (int p = 0; p < P.panels; p++)
            for (int k = 0; k < cols; k++)
                for (int r = 0; r < RNND_PANEL; r++) {
                    int j = p * RNND_PANEL + r;
                    float got = ((const float *)P.data)[((size_t)p * cols + k) * RNND_PANEL + r];
                    float want = j < rows ? W[(size_t)j * cols + k] : 0.0f;
                    expect(bits(got) == bits(want), "pack %dx%d: panel %d k %d r %d", rows, cols, p,
                           k, r);
                }
        rnnd_pack_release(&P);
        ck_assert_ptr_null(P.data);
        rnnd_pack_release(&P); /* a released (zeroed) struct is a no-op */
        free(W);
    }

    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack(NULL, 0, 5, &P), RNND_OK);
    ck_assert_int_eq(P.panels, 0);
    rnnd_pack_release(&P);
    ck_assert_int_eq(rnnd_pack(NULL, 3, 0, &P), RNND_OK);
    ck_assert_int_eq(P.panels, 1);
    rnnd_pack_release(&P);
    /* 2^31 x 2^31 floats cannot be allocated: NOMEM, no crash, nothing read from W. */
    float dummy = 0.0f;
    ck_assert_int_eq(rnnd_pack(&dummy, INT32_MAX, INT32_MAX, &P), RNND_ERR_NOMEM);
    ck_assert_ptr_null(P.data);
    ck_assert_int_eq(rnnd_pack(&dummy, -1, 3, &P), RNND_ERR_INVALID);
}
END_TEST

/* ---- gemv ----------------------------------------------------------------------------------- */

static const int g_rows[] = {1, 5, 16, 17, 37, 100, 257};
static const int g_cols[] = {1, 3, 13, 64, 129};
static const size_t g_B[] = {1, 2, 7, 64, 257};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- half-size weights --------------------------------------------------------------------- */

/* Round-to-nearest-even of X to a float format with MANT explicit mantissa bits and least
 * normal exponent EMIN (2^EMIN), in float64: X / quantum is exact, nearbyint rounds it to
 * even in the default mode. Past MAXV the result is inf. Written from the definition, not
 * from src/half.h's bit manipulation. */
static float round_ref(float x, int mant, int emin, double maxv)
{
    if (isnan(x) || isinf(x) || x == 0.0f)
        return x;
    int e;
    frexp((double)x, &e); /* |x| = m 2^e, m in [0.5, 1) */
    int q = e - 1 < emin ? emin - mant : e - 1 - mant;
    double r = ldexp(nearbyint(ldexp((double)x, -q)), q);
    /* the tie at maxv + half a quantum rounds to even, which is up: inf */
    if (fabs(r) > maxv)
        return x < 0 ? -INFINITY : INFINITY;
    return (float)r;
}

static float bf16_ref(float x) { return round_ref(x, 7, -126, 0x1.fep127); }
static float f16_ref(float x) { return round_ref(x, 10, -14, 65504.0); }

/* One float through the type and back, with src/half.h */
static float through(int type, float x)
{
    if (type == RNND_WEIGHTS_BF16)
        return rnnd_bf16_to_f32(rnnd_f32_to_bf16(x));
    return rnnd_f16_to_f32(rnnd_f32_to_f16(x));
}

static void check_round(int type, float x)
{
    float got = through(type, x);
    float want = type == RNND_WEIGHTS_BF16 ? bf16_ref(x) : f16_ref(x);
    if (isnan(x))
        expect(isnan(got), "type %d: NaN 0x%08x did not stay NaN", type, bits(x));
    else
        expect(bits(got) == bits(want), "type %d: %a (0x%08x) rounds to %a, want %a", type,
               (double)x, bits(x), (double)got, (double)want);
}

/* The conversions against the float64 definition: every half value, the midpoint to its
 * neighbour and one float either side of it (where ties to even shows), and a stride
 * through all 2^32 float bit patterns. */
START_TEST(test_half_conversions)
{
    for (int type = RNND_WEIGHTS_BF16; type <= RNND_WEIGHTS_F16; type++) {
        for (uint32_t h = 0; h < 0x10000; h++) {
            float v = type == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32((uint16_t)h)
                                                : rnnd_f16_to_f32((uint16_t)h);
            if (isnan(v))
                continue;
            /* widening is exact and narrowing gives the pattern back */
            uint16_t back = type == RNND_WEIGHTS_BF16 ? rnnd_f32_to_bf16(v) : rnnd_f32_to_f16(v);
            expect(back == h, "type %d: 0x%04x -> %a -> 0x%04x", type, h, (double)v, back);
            if (isinf(v))
                continue;
            float next = type == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32((uint16_t)(h + 1))
                                                   : rnnd_f16_to_f32((uint16_t)(h + 1));
            if ((h & 0x7fff) == 0x7fff || isnan(next))
                continue;
            float mid = (float)(((double)v + (double)next) / 2); /* exact in float */
            check_round(type, mid);
            check_round(type, nextafterf(mid, INFINITY));
            check_round(type, nextafterf(mid, -INFINITY));
        }
        for (uint64_t u = 0; u < 0x100000000ull; u += 4099)
            check_round(type, from_bits((uint32_t)u));
        check_round(type, FLT_MAX);
        check_round(type, -FLT_MAX);
        check_round(type, 65519.996f);
        check_round(type, 65520.0f);
        check_round(type, 0x1p-25f);
        check_round(type, 0x1.000002p-25f);
        check_round(type, FLT_MIN);
        check_round(type, 0x1p-149f);
    }
    /* the values the format doc names: out of float16 range, in bfloat16's */
    ck_assert(isinf(through(RNND_WEIGHTS_F16, 65520.0f)));
    ck_assert(through(RNND_WEIGHTS_F16, 65519.0f) == 65504.0f);
    ck_assert(through(RNND_WEIGHTS_BF16, 1e5f) == 99840.0f);
}
END_TEST

/* rnnd_pack_as: the panel layout with 2-byte elements, each the rounded weight; values out
 * of the type's range and unknown types refused. */
START_TEST(test_pack_half)
{
    static const int shapes[][2] = {{1, 1}, {17, 3}, {37, 13}};
    for (int type = RNND_WEIGHTS_BF16; type <= RNND_WEIGHTS_F16; type++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            int rows = shapes[s][0], cols = shapes[s][1];
            float *W = xmalloc((size_t)rows * cols * sizeof(float));
            fill(W, (size_t)rows * cols);
            rnnd_packed P;
            ck_assert_int_eq(rnnd_pack_as(W, rows, cols, type, &P), RNND_OK);
            ck_assert_int_eq(P.type, type);
            ck_assert_uint_eq((uintptr_t)P.data % 64, 0);
            const uint16_t *d = P.data;
            for (int p = 0; p < P.panels; p++)
                for (int k = 0; k < cols; k++)
                    for (int r = 0; r < RNND_PANEL; r++) {
                        int j = p * RNND_PANEL + r;
                        uint16_t got = d[((size_t)p * cols + k) * RNND_PANEL + r];
                        float gf = type == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32(got)
                                                             : rnnd_f16_to_f32(got);
                        float want = 0.0f;
                        if (j < rows)
                            want = type == RNND_WEIGHTS_BF16 ? bf16_ref(W[(size_t)j * cols + k])
                                                             : f16_ref(W[(size_t)j * cols + k]);
                        expect(bits(gf) == bits(want), "pack type %d %dx%d: p %d k %d r %d", type,
                               rows, cols, p, k, r);
                    }
            rnnd_pack_release(&P);
            free(W);
        }
    rnnd_packed P;
    float big[2] = {1.0f, 1e5f};
    ck_assert_int_eq(rnnd_pack_as(big, 1, 2, RNND_WEIGHTS_F16, &P), RNND_ERR_INVALID);
    ck_assert_ptr_null(P.data);
    ck_assert_int_eq(rnnd_pack_as(big, 1, 2, RNND_WEIGHTS_BF16, &P), RNND_OK);
    rnnd_pack_release(&P);
    float huge = FLT_MAX;
    ck_assert_int_eq(rnnd_pack_as(&huge, 1, 1, RNND_WEIGHTS_BF16, &P), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_pack_as(big, 1, 2, 3, &P), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_pack_as(big, 1, 2, -1, &P), RNND_ERR_INVALID);
}
END_TEST

/* Half-size weights on every path: bitwise the fma chain over the independently rounded
 * weights (so scalar == avx2 == avx512 and each equals the definition), and different from
 * the float chain (so the half type is really used). */
START_TEST(test_gemv_half_reference)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    const int type = _i == 0 ? RNND_WEIGHTS_BF16 : RNND_WEIGHTS_F16;
    const int rows = 53, cols = 131;
    const size_t Bs[] = {1, 2, 3, 5, 8};
    float *W = xmalloc((size_t)rows * cols * sizeof(float));
    float *Wr = xmalloc((size_t)rows * cols * sizeof(float));
    float *bias = xmalloc((size_t)rows * sizeof(float));
    fill(W, (size_t)rows * cols);
    fill(bias, rows);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        Wr[i] = type == RNND_WEIGHTS_BF16 ? bf16_ref(W[i]) : f16_ref(W[i]);
    rnnd_packed P, P32;
    ck_assert_int_eq(rnnd_pack_as(W, rows, cols, type, &P), RNND_OK);
    ck_assert_int_eq(rnnd_pack(W, rows, cols, &P32), RNND_OK);
    for (size_t ib = 0; ib < NELEM(Bs); ib++) {
        size_t B = Bs[ib];
        float *X = xmalloc(B * cols * sizeof(float));
        float *ref = xmalloc(B * rows * sizeof(float));
        float *Y = xmalloc(B * rows * sizeof(float));
        float *Y32 = xmalloc(B * rows * sizeof(float));
        fill(X, B * cols);
        for (size_t b = 0; b < B; b++)
            for (int j = 0; j < rows; j++) {
                float acc = bias[j];
                for (int c = 0; c < cols; c++)
                    acc = fmaf(Wr[(size_t)j * cols + c], X[b * cols + c], acc);
                ref[b * rows + j] = acc;
            }
        for (int i = 0; i < np; i++) {
            k[i]->gemv(&P, bias, X, cols, B, Y, rows, 0, rows);
            expect(memcmp(Y, ref, B * rows * sizeof(float)) == 0,
                   "%s: type %d B %zu: not the fma chain over the rounded weights", k[i]->name,
                   type, B);
            k[i]->gemv(&P32, bias, X, cols, B, Y32, rows, 0, rows);
            expect(memcmp(Y, Y32, B * rows * sizeof(float)) != 0,
                   "%s: type %d gives the float result", k[i]->name, type);
        }
        free(X);
        free(ref);
        free(Y);
        free(Y32);
    }
    rnnd_pack_release(&P);
    rnnd_pack_release(&P32);
    free(W);
    free(Wr);
    free(bias);
}
END_TEST

/* Every path bitwise equal to scalar on every shape, with and without bias, with strides
 * larger than the data, and no write outside the rows asked for. Loop index: weight type. */
START_TEST(test_gemv_bitwise_vs_scalar)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    for (size_t ir = 0; ir < NELEM(g_rows); ir++)
        for (size_t ic = 0; ic < NELEM(g_cols); ic++) {
            int rows = g_rows[ir], cols = g_cols[ic];
            float *W = xmalloc((size_t)rows * cols * sizeof(float));
            float *bias = xmalloc((size_t)rows * sizeof(float));
            fill(W, (size_t)rows * cols);
            fill(bias, (size_t)rows);
            rnnd_packed P;
            ck_assert_int_eq(rnnd_pack_as(W, rows, cols, _i, &P), RNND_OK);
            for (size_t ib = 0; ib < NELEM(g_B); ib++) {
                size_t B = g_B[ib];
                size_t ldx = (size_t)cols + (ib & 1) * 3; /* odd strides too */
                size_t ldy = (size_t)rows + (ib & 1) * 5;
                float *X = xmalloc(B * ldx * sizeof(float));
                fill(X, B * ldx);
                for (int wb = 0; wb < 2; wb++) {
                    const float *bb = wb ? bias : NULL;
                    float *ref = sentinel_buf(B * ldy);
                    k[0]->gemv(&P, bb, X, ldx, B, ref, ldy, 0, rows);
                    assert_outside_untouched(ref, B, ldy, 0, rows, "scalar");
                    for (int i = 1; i < np; i++) {
                        float *Y = sentinel_buf(B * ldy);
                        k[i]->gemv(&P, bb, X, ldx, B, Y, ldy, 0, rows);
                        expect(memcmp(Y, ref, B * ldy * sizeof(float)) == 0,
                               "%s: gemv differs from scalar: rows %d cols %d B %zu "
                               "bias %d",
                               k[i]->name, rows, cols, B, wb);
                        free(Y);
                    }
                    free(ref);
                }
                free(X);
            }
            rnnd_pack_release(&P);
            free(W);
            free(bias);
        }
}
END_TEST

/* A batch far larger than a step's: the input projection of whole sequences, which the
 * SIMD paths cut into blocks of rows (several blocks and a partial one here). */
START_TEST(test_gemv_large_batch)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    const int rows = 100, cols = 300;
    const size_t B = 1000, ldx = (size_t)cols + 3, ldy = (size_t)rows + 1;
    float *W = xmalloc((size_t)rows * cols * sizeof(float));
    float *bias = xmalloc((size_t)rows * sizeof(float));
    float *X = xmalloc(B * ldx * sizeof(float));
    fill(W, (size_t)rows * cols);
    fill(bias, (size_t)rows);
    fill(X, B * ldx);
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack_as(W, rows, cols, _i, &P), RNND_OK);
    float *ref = sentinel_buf(B * ldy);
    k[0]->gemv(&P, bias, X, ldx, B, ref, ldy, 0, rows);
    for (int i = 1; i < np; i++) {
        float *Y = sentinel_buf(B * ldy);
        k[i]->gemv(&P, bias, X, ldx, B, Y, ldy, 16, rows);
        k[i]->gemv(&P, bias, X, ldx, B, Y, ldy, 0, 16);
        expect(memcmp(Y, ref, B * ldy * sizeof(float)) == 0,
               "%s: gemv of %zu rows differs from scalar", k[i]->name, B);
        free(Y);
    }
    free(ref);
    rnnd_pack_release(&P);
    free(W);
    free(bias);
    free(X);
}
END_TEST

/* A row range gives bitwise the rows of the full range and writes nothing else. */
START_TEST(test_gemv_row_ranges)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    const int rows = 257, cols = 29;
    const size_t Bs[] = {1, 3, 9};
    float *W = xmalloc((size_t)rows * cols * sizeof(float));
    float *bias = xmalloc((size_t)rows * sizeof(float));
    fill(W, (size_t)rows * cols);
    fill(bias, rows);
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack_as(W, rows, cols, _i, &P), RNND_OK);
    for (size_t ib = 0; ib < NELEM(Bs); ib++) {
        size_t B = Bs[ib], ldx = cols, ldy = rows;
        float *X = xmalloc(B * ldx * sizeof(float));
        fill(X, B * ldx);
        for (int i = 0; i < np; i++) {
            float *full = sentinel_buf(B * ldy);
            k[i]->gemv(&P, bias, X, ldx, B, full, ldy, 0, rows);
            for (int rb = 0; rb < rows; rb += 16)
                for (int re = rb; re <= rows; re += (re - rb < 40 ? 1 : 23)) {
                    float *Y = sentinel_buf(B * ldy);
                    k[i]->gemv(&P, bias, X, ldx, B, Y, ldy, rb, re);
                    assert_outside_untouched(Y, B, ldy, rb, re, k[i]->name);
                    for (size_t b = 0; b < B; b++)
                        expect(memcmp(Y + b * ldy + rb, full + b * ldy + rb,
                                      (size_t)(re - rb) * sizeof(float)) == 0,
                               "%s: range [%d,%d) B %zu differs from the full range", k[i]->name,
                               rb, re, B);
                    free(Y);
                }
            free(full);
        }
        free(X);
    }
    rnnd_pack_release(&P);
    free(W);
    free(bias);
}
END_TEST

/* Row b of a B = 257 call equals a B = 1 call on that row alone, on every path. */
START_TEST(test_gemv_batch_invariance)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    const int rows = 100, cols = 77;
    const size_t B = 257;
    float *W = xmalloc((size_t)rows * cols * sizeof(float));
    float *bias = xmalloc((size_t)rows * sizeof(float));
    float *X = xmalloc(B * cols * sizeof(float));
    float *Y = xmalloc(B * rows * sizeof(float));
    fill(W, (size_t)rows * cols);
    fill(bias, rows);
    fill(X, B * cols);
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack_as(W, rows, cols, _i, &P), RNND_OK);
    for (int i = 0; i < np; i++) {
        k[i]->gemv(&P, bias, X, cols, B, Y, rows, 0, rows);
        for (size_t b = 0; b < B; b++) {
            float y1[100];
            k[i]->gemv(&P, bias, X + b * cols, cols, 1, y1, rows, 0, rows);
            expect(memcmp(y1, Y + b * rows, sizeof(y1)) == 0,
                   "%s: row %zu of B=257 differs from B=1", k[i]->name, b);
            /* and inside a batch of other sizes, at another position */
            size_t B2 = 1 + b % 11;
            float *X2 = xmalloc(B2 * cols * sizeof(float));
            float *Y2 = xmalloc(B2 * rows * sizeof(float));
            fill(X2, B2 * cols);
            memcpy(X2 + (B2 - 1) * cols, X + b * cols, cols * sizeof(float));
            k[i]->gemv(&P, bias, X2, cols, B2, Y2, rows, 0, rows);
            expect(memcmp(y1, Y2 + (B2 - 1) * rows, sizeof(y1)) == 0,
                   "%s: row %zu differs as row %zu of B=%zu", k[i]->name, b, B2 - 1, B2);
            free(X2);
            free(Y2);
        }
    }
    rnnd_pack_release(&P);
    free(W);
    free(bias);
    free(X);
    free(Y);
}
END_TEST

/* Against float64 within the error bound of an n-term fma chain. */
START_TEST(test_gemv_vs_f64)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    const int rows = 37, cols = 513;
    const size_t B = 5;
    float *W = xmalloc((size_t)rows * cols * sizeof(float));
    float *bias = xmalloc((size_t)rows * sizeof(float));
    float *X = xmalloc(B * cols * sizeof(float));
    float *Y = xmalloc(B * rows * sizeof(float));
    fill(W, (size_t)rows * cols);
    fill(bias, rows);
    fill(X, B * cols);
    rnnd_packed P;
    ck_assert_int_eq(rnnd_pack(W, rows, cols, &P), RNND_OK);
    for (int i = 0; i < np; i++) {
        k[i]->gemv(&P, bias, X, cols, B, Y, rows, 0, rows);
        for (size_t b = 0; b < B; b++)
            for (int j = 0; j < rows; j++) {
                double s = bias[j], mag = fabs(bias[j]);
                for (int c = 0; c < cols; c++) {
                    double t = (double)W[(size_t)j * cols + c] * X[b * cols + c];
                    s += t;
                    mag += fabs(t);
                }
                double bound = (cols + 1) * (double)FLT_EPSILON / 2 * mag * 1.01 + 1e-30;
                double err = fabs(Y[b * rows + j] - s);
                expect(err <= bound, "%s: gemv row %d: error %g > bound %g", k[i]->name, j, err,
                       bound);
            }
    }
    rnnd_pack_release(&P);
    free(W);
    free(bias);
    free(X);
    free(Y);
}
END_TEST

/* ---- activations ---------------------------------------------------------------------------- */

typedef struct act_case {
    int kind;
    float alpha, beta;
} act_case;

/* Every kind with its ONNX defaults, plus a few other parameters. */
static const act_case act_cases[] = {
    {RNND_ACT_SIGMOID, 0, 0},
    {RNND_ACT_TANH, 0, 0},
    {RNND_ACT_RELU, 0, 0},
    {RNND_ACT_HARDSIGMOID, 0.2f, 0.5f},
    {RNND_ACT_HARDSIGMOID, 0.7f, -0.1f},
    {RNND_ACT_LEAKYRELU, 0.01f, 0},
    {RNND_ACT_LEAKYRELU, 1.5f, 0},
    {RNND_ACT_THRESHOLDEDRELU, 1.0f, 0},
    {RNND_ACT_THRESHOLDEDRELU, -0.25f, 0},
    {RNND_ACT_SCALEDTANH, 1.0f, 1.0f},
    {RNND_ACT_SCALEDTANH, 1.7159f, 0.6667f},
    {RNND_ACT_AFFINE, 1.0f, 0.0f},
    {RNND_ACT_AFFINE, -0.3f, 2.5f},
    {RNND_ACT_ELU, 1.0f, 0},
    {RNND_ACT_ELU, 0.3f, 0},
    {RNND_ACT_SOFTSIGN, 0, 0},
    {RNND_ACT_SOFTPLUS, 0, 0},
};

/* float64 reference, straight from the ONNX definitions. */
static double act_f64(const act_case *c, double x)
{
    double a = c->alpha, b = c->beta;
    switch (c->kind) {
    case RNND_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case RNND_ACT_TANH: return tanh(x);
    case RNND_ACT_RELU: return x > 0 ? x : 0;
    case RNND_ACT_HARDSIGMOID: return fmin(1.0, fmax(0.0, a * x + b));
    case RNND_ACT_LEAKYRELU: return x >= 0 ? x : a * x;
    case RNND_ACT_THRESHOLDEDRELU: return x > a ? x : 0;
    case RNND_ACT_SCALEDTANH: return a * tanh(b * x);
    case RNND_ACT_AFFINE: return a * x + b;
    case RNND_ACT_ELU: return x >= 0 ? x : a * expm1(x);
    case RNND_ACT_SOFTSIGN: return isinf(x) ? copysign(1.0, x) : x / (1 + fabs(x));
    case RNND_ACT_SOFTPLUS: return x > 30 ? x + log1p(exp(-x)) : log1p(exp(x));
    }
    return NAN;
}

/* The size of one float ulp at the magnitude of V (subnormal spacing below FLT_MIN). */
static double ulp_of(double v)
{
    v = fabs(v);
    if (v < FLT_MIN)
        return 0x1p-149;
    int e;
    frexp(v, &e); /* v = m * 2^e, m in [0.5, 1) */
    return ldexp(1.0, e - 24);
}

/* The error allowed for one result, in ulps of the reference; a few kinds whose float
 * formula itself rounds intermediates (alpha*x+beta, beta*x) get a relative bound on the
 * terms instead. Returns the error measure and its bound via *bound. */
static double act_err(const act_case *c, float x, float y, double ref, double *bound)
{
    double err = fabs((double)y - ref);
    switch (c->kind) {
    case RNND_ACT_HARDSIGMOID:
    case RNND_ACT_AFFINE: {
        /* two roundings of terms up to |alpha x| + |beta|, whatever the cancellation */
        double mag = fabs((double)c->alpha * x) + fabs((double)c->beta);
        *bound = 2.0 * (double)FLT_EPSILON * mag + 0x1p-149;
        return err;
    }
    case RNND_ACT_SCALEDTANH:
        /* beta*x and alpha*tanh each round: two ulps more than tanh */
        *bound = 6.0;
        return err / ulp_of(ref);
    case RNND_ACT_SIGMOID:
    case RNND_ACT_TANH:
    case RNND_ACT_ELU:
    case RNND_ACT_SOFTPLUS: *bound = 4.0; return err / ulp_of(ref);
    case RNND_ACT_SOFTSIGN:
        *bound = 2.0; /* 1 + |x| and the division round */
        return err / ulp_of(ref);
    default:
        *bound = 1.0; /* one rounding at most */
        return err / ulp_of(ref);
    }
}

static void run_act(const rnnd_kernels *k, const act_case *c, float *x, size_t n)
{
    rnnd_activation a = {c->kind, c->alpha, c->beta};
    k->act(&a, x, n);
}

/* Every path, every kind, a dense sweep of [-20, 20] and log-spaced points out to the
 * overflow range, against float64. */
START_TEST(test_act_vs_f64)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    size_t n = 0, cap = 600000;
    float *in = xmalloc(cap * sizeof(float));
    for (int i = -200000; i <= 200000; i++)
        in[n++] = (float)i * 1e-4f;
    for (float v = 1e-30f; v < 100.0f; v *= 1.01f) {
        in[n++] = v;
        in[n++] = -v;
    }
    ck_assert_uint_le(n, cap);
    float *y = xmalloc(n * sizeof(float));
    for (int i = 0; i < np; i++)
        for (size_t ci = 0; ci < NELEM(act_cases); ci++) {
            const act_case *c = &act_cases[ci];
            memcpy(y, in, n * sizeof(float));
            run_act(k[i], c, y, n);
            double worst = 0, worst_x = 0;
            for (size_t j = 0; j < n; j++) {
                double bound, ref = act_f64(c, in[j]);
                /* results past float's range are checked by test_act_special_values */
                if (fabs(ref) > FLT_MAX)
                    continue;
                double e = act_err(c, in[j], y[j], ref, &bound);
                expect(e <= bound,
                       "%s %s(alpha %g beta %g): x = %a: got %a want %a "
                       "(error %g > %g)",
                       k[i]->name, rnnd_act_name(c->kind), c->alpha, c->beta, in[j], y[j], ref, e,
                       bound);
                if (e / bound > worst)
                    worst = e / bound, worst_x = in[j];
            }
            if (getenv("RNND_TEST_VERBOSE"))
                printf("%-7s %-16s alpha %-7g beta %-7g worst error %.3f of bound at %g\n",
                       k[i]->name, rnnd_act_name(c->kind), c->alpha, c->beta, worst, worst_x);
        }
    free(in);
    free(y);
}
END_TEST

/* Sigmoid and tanh within 4 ulp on [-20, 20], every path, on every 97th float of the
 * range (about 23 million inputs per function). */
START_TEST(test_act_sigmoid_tanh_sweep)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    enum { CHUNK = 4096 };
    float *x = xmalloc(CHUNK * sizeof(float)), *y = xmalloc(CHUNK * sizeof(float));
    double *ref = xmalloc(CHUNK * sizeof(double));
    const act_case cs[2] = {{RNND_ACT_SIGMOID, 0, 0}, {RNND_ACT_TANH, 0, 0}};
    const uint64_t lim = bits(20.0f);
    for (int ci = 0; ci < 2; ci++) {
        double worst[3] = {0, 0, 0};
        for (uint64_t u = 0; u <= 2 * lim;) {
            size_t n = 0;
            for (; n < CHUNK && u <= 2 * lim; u += 97, n++) {
                /* u <= lim: the positive floats up to 20; beyond: the negative ones */
                uint32_t v = (uint32_t)(u <= lim ? u : (u - lim) | 0x80000000u);
                x[n] = from_bits(v);
                ref[n] = act_f64(&cs[ci], x[n]);
            }
            for (int i = 0; i < np; i++) {
                memcpy(y, x, n * sizeof(float));
                run_act(k[i], &cs[ci], y, n);
                for (size_t j = 0; j < n; j++) {
                    double e = fabs((double)y[j] - ref[j]) / ulp_of(ref[j]);
                    if (e > worst[i])
                        worst[i] = e;
                    expect(e <= 4.0, "%s %s(%a) = %a, want %a: %.2f ulp", k[i]->name,
                           rnnd_act_name(cs[ci].kind), x[j], y[j], ref[j], e);
                }
            }
        }
        if (getenv("RNND_TEST_VERBOSE"))
            for (int i = 0; i < np; i++)
                printf("%-7s %-8s worst %.3f ulp on [-20, 20]\n", k[i]->name,
                       rnnd_act_name(cs[ci].kind), worst[i]);
    }
    free(x);
    free(y);
    free(ref);
}
END_TEST

/* +-0, +-inf, NaN, subnormals and huge values give the mathematically right result. */
START_TEST(test_act_special_values)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    const float inf = INFINITY;
    const float xs[] = {0.0f,      -0.0f,      inf,   -inf,   NAN,       -NAN,
                        FLT_MAX,   -FLT_MAX,   1e30f, -1e30f, 0x1p-149f, -0x1p-149f,
                        0x1p-130f, -0x1p-130f, 88.8f, -88.8f, 100.f,     -100.f,
                        104.f,     -104.f,     200.f, -200.f};
    const size_t n = NELEM(xs);
    for (int i = 0; i < np; i++)
        for (size_t ci = 0; ci < NELEM(act_cases); ci++) {
            const act_case *c = &act_cases[ci];
            float y[NELEM(xs)];
            memcpy(y, xs, sizeof(xs));
            run_act(k[i], c, y, n);
            for (size_t j = 0; j < n; j++) {
                double ref = act_f64(c, xs[j]);
                const char *nm = rnnd_act_name(c->kind);
                if (isnan(xs[j])) {
                    expect(isnan(y[j]), "%s %s(NaN) = %a, want NaN", k[i]->name, nm, y[j]);
                    continue;
                }
                if (isinf(ref) || fabs(ref) > FLT_MAX) {
                    expect(isinf(y[j]) && (y[j] > 0) == (ref > 0), "%s %s(%a) = %a, want %g",
                           k[i]->name, nm, xs[j], y[j], ref);
                    continue;
                }
                double bound, e = act_err(c, xs[j], y[j], ref, &bound);
                /* subnormal results (exp underflow) may lose a couple of bits */
                if (fabs(ref) < FLT_MIN)
                    bound = fmax(bound, 4.0);
                expect(!isnan(y[j]) && e <= bound, "%s %s(alpha %g)(%a) = %a, want %a", k[i]->name,
                       nm, c->alpha, xs[j], y[j], ref);
            }
        }
    /* exact values that matter */
    for (int i = 0; i < np; i++) {
        float y[4] = {0.0f, -0.0f, inf, -inf};
        run_act(k[i], &(act_case){RNND_ACT_SIGMOID, 0, 0}, y, 4);
        ck_assert(y[0] == 0.5f && y[1] == 0.5f && y[2] == 1.0f && y[3] == 0.0f);
        float t[4] = {0.0f, -0.0f, inf, -inf};
        run_act(k[i], &(act_case){RNND_ACT_TANH, 0, 0}, t, 4);
        ck_assert(bits(t[0]) == 0 && bits(t[1]) == 0x80000000u && t[2] == 1.0f && t[3] == -1.0f);
    }
}
END_TEST

/* avx2 and avx512 give bitwise identical activations: every 4099th bit pattern of the whole
 * float range (all classes: zeros, subnormals, normals, infinities, NaNs) plus [-20, 20]. */
START_TEST(test_act_simd_paths_agree)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    size_t n = 0, cap = (1ull << 32) / 4099 + 450000;
    float *x = xmalloc(cap * sizeof(float));
    for (uint64_t u = 0; u < (1ull << 32); u += 4099)
        x[n++] = from_bits((uint32_t)u);
    const uint32_t special[] = {0,           0x80000000u, 1,           0x80000001u, 0x007fffffu,
                                0x807fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                0x7f800001u, 0x7f7fffffu, 0xff7fffffu};
    for (size_t i = 0; i < NELEM(special); i++)
        x[n++] = from_bits(special[i]);
    for (int i = -200000; i <= 200000; i++)
        x[n++] = (float)i * 1e-4f;
    ck_assert_uint_le(n, cap);
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
    int compared = 0;
    for (int p = 1; p < np; p++)
        for (int q = p + 1; q < np; q++)
            for (size_t ci = 0; ci < NELEM(act_cases); ci++) {
                memcpy(a, x, n * sizeof(float));
                memcpy(b, x, n * sizeof(float));
                run_act(k[p], &act_cases[ci], a, n);
                run_act(k[q], &act_cases[ci], b, n);
                for (size_t j = 0; j < n; j++)
                    expect(bits(a[j]) == bits(b[j]), "%s(%a): %s gives %a, %s gives %a",
                           rnnd_act_name(act_cases[ci].kind), x[j], k[p]->name, a[j], k[q]->name,
                           b[j]);
                compared++;
            }
#ifdef RNND_HAVE_X86
    /* On an x86 machine with both SIMD paths, this test must have compared something. */
    if (rnnd_kernels_by_name("avx512") != NULL)
        ck_assert_int_eq(compared, (int)NELEM(act_cases));
#endif
    free(x);
    free(a);
    free(b);
}
END_TEST

/* An element's result depends on nothing but its value: not its offset, not n. */
START_TEST(test_act_position_invariance)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    enum { N = 67 };
    float base[N];
    for (int j = 0; j < N; j++)
        base[j] = rng_f() * 12.0f;
    for (int i = 0; i < np; i++)
        for (size_t ci = 0; ci < NELEM(act_cases); ci++) {
            float ref[N];
            memcpy(ref, base, sizeof(ref));
            run_act(k[i], &act_cases[ci], ref, N);
            for (int off = 0; off < 17; off++)
                for (int n = 0; off + n <= N; n++) {
                    float buf[N + 2];
                    buf[0] = from_bits(SENTINEL);
                    memcpy(buf + 1, base, sizeof(base));
                    buf[N + 1] = from_bits(SENTINEL);
                    run_act(k[i], &act_cases[ci], buf + 1 + off, (size_t)n);
                    for (int j = 0; j < N; j++) {
                        float want = (j >= off && j < off + n) ? ref[j] : base[j];
                        expect(bits(buf[1 + j]) == bits(want),
                               "%s %s: element %d differs with offset %d n %d", k[i]->name,
                               rnnd_act_name(act_cases[ci].kind), j, off, n);
                    }
                    expect(bits(buf[0]) == SENTINEL && bits(buf[N + 1]) == SENTINEL,
                           "%s: act wrote outside [0, n)", k[i]->name);
                }
        }
}
END_TEST

/* ---- the fused LSTM row ------------------------------------------------------------------- */

/* What rnnd_kernels.lstm_row documents, built from K's own activation kernel one element at
 * a time (position does not matter to it) and plain C float arithmetic (-ffp-contract=off). */
static float act1(const rnnd_kernels *k, const rnnd_activation *a, float x)
{
    k->act(a, &x, 1);
    return x;
}

static float clip1_(int has_clip, float c, float x)
{
    return !has_clip ? x : x > c ? c : x < -c ? -c : x;
}

static float clip1(const rnnd_lstm_math *m, float x) { return clip1_(m->has_clip, m->clip, x); }

static void lstm_row_composed(const rnnd_kernels *k, const rnnd_lstm_math *m, const float *gx,
                              const float *g, const float *cp, const float *cl, float *cn, float *h,
                              size_t j0, size_t j1)
{
    size_t H = m->H, oc = m->forget_gate ? 3 * H : 2 * H;
    for (size_t j = j0; j < j1; j++) {
        float c = cp[j], pi = 0, pf = 0, po = 0;
        float i = gx[j] + g[j];
        if (m->P) {
            pi = m->P[j];
            po = m->P[H + j];
            pf = m->P[2 * H + j];
            i = i + pi * c;
        }
        i = act1(k, m->af, clip1(m, i));
        float cc = act1(k, m->ag, clip1(m, gx[oc + j] + g[oc + j]));
        float cnew;
        if (!m->forget_gate) {
            cnew = c + i * cc;
        } else if (m->input_forget) {
            cnew = (1.0f - i) * c + i * cc;
        } else {
            float f = gx[2 * H + j] + g[2 * H + j];
            if (m->P)
                f = f + pf * c;
            f = act1(k, m->af, clip1(m, f));
            cnew = f * c + i * cc;
        }
        if (m->Dc) { /* the depth gate: its block follows the last gate's */
            float d = gx[oc + H + j] + m->Dc[j] * c;
            d = d + m->Dl[j] * cl[j];
            d = act1(k, m->af, clip1(m, d));
            cnew = cnew + d * cl[j];
        }
        float o = gx[H + j] + g[H + j];
        if (m->P)
            o = o + po * cnew;
        o = act1(k, m->af, clip1(m, o));
        cn[j] = cnew;
        h[j] = o * act1(k, m->ah, cnew);
    }
}

/* Every path's fused row equals the documented formula on its own activations bit for bit,
 * over every unit range [j0, j1) (so tails and offsets change nothing) and writes nothing
 * outside it; the SIMD paths agree with each other bit for bit; CN may be CP. Variants 6-9
 * have a depth gate (with a forget gate; peepholes, clip and other activations; coupled
 * gates; no forget gate). */
START_TEST(test_lstm_row)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    static const rnnd_activation sig = {RNND_ACT_SIGMOID, 0, 0}, tnh = {RNND_ACT_TANH, 0, 0},
                                 hsig = {RNND_ACT_HARDSIGMOID, 0.2f, 0.5f},
                                 relu = {RNND_ACT_RELU, 0, 0}, elu = {RNND_ACT_ELU, 1.0f, 0},
                                 stanh = {RNND_ACT_SCALEDTANH, 1.5f, 0.7f};
    static const size_t Hs[] = {1, 7, 16, 23, 40};
    int variants = 0;
    for (size_t hi = 0; hi < NELEM(Hs); hi++)
        for (int v = 0; v < 10; v++) {
            int dg = v >= 6;
            size_t H = Hs[hi], G = (v == 4 || v == 9 ? 3 : 4) + (dg ? 1 : 0);
            rnnd_lstm_math m = {.H = H,
                                .forget_gate = v != 4 && v != 9,
                                .input_forget = v == 3 || v == 8,
                                .has_clip = v == 2 || v == 5 || v == 7,
                                .clip = 1.5f,
                                .af = &sig,
                                .ag = &tnh,
                                .ah = &tnh};
            float *P = xmalloc(3 * H * sizeof(float));
            float *Dc = xmalloc(H * sizeof(float)), *Dl = xmalloc(H * sizeof(float));
            float *cl = xmalloc(H * sizeof(float));
            fill(P, 3 * H);
            fill(Dc, H);
            fill(Dl, H);
            for (size_t j = 0; j < H; j++)
                cl[j] = rng_f() * 3.0f;
            if (dg) {
                m.Dc = Dc;
                m.Dl = Dl;
            }
            if (v == 1 || v == 5 || v == 7)
                m.P = P;
            if (v == 5 || v == 7) {
                m.af = &hsig;
                m.ag = &relu;
                m.ah = &elu;
            } else if (v == 2) {
                m.ah = &stanh;
            }
            float *gx = xmalloc(G * H * sizeof(float)), *g = xmalloc(G * H * sizeof(float));
            float *cp = xmalloc(H * sizeof(float));
            for (size_t j = 0; j < G * H; j++) {
                gx[j] = rng_f() * 4.0f;
                g[j] = rng_f() * 4.0f;
            }
            for (size_t j = 0; j < H; j++)
                cp[j] = rng_f() * 3.0f;
            if (H > 3) {
                gx[0] = from_bits(0x7fc00000u); /* NaN flows through to c and h */
                cp[1] = 0x1p100f;
            }
            float *simd_c = NULL, *simd_h = NULL;
            for (int p = 0; p < np; p++) {
                float *wc = xmalloc(H * sizeof(float)), *wh = xmalloc(H * sizeof(float));
                lstm_row_composed(k[p], &m, gx, g, cp, dg ? cl : NULL, wc, wh, 0, H);
                for (size_t j0 = 0; j0 <= H; j0 += (H > 16 ? 3 : 1))
                    for (size_t j1 = j0; j1 <= H; j1++) {
                        float *cn = sentinel_buf(H), *h = sentinel_buf(H);
                        k[p]->lstm_row(&m, gx, g, cp, dg ? cl : NULL, cn, h, j0, j1);
                        for (size_t j = 0; j < H; j++) {
                            int in = j >= j0 && j < j1;
                            expect(bits(cn[j]) == (in ? bits(wc[j]) : SENTINEL) &&
                                       bits(h[j]) == (in ? bits(wh[j]) : SENTINEL),
                                   "%s variant %d H %zu [%zu,%zu): unit %zu c %a h %a, "
                                   "want %a %a",
                                   k[p]->name, v, H, j0, j1, j, cn[j], h[j], in ? wc[j] : NAN,
                                   in ? wh[j] : NAN);
                        }
                        free(cn);
                        free(h);
                    }
                /* in place: CN = CP */
                float *c2 = xmalloc(H * sizeof(float)), *h2 = xmalloc(H * sizeof(float));
                memcpy(c2, cp, H * sizeof(float));
                k[p]->lstm_row(&m, gx, g, c2, dg ? cl : NULL, c2, h2, 0, H);
                expect(memcmp(c2, wc, H * sizeof(float)) == 0 &&
                           memcmp(h2, wh, H * sizeof(float)) == 0,
                       "%s variant %d: CN = CP differs", k[p]->name, v);
                free(c2);
                free(h2);
                if (p >= 1 && simd_c) {
                    expect(memcmp(simd_c, wc, H * sizeof(float)) == 0 &&
                               memcmp(simd_h, wh, H * sizeof(float)) == 0,
                           "variant %d H %zu: %s and %s differ", v, H, k[1]->name, k[p]->name);
                    free(wc);
                    free(wh);
                } else if (p >= 1) {
                    simd_c = wc;
                    simd_h = wh;
                } else {
                    free(wc);
                    free(wh);
                }
            }
            free(simd_c);
            free(simd_h);
            free(gx);
            free(g);
            free(cp);
            free(P);
            free(Dc);
            free(Dl);
            free(cl);
            variants++;
        }
    ck_assert_int_eq(variants, 10 * (int)NELEM(Hs));
}
END_TEST

/* The GRU halves, against the documented formulas on each path's own activations, over
 * every unit range, writing nothing outside it; SIMD paths agree bit for bit. */
START_TEST(test_gru_rows)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    static const rnnd_activation sig = {RNND_ACT_SIGMOID, 0, 0}, tnh = {RNND_ACT_TANH, 0, 0},
                                 hsig = {RNND_ACT_HARDSIGMOID, 0.2f, 0.5f},
                                 elu = {RNND_ACT_ELU, 1.0f, 0};
    static const size_t Hs[] = {1, 7, 16, 23, 40};
    int checked = 0;
    for (size_t hi = 0; hi < NELEM(Hs); hi++)
        for (int v = 0; v < 4; v++) {
            size_t H = Hs[hi];
            rnnd_gru_math m = {.H = H,
                               .linear_before_reset = v & 1,
                               .has_clip = v >= 2,
                               .clip = 1.25f,
                               .af = &sig,
                               .ag = &tnh};
            if (v == 3) {
                m.af = &hsig;
                m.ag = &elu;
            }
            float *gx = xmalloc(3 * H * sizeof(float)), *g0 = xmalloc(2 * H * sizeof(float));
            float *hp = xmalloc(H * sizeof(float)), *t0 = xmalloc(H * sizeof(float));
            for (size_t j = 0; j < 3 * H; j++)
                gx[j] = rng_f() * 4.0f;
            for (size_t j = 0; j < 2 * H; j++)
                g0[j] = rng_f() * 4.0f;
            for (size_t j = 0; j < H; j++) {
                hp[j] = rng_f();
                t0[j] = rng_f() * 3.0f;
            }
            float *first_g = NULL, *first_h = NULL;
            for (int p = 0; p < np; p++) {
                /* the documented values, with this path's activations */
                float *wg = xmalloc(2 * H * sizeof(float)), *wt = xmalloc(H * sizeof(float));
                float *wh = xmalloc(H * sizeof(float));
                for (size_t j = 0; j < H; j++) {
                    float z = act1(k[p], m.af, clip1_(m.has_clip, m.clip, gx[j] + g0[j]));
                    float r = act1(k[p], m.af, clip1_(m.has_clip, m.clip, gx[H + j] + g0[H + j]));
                    wg[j] = z;
                    wg[H + j] = r;
                    wt[j] = r * (m.linear_before_reset ? t0[j] : hp[j]);
                    float c = act1(k[p], m.ag, clip1_(m.has_clip, m.clip, gx[2 * H + j] + wt[j]));
                    wh[j] = (1.0f - z) * c + z * hp[j];
                }
                for (size_t j0 = 0; j0 <= H; j0 += (H > 16 ? 3 : 1))
                    for (size_t j1 = j0; j1 <= H; j1++) {
                        float *g = xmalloc(2 * H * sizeof(float)), *t = sentinel_buf(H);
                        float *hn = sentinel_buf(H);
                        memcpy(g, g0, 2 * H * sizeof(float));
                        if (m.linear_before_reset)
                            memcpy(t, t0, H * sizeof(float));
                        k[p]->gru_gates(&m, gx, g, hp, t, j0, j1);
                        k[p]->gru_finish(&m, gx + 2 * H, g, t, hp, hn, j0, j1);
                        for (size_t j = 0; j < H; j++) {
                            int in = j >= j0 && j < j1;
                            uint32_t want_t = in        ? bits(wt[j])
                                : m.linear_before_reset ? bits(t0[j])
                                                        : SENTINEL;
                            expect(bits(g[j]) == bits(in ? wg[j] : g0[j]) &&
                                       bits(g[H + j]) == bits(in ? wg[H + j] : g0[H + j]) &&
                                       bits(t[j]) == want_t &&
                                       bits(hn[j]) == (in ? bits(wh[j]) : SENTINEL),
                                   "%s variant %d H %zu [%zu,%zu): unit %zu: z %a r %a t %a "
                                   "h %a",
                                   k[p]->name, v, H, j0, j1, j, g[j], g[H + j], t[j], hn[j]);
                        }
                        free(g);
                        free(t);
                        free(hn);
                    }
                if (p >= 1 && first_g) {
                    expect(memcmp(first_g, wg, 2 * H * sizeof(float)) == 0 &&
                               memcmp(first_h, wh, H * sizeof(float)) == 0,
                           "variant %d H %zu: %s and %s differ", v, H, k[1]->name, k[p]->name);
                    free(wg);
                    free(wh);
                } else if (p >= 1) {
                    first_g = wg;
                    first_h = wh;
                } else {
                    free(wg);
                    free(wh);
                }
                free(wt);
            }
            free(first_g);
            free(first_h);
            free(gx);
            free(g0);
            free(hp);
            free(t0);
            checked++;
        }
    ck_assert_int_eq(checked, 4 * (int)NELEM(Hs));
}
END_TEST

/* Clockwork rows: every path computes af(gx + g) with its own activation, over every unit
 * range, writes nothing outside it, and avx2 and avx512 agree bit for bit (the activations
 * are the shared vmath ones; only the scalar path is libm's). */
START_TEST(test_clock_rows)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    static const rnnd_activation acts[] = {
        {RNND_ACT_TANH, 0, 0},
        {RNND_ACT_SOFTSIGN, 0, 0},
        {RNND_ACT_RELU, 0, 0},
        {RNND_ACT_AFFINE, 0.5f, 0.125f},
    };
    static const size_t Hs[] = {1, 7, 16, 23, 40};
    int checked = 0;
    for (size_t hi = 0; hi < NELEM(Hs); hi++)
        for (size_t v = 0; v < NELEM(acts); v++) {
            size_t H = Hs[hi];
            float *gx = xmalloc(H * sizeof(float)), *g = xmalloc(H * sizeof(float));
            for (size_t j = 0; j < H; j++) {
                gx[j] = rng_f() * (j % 5 == 0 ? 40.0f : 4.0f);
                g[j] = rng_f() * 3.0f;
            }
            float *first = NULL;
            for (int p = 0; p < np; p++) {
                float *wh = xmalloc(H * sizeof(float));
                for (size_t j = 0; j < H; j++)
                    wh[j] = act1(k[p], &acts[v], gx[j] + g[j]);
                for (size_t j0 = 0; j0 <= H; j0 += (H > 16 ? 3 : 1))
                    for (size_t j1 = j0; j1 <= H; j1++) {
                        float *hn = sentinel_buf(H);
                        k[p]->clock_row(&acts[v], gx, g, hn, j0, j1);
                        for (size_t j = 0; j < H; j++) {
                            int in = j >= j0 && j < j1;
                            expect(bits(hn[j]) == (in ? bits(wh[j]) : SENTINEL),
                                   "%s act %zu H %zu [%zu,%zu): unit %zu: h %a want %a", k[p]->name,
                                   v, H, j0, j1, j, hn[j], wh[j]);
                        }
                        free(hn);
                    }
                if (p >= 1 && first) {
                    expect(memcmp(first, wh, H * sizeof(float)) == 0,
                           "act %zu H %zu: %s and %s differ", v, H, k[1]->name, k[p]->name);
                    free(wh);
                } else if (p >= 1) {
                    first = wh;
                } else {
                    free(wh);
                }
            }
            free(first);
            free(gx);
            free(g);
            checked++;
        }
    ck_assert_int_eq(checked, (int)(NELEM(Hs) * NELEM(acts)));
}
END_TEST

/* minGRU / minLSTM rows: every path computes the formula of rnnd/kernels.h with its own
 * activations, over every unit range (tails, offsets), writes nothing outside it, and avx2
 * and avx512 agree bit for bit. Large pre-activations drive the gates to 0 and 1. */
START_TEST(test_min_rows)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    static const rnnd_activation sig = {RNND_ACT_SIGMOID, 0, 0}, tnh = {RNND_ACT_TANH, 0, 0},
                                 ident = {RNND_ACT_AFFINE, 1.0f, 0.0f},
                                 hsig = {RNND_ACT_HARDSIGMOID, 0.2f, 0.5f};
    static const size_t Hs[] = {1, 7, 16, 23, 40};
    int checked = 0;
    for (size_t hi = 0; hi < NELEM(Hs); hi++)
        for (int v = 0; v < 4; v++) {
            size_t H = Hs[hi];
            rnnd_min_math m = {.H = H, .lstm = v & 1, .af = &sig, .ag = &ident};
            if (v >= 2) {
                m.af = &hsig;
                m.ag = &tnh;
            }
            size_t G = m.lstm ? 3 : 2;
            float *gx = xmalloc(G * H * sizeof(float)), *hp = xmalloc(H * sizeof(float));
            for (size_t j = 0; j < G * H; j++)
                gx[j] = rng_f() * (j % 5 == 0 ? 40.0f : 4.0f);
            for (size_t j = 0; j < H; j++)
                hp[j] = rng_f() * 2.0f;
            float *first = NULL;
            for (int p = 0; p < np; p++) {
                float *wh = xmalloc(H * sizeof(float));
                for (size_t j = 0; j < H; j++) {
                    if (!m.lstm) {
                        float z = act1(k[p], m.af, gx[j]), n = act1(k[p], m.ag, gx[H + j]);
                        wh[j] = (1.0f - z) * hp[j] + z * n;
                    } else {
                        float f = act1(k[p], m.af, gx[j]), i = act1(k[p], m.af, gx[H + j]);
                        float n = act1(k[p], m.ag, gx[2 * H + j]), s = f + i;
                        wh[j] = (f / s) * hp[j] + (i / s) * n;
                    }
                }
                for (size_t j0 = 0; j0 <= H; j0 += (H > 16 ? 3 : 1))
                    for (size_t j1 = j0; j1 <= H; j1++) {
                        float *hn = sentinel_buf(H);
                        k[p]->min_row(&m, gx, hp, hn, j0, j1);
                        for (size_t j = 0; j < H; j++) {
                            int in = j >= j0 && j < j1;
                            expect(bits(hn[j]) == (in ? bits(wh[j]) : SENTINEL),
                                   "%s variant %d H %zu [%zu,%zu): unit %zu: h %a want %a",
                                   k[p]->name, v, H, j0, j1, j, hn[j], wh[j]);
                        }
                        free(hn);
                    }
                /* in place (HN == HP), as the kernels' contract allows */
                float *h2 = xmalloc(H * sizeof(float));
                memcpy(h2, hp, H * sizeof(float));
                k[p]->min_row(&m, gx, h2, h2, 0, H);
                expect(memcmp(h2, wh, H * sizeof(float)) == 0, "%s variant %d H %zu: in place",
                       k[p]->name, v, H);
                free(h2);
                if (p >= 1 && first) {
                    expect(memcmp(first, wh, H * sizeof(float)) == 0,
                           "variant %d H %zu: %s and %s differ", v, H, k[1]->name, k[p]->name);
                    free(wh);
                } else if (p >= 1) {
                    first = wh;
                } else {
                    free(wh);
                }
            }
            free(first);
            free(gx);
            free(hp);
            checked++;
        }
    ck_assert_int_eq(checked, 4 * (int)NELEM(Hs));
}
END_TEST

/* sLSTM in float64, the equations, for unit J of one row. */
static void slstm_ref(int exp_forget, size_t H, const float *gx, const float *g, const float *st,
                      size_t j, double out[4], double tol[4])
{
    double pi = (double)gx[j] + g[j], pf = (double)gx[H + j] + g[H + j];
    double pz = (double)gx[2 * H + j] + g[2 * H + j], po = (double)gx[3 * H + j] + g[3 * H + j];
    double lf = exp_forget ? pf : -log1p(exp(-pf));
    if (!exp_forget && pf < -30)
        lf = pf - log1p(exp(pf));
    double a = lf + st[2 * H + j], m = a > pi ? a : pi;
    double ig = exp(pi - m), fg = exp(a - m);
    double tc = fg * fabs((double)st[j]) + ig * fabs(tanh(pz));
    double c = fg * st[j] + ig * tanh(pz), n = fg * st[H + j] + ig;
    double sg = 1.0 / (1.0 + exp(-po));
    out[0] = c;
    out[1] = n;
    out[2] = m;
    out[3] = sg * c / n;
    /* float rounding of the sums and of a = lf + m_prev (inside both exps), a few ulp of
     * each transcendental: relative to the terms, not to a result that may cancel */
    double e = 1e-5 * (1.0 + fabs(a) + fabs(pi));
    tol[0] = e * tc + 1e-37;
    tol[1] = e * fabs(n) + 1e-37;
    tol[2] = 1e-6 * (fabs(lf) + fabs((double)st[2 * H + j]) + fabs(pi)) + 1e-37;
    tol[3] = sg * tol[0] / fabs(n) + e * fabs(out[3]) + 1e-37;
}

/* slstm_row: the scalar path within float rounding of the float64 equations (ordinary and
 * +-30 pre-activations with m_prev up to +-60, both forget modes), every path bit for bit the
 * scalar one (they share kernels_vmath.h), over every unit range, in place (SN == S) too, and
 * nothing written outside the range. */
START_TEST(test_slstm_rows)
{
    const rnnd_kernels *k[3];
    int np = get_paths(k);
    static const size_t Hs[] = {1, 7, 16, 23, 40};
    int checked = 0;
    for (size_t hi = 0; hi < NELEM(Hs); hi++)
        for (int v = 0; v < 4; v++) {
            size_t H = Hs[hi];
            rnnd_slstm_math m = {.H = H, .exp_forget = v & 1};
            float big = v >= 2 ? 30.0f : 3.0f;
            float *gx = xmalloc(4 * H * sizeof(float)), *g = xmalloc(4 * H * sizeof(float));
            float *st = xmalloc(3 * H * sizeof(float));
            for (size_t j = 0; j < 4 * H; j++) {
                gx[j] = rng_f() * big;
                g[j] = rng_f() * big * 0.5f;
            }
            for (size_t j = 0; j < H; j++) {
                st[j] = rng_f() * 4.0f;                    /* c */
                st[H + j] = 0.05f + fabsf(rng_f()) * 3.0f; /* n > 0 */
                st[2 * H + j] = rng_f() * 2.0f * big;      /* m */
            }
            if (H > 1) /* the first step of a session: everything zero */
                st[0] = st[H] = st[2 * H] = 0.0f;
            /* the reference path against the equations */
            float *want = xmalloc(4 * H * sizeof(float)); /* c, n, m, h */
            k[0]->slstm_row(&m, gx, g, st, want, want + 3 * H, 0, H);
            for (size_t j = 0; j < H; j++) {
                double r[4], tol[4];
                slstm_ref(m.exp_forget, H, gx, g, st, j, r, tol);
                for (int q = 0; q < 4; q++) {
                    double got = want[(size_t)q * H + j];
                    expect(isfinite(got) && fabs(got - r[q]) <= tol[q],
                           "scalar variant %d H %zu unit %zu: %c %.9g want %.9g (tol %.3g)", v, H,
                           j, "cnmh"[q], got, r[q], tol[q]);
                }
            }
            for (int p = 0; p < np; p++) {
                for (size_t j0 = 0; j0 <= H; j0 += (H > 16 ? 3 : 1))
                    for (size_t j1 = j0; j1 <= H; j1++) {
                        float *sn = sentinel_buf(3 * H), *hn = sentinel_buf(H);
                        k[p]->slstm_row(&m, gx, g, st, sn, hn, j0, j1);
                        for (size_t j = 0; j < H; j++) {
                            int in = j >= j0 && j < j1;
                            for (int q = 0; q < 4; q++) {
                                float got = q < 3 ? sn[(size_t)q * H + j] : hn[j];
                                uint32_t w = in ? bits(want[(size_t)q * H + j]) : SENTINEL;
                                expect(bits(got) == w,
                                       "%s variant %d H %zu [%zu,%zu): unit "
                                       "%zu: %c %a want %a",
                                       k[p]->name, v, H, j0, j1, j, "cnmh"[q], got, from_bits(w));
                            }
                        }
                        free(sn);
                        free(hn);
                    }
                /* in place (SN == S), as the kernels' contract allows */
                float *s2 = xmalloc(3 * H * sizeof(float)), *h2 = xmalloc(H * sizeof(float));
                memcpy(s2, st, 3 * H * sizeof(float));
                k[p]->slstm_row(&m, gx, g, s2, s2, h2, 0, H);
                expect(memcmp(s2, want, 3 * H * sizeof(float)) == 0 &&
                           memcmp(h2, want + 3 * H, H * sizeof(float)) == 0,
                       "%s variant %d H %zu: in place", k[p]->name, v, H);
                free(s2);
                free(h2);
            }
            free(want);
            free(gx);
            free(g);
            free(st);
            checked++;
        }
    ck_assert_int_eq(checked, 4 * (int)NELEM(Hs));
}
END_TEST

/* ---- selection ------------------------------------------------------------------------------ */

START_TEST(test_select)
{
    char err[256];
    const char *const *avail = rnnd_kernels_available();
    const char *best = NULL;
    int n_avail = 0;
    for (const char *const *a = avail; *a != NULL; a++, n_avail++)
        best = *a;
    ck_assert_int_ge(n_avail, 1);
    ck_assert_str_eq(avail[0], "scalar");

    /* by_name agrees with the available list */
    const char *all[] = {"scalar", "avx2", "avx512"};
    for (size_t i = 0; i < NELEM(all); i++) {
        int listed = 0;
        for (const char *const *a = avail; *a != NULL; a++)
            listed |= strcmp(*a, all[i]) == 0;
        const rnnd_kernels *k = rnnd_kernels_by_name(all[i]);
        ck_assert_int_eq(k != NULL, listed);
    }
#ifdef RNND_HAVE_X86
    ck_assert_int_eq(rnnd_kernels_by_name("avx2") != NULL,
                     __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
    ck_assert_int_eq(rnnd_kernels_by_name("avx512") != NULL,
                     __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"));
#else
    ck_assert_ptr_null(rnnd_kernels_by_name("avx2"));
    ck_assert_ptr_null(rnnd_kernels_by_name("avx512"));
#endif
    ck_assert_ptr_null(rnnd_kernels_by_name("AVX2"));
    ck_assert_ptr_null(rnnd_kernels_by_name(""));
    ck_assert_ptr_null(rnnd_kernels_by_name(NULL));

    /* unset, empty and auto: the best path */
    unsetenv("RNND_ISA");
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof(err));
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->name, best);
    setenv("RNND_ISA", "", 1);
    ck_assert_ptr_eq(rnnd_kernels_select(err, sizeof(err)), k);
    setenv("RNND_ISA", "auto", 1);
    ck_assert_ptr_eq(rnnd_kernels_select(err, sizeof(err)), k);

    /* each name forces its path, or fails with a message when this machine lacks it */
    for (size_t i = 0; i < NELEM(all); i++) {
        setenv("RNND_ISA", all[i], 1);
        err[0] = '\0';
        const rnnd_kernels *f = rnnd_kernels_select(err, sizeof(err));
        if (rnnd_kernels_by_name(all[i]) != NULL) {
            ck_assert_ptr_nonnull(f);
            ck_assert_str_eq(f->name, all[i]);
        } else {
            ck_assert_ptr_null(f);
            ck_assert_ptr_nonnull(strstr(err, "RNND_ISA"));
            ck_assert_ptr_nonnull(strstr(err, all[i]));
        }
    }

    /* an unknown name: NULL, and a message naming the variable, the value and the choices */
    setenv("RNND_ISA", "sse9", 1);
    err[0] = '\0';
    ck_assert_ptr_null(rnnd_kernels_select(err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "RNND_ISA"));
    ck_assert_ptr_nonnull(strstr(err, "sse9"));
    for (const char *const *a = avail; *a != NULL; a++)
        expect(strstr(err, *a) != NULL, "message lacks %s: %s", *a, err);
    /* a short buffer is truncated, not overrun; NULL err is allowed */
    char small[8];
    memset(small, 'x', sizeof(small));
    ck_assert_ptr_null(rnnd_kernels_select(small, 4));
    ck_assert_int_eq(small[3], '\0');
    ck_assert_int_eq(small[4], 'x');
    ck_assert_ptr_null(rnnd_kernels_select(NULL, 0));
    unsetenv("RNND_ISA");
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fmaf_is_fused);
    tcase_add_test(tc, test_pack_layout);
    tcase_add_test(tc, test_half_conversions);
    tcase_add_test(tc, test_pack_half);
    tcase_add_loop_test(tc, test_gemv_half_reference, 0, 2);    /* bf16, f16 */
    tcase_add_loop_test(tc, test_gemv_bitwise_vs_scalar, 0, 3); /* f32, bf16, f16 */
    tcase_add_loop_test(tc, test_gemv_row_ranges, 0, 3);        /* f32, bf16, f16 */
    tcase_add_loop_test(tc, test_gemv_large_batch, 0, 3);       /* f32, bf16, f16 */
    tcase_add_loop_test(tc, test_gemv_batch_invariance, 0, 3);  /* f32, bf16, f16 */
    tcase_add_test(tc, test_gemv_vs_f64);
    tcase_add_test(tc, test_act_vs_f64);
    tcase_add_test(tc, test_act_sigmoid_tanh_sweep);
    tcase_add_test(tc, test_act_special_values);
    tcase_add_test(tc, test_act_simd_paths_agree);
    tcase_add_test(tc, test_act_position_invariance);
    tcase_add_test(tc, test_lstm_row);
    tcase_add_test(tc, test_gru_rows);
    tcase_add_test(tc, test_min_rows);
    tcase_add_test(tc, test_clock_rows);
    tcase_add_test(tc, test_slstm_rows);
    tcase_add_test(tc, test_select);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(kernels_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
