/* The bf16 compute mode's gemv on AVX512-BF16: VDPBF16PS (src/bf16dp.h states what it
 * computes; tests/check_bf16dp.c holds this CPU's instruction to that statement bitwise).
 *
 * One panel line (16 rows x 2 columns, RNND_PACKED_BF16DP) is one zmm of weights against
 * the input row's pair of bf16 values broadcast: each lane does its row's pair, the odd
 * column then the even one, into a float accumulator that starts from the bias. The input
 * rows are rounded to bf16 with VCVTNE2PS2BF16 (zero or subnormal to a signed zero, NaN
 * quiet, else nearest even: rnnd_bf16dp_round) a block of columns at a time, padded with
 * +0 to the block's pairs. Every output is the same chain of pairs in column order on every
 * tile shape, row range and batch size, so the bits are the scalar reference's. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "kernels_internal.h"

#define BD_MAX_NB 8        /* batch rows per tile */
#define BD_MAX_NP 8        /* panels per tile */
#define BD_KBLK 1024       /* input columns rounded at a time (a multiple of 32) */
#define BD_X_BLOCK 262144  /* bytes of input rows kept in L2 while every panel passes */
#define BD_XR_BYTES 147456 /* the rounded rows of such a block (half its bytes) and pads */

typedef struct bd_args {
    const uint16_t *w; /* RNND_PACKED_BF16DP data */
    size_t cols, kp;   /* columns, pairs */
    int row_end;
    const float *bias, *X;
    float *Y;
    size_t ldx, ldy;
    /* the row block's inputs rounded once for every tile (rows from XB0, XS pairs apart),
     * or NULL: each tile rounds its own rows */
    const uint32_t *xr;
    size_t xs, xb0;
} bd_args;

/* x[0, n) rounded to bf16 into XB as n / 2 pairs (n rounded up to a multiple of 32 with
 * +0; the caller reads only the pairs it needs). */
static inline void bd_round(const float *x, size_t n, uint32_t *xb)
{
    size_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
        _mm512_store_si512((void *)(xb + k / 2), (__m512i)v);
    }
    if (k < n) {
        size_t r = n - k;
        __mmask16 m0 = (__mmask16)(r >= 16 ? 0xffffu : (1u << r) - 1u);
        __mmask16 m1 = (__mmask16)(r > 16 ? (1u << (r - 16)) - 1u : 0u);
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + k + 16),
                                         _mm512_maskz_loadu_ps(m0, x + k));
        _mm512_store_si512((void *)(xb + k / 2), (__m512i)v);
    }
}

/* Panels [P, P + NP) against batch rows [B0, B0 + NB). NB and NP are constants where this
 * is inlined, so the NB * NP accumulators (at most 24) stay in registers. */
static inline __attribute__((always_inline)) void bd_tile(const bd_args *g, size_t p, size_t b0,
                                                          const int NB, const int NP)
{
    uint32_t xb[BD_MAX_NB][BD_KBLK / 2] __attribute__((aligned(64)));
    __m512 acc[BD_MAX_NB][BD_MAX_NP];
    __mmask16 mk[BD_MAX_NP];
#pragma GCC unroll 8
    for (int i = 0; i < NP; i++) {
        const size_t j0 = (p + (size_t)i) * RNND_PANEL;
        const size_t n =
            (size_t)g->row_end - j0 < RNND_PANEL ? (size_t)g->row_end - j0 : RNND_PANEL;
        mk[i] = (__mmask16)((1u << n) - 1u);
        const __m512 bv =
            g->bias ? _mm512_maskz_loadu_ps(mk[i], g->bias + j0) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
            acc[b][i] = bv;
    }
    const size_t kp = g->kp, kblk = g->xr ? g->cols : BD_KBLK;
    const uint32_t *xp[BD_MAX_NB];
    for (size_t k0 = 0; k0 < g->cols; k0 += kblk) {
        const size_t n = g->cols - k0 < kblk ? g->cols - k0 : kblk;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            if (g->xr) {
                xp[b] = g->xr + (b0 + (size_t)b - g->xb0) * g->xs;
            } else {
                bd_round(g->X + (b0 + (size_t)b) * g->ldx + k0, n, xb[b]);
                xp[b] = xb[b];
            }
        }
        const size_t q0 = k0 / 2, q1 = (k0 + n + 1) / 2;
        const uint16_t *base = g->w + p * kp * 32;
        for (size_t q = q0; q < q1; q++) {
            const uint16_t *l = base + q * 32;
            __m512bh wv[BD_MAX_NP];
#pragma GCC unroll 8
            for (int i = 0; i < NP; i++) {
                _mm_prefetch((const char *)(l + (size_t)i * kp * 32 + 512), _MM_HINT_T0);
                wv[i] = (__m512bh)_mm512_load_si512((const void *)(l + (size_t)i * kp * 32));
            }
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) {
                const __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xp[b][q - q0]);
#pragma GCC unroll 8
                for (int i = 0; i < NP; i++)
                    acc[b][i] = _mm512_dpbf16_ps(acc[b][i], wv[i], xv);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < NP; i++) {
        const size_t j0 = (p + (size_t)i) * RNND_PANEL;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
            _mm512_mask_storeu_ps(g->Y + (b0 + (size_t)b) * g->ldy + j0, mk[i], acc[b][i]);
    }
}

typedef void (*bd_fn)(const bd_args *g, size_t p, size_t b0);

#define BD_DEF(nb, np) \
    static void bd_##nb##_##np(const bd_args *g, size_t p, size_t b0) { bd_tile(g, p, b0, nb, np); }
#define BD_ROW(nb) BD_DEF(nb, 8) BD_DEF(nb, 4) BD_DEF(nb, 3) BD_DEF(nb, 1)
BD_ROW(1)
BD_ROW(2)
BD_ROW(3)
BD_ROW(4)
BD_ROW(5)
BD_ROW(6)
BD_ROW(7)
BD_ROW(8)

/* [rows of the tile - 1][panels: 8, 4, 3, 1] */
static const bd_fn bd_tiles[BD_MAX_NB][4] = {
#define BD_ENTRY(nb) \
    { \
        bd_##nb##_8, bd_##nb##_4, bd_##nb##_3, bd_##nb##_1 \
    }
    BD_ENTRY(1), BD_ENTRY(2), BD_ENTRY(3), BD_ENTRY(4),
    BD_ENTRY(5), BD_ENTRY(6), BD_ENTRY(7), BD_ENTRY(8),
#undef BD_ENTRY
};
static const int bd_np[4] = {8, 4, 3, 1};

/* Batch rows [BB, BE): as few tiles of at most 8 rows as fit, of balanced sizes; panel
 * groups as wide as the tallest tile allows (8 panels for 1-3 rows, 4 for 4-6, 3 for 7-8),
 * each group's weights read from memory once and reused from cache by every tile. */
static void bd_rows(const bd_args *g, int row_begin, size_t p_end, size_t bb, size_t be)
{
    const size_t n = be - bb, nt = (n + BD_MAX_NB - 1) / BD_MAX_NB;
    const size_t tall = (n + nt - 1) / nt;
    const int first = tall <= 3 ? 0 : tall <= 6 ? 1 : 2;
    size_t p = (size_t)row_begin / RNND_PANEL;
    while (p < p_end) {
        int i = first;
        while ((size_t)bd_np[i] > p_end - p)
            i++;
        size_t b = bb;
        for (size_t t = 0; t < nt; t++) {
            const size_t rows = n / nt + (t < n % nt ? 1 : 0);
            bd_tiles[rows - 1][i](g, p, b);
            b += rows;
        }
        p += (size_t)bd_np[i];
    }
}

void rnnd_gemv_bf16dp_avx512(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                             size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    if (B == 0 || row_end <= row_begin)
        return;
    /* checked per call rather than stored: the layer keeps no mutable state */
    if (!__builtin_cpu_supports("avx512bf16")) {
        rnnd_gemv_bf16dp_scalar(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        return;
    }
    bd_args g = {
        .w = W->data,
        .cols = (size_t)W->cols,
        .kp = ((size_t)W->cols + 1) / 2,
        .row_end = row_end,
        .bias = bias,
        .X = X,
        .Y = Y,
        .ldx = ldx,
        .ldy = ldy,
    };
    /* Each row block's inputs are rounded once here when they fit, not once per panel group
     * (the same bits: the rounding of an element does not depend on who does it). */
    uint32_t xr[BD_XR_BYTES / 4] __attribute__((aligned(64)));
    g.xs = (g.kp + 15) / 16 * 16; /* bd_round writes whole 32-column lines */
    const size_t p_end = ((size_t)row_end + RNND_PANEL - 1) / RNND_PANEL;
    const size_t blk_rows = BD_X_BLOCK / (g.cols * sizeof(float) + 1) / BD_MAX_NB * BD_MAX_NB;
    const size_t blk = blk_rows > BD_MAX_NB ? blk_rows : BD_MAX_NB;
    for (size_t bb = 0; bb < B; bb += blk) {
        const size_t be = B - bb < blk ? B : bb + blk;
        g.xr = NULL;
        if ((be - bb) * g.xs <= sizeof xr / sizeof xr[0]) {
            for (size_t b = bb; b < be; b++)
                bd_round(X + b * ldx, g.cols, xr + (b - bb) * g.xs);
            g.xr = xr;
            g.xb0 = bb;
        }
        bd_rows(&g, row_begin, p_end, bb, be);
    }
}
