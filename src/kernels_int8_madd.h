/* The int8 gemv with vpmaddwd (AVX2 instructions), for one input row: included by
 * kernels_int8_avx2.c and, for CPUs without AVX512-VNNI, kernels_int8_avx512.c; each
 * compiles it with its own -m flags.
 *
 * A panel line (16 rows x 4 columns, 64 bytes) is four 16-byte loads, each sign-extended to
 * 16 int16 (vpmovsxbw: 4 rows x 4 columns) and multiplied by the row's 4 quantized inputs
 * repeated (int16 too) with vpmaddwd, which sums adjacent pairs into int32: 2 lanes per
 * weight row, added together at the end. Every product and sum is exact (|q| <= 127, and
 * 65536 columns of 127 * 127 stay below 2^31), so the int32 total is the scalar reference's
 * whatever the order; the rescale is the same one fma. vpmaddubsw would be one instruction
 * fewer but saturates its int16 pair sums.
 *
 * Include it after <immintrin.h>, rnnd/kernels.h and kernels_internal.h (like
 * kernels_cells.h, it is part of the kernel layer's text, not a module of its own). */
#ifndef RNND_KERNELS_INT8_MADD_H
#define RNND_KERNELS_INT8_MADD_H

#include <string.h>

#include "quant8.h"

/* X[k0, k0 + n) quantized with SX into XQ as int16, zero-padded to a multiple of 4. */
static inline void madd_quantize(const float *x, size_t n, float sx, int16_t *xq)
{
    for (size_t k = 0; k < n; k++)
        xq[k] = (int16_t)rnnd_q8_one(x[k], sx);
    for (size_t k = n; k % 4; k++)
        xq[k] = 0;
}

/* The 8 int32 sums of rows 0-7 of a panel from the pair sums of rows 0-3 (A) and 4-7 (B). */
static inline __m256i madd_rows8(__m256i a, __m256i b)
{
    /* hadd: [r0 r1 r4 r5 | r2 r3 r6 r7] */
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(a, b), 0xd8);
}

/* Rescale 8 rows' sums A from row J0 on, one fma each, storing rows below ROW_END. */
static inline void madd_store8(const rnnd_packed *W, const float *bias, float *y, __m256i a,
                               __m256 sx, size_t j0, size_t row_end)
{
    if (j0 >= row_end)
        return;
    size_t n = row_end - j0 < 8 ? row_end - j0 : 8;
    __m256i m =
        _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 s = _mm256_mul_ps(_mm256_load_ps(W->scale + j0), sx);
    __m256 b = bias ? _mm256_maskload_ps(bias + j0, m) : _mm256_setzero_ps();
    _mm256_maskstore_ps(y + j0, m, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), s, b));
}

/* Panels [P0, P1), groups of 4 columns [G0, G1) against XQ (int16, from group G0 on), into
 * the pair-sum accumulators ACC (4 per panel, at most 2 panels). */
static inline void madd_panels(const int8_t *w, size_t kq, size_t p0, size_t np, size_t g0,
                               size_t g1, const int16_t *xq, __m256i acc[8])
{
    for (size_t g = g0; g < g1; g++) {
        int64_t x4;
        memcpy(&x4, xq + 4 * (g - g0), sizeof x4);
        const __m256i xv = _mm256_set1_epi64x(x4);
        for (size_t i = 0; i < np; i++) {
            const int8_t *l = w + ((p0 + i) * kq + g) * 64;
            for (int c = 0; c < 4; c++) {
                __m256i wv = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(l + 16 * c)));
                acc[4 * i + c] = _mm256_add_epi32(acc[4 * i + c], _mm256_madd_epi16(wv, xv));
            }
        }
    }
}

static inline void madd_gemv_row(const rnnd_packed *W, const float *bias, const float *x, float *y,
                                 int row_begin, int row_end)
{
    const size_t cols = (size_t)W->cols, kq = (cols + 3) / 4;
    const int8_t *w = W->data;
    const int one_block = cols <= RNND_Q8_BLOCK;
    int16_t xq[RNND_Q8_BLOCK] __attribute__((aligned(32)));
    const float sxs = rnnd_q8_scale(rnnd_q8_absmax_bits(x, cols));
    const __m256 sx = _mm256_set1_ps(sxs);
    if (one_block)
        madd_quantize(x, cols, sxs, xq);
    const size_t p_end = ((size_t)row_end + RNND_PANEL - 1) / RNND_PANEL;
    for (size_t p = (size_t)row_begin / RNND_PANEL; p < p_end; p += 2) {
        const size_t np = rnnd_q8_min(p_end - p, 2);
        __m256i acc[8];
        for (int i = 0; i < 8; i++)
            acc[i] = _mm256_setzero_si256();
        for (size_t k0 = 0; k0 < cols; k0 += RNND_Q8_BLOCK) {
            size_t n = rnnd_q8_min(cols - k0, RNND_Q8_BLOCK);
            if (!one_block)
                madd_quantize(x + k0, n, sxs, xq);
            madd_panels(w, kq, p, np, k0 / 4, (k0 + n + 3) / 4, xq, acc);
        }
        for (size_t i = 0; i < np; i++) {
            size_t j0 = (p + i) * RNND_PANEL;
            madd_store8(W, bias, y, madd_rows8(acc[4 * i], acc[4 * i + 1]), sx, j0,
                        (size_t)row_end);
            madd_store8(W, bias, y, madd_rows8(acc[4 * i + 2], acc[4 * i + 3]), sx, j0 + 8,
                        (size_t)row_end);
        }
    }
}

#endif
