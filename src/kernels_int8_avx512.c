/* The int8 gemv on AVX-512: vpdpbusd (AVX512-VNNI) where the CPU has it, else the avx2
 * method (kernels_int8_madd.h) in 256 bits.
 *
 * vpdpbusd multiplies unsigned bytes by signed bytes, 4 per int32 lane, and adds the 4
 * products to the lane: one panel line (16 rows x 4 columns) is one zmm of weights against
 * the row's 4 inputs broadcast. The quantized input q_x (-127..127) goes in as q_x + 128
 * (1..255), so each lane sums q[j][k] * q_x[k] + 128 * q[j][k]; subtracting 128 times the
 * row's sum of q (packed with the matrix) leaves the exact sum. No step can saturate (the
 * instruction does not saturate; products are at most 255 * 127 and 65536 columns keep the
 * lane below 2^31), so the int32 total, and with it the one rescaling fma, is bitwise the
 * scalar reference's. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "kernels_internal.h"
#include "kernels_int8_madd.h"
#include "quant8.h"

/* X[0, n) quantized with SX, offset to unsigned (q + 128), padded to a multiple of 4.
 * 16 at a time, the operations of rnnd_q8_one in its order (divide, clamp to +-127, round
 * by adding and subtracting 1.5 * 2^23; the values are finite here, so min / max agree with
 * its compares), so the bytes are its bytes; the tail goes through rnnd_q8_one itself. */
static void vnni_quantize(const float *x, size_t n, float sx, uint8_t *xu)
{
    size_t k = 0;
    if (sx > 0.0f) {
        const __m512 s = _mm512_set1_ps(sx), hi = _mm512_set1_ps(127.0f),
                     lo = _mm512_set1_ps(-127.0f), magic = _mm512_set1_ps(12582912.0f);
        for (; k + 16 <= n; k += 16) {
            __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + k), s);
            v = _mm512_max_ps(_mm512_min_ps(v, hi), lo);
            v = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
            __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(v), _mm512_set1_epi32(128));
            _mm_storeu_si128((__m128i *)(void *)(xu + k), _mm512_cvtepi32_epi8(q));
        }
    }
    for (; k < n; k++)
        xu[k] = (uint8_t)(rnnd_q8_one(x[k], sx) + 128);
    for (k = n; k % 4; k++)
        xu[k] = 128;
}

#define VNNI_MAX_NB 4 /* batch rows per tile */
#define VNNI_MAX_NP 8 /* panels per tile */

/* The quantized input rows of one tile. */
typedef struct vnni_in {
    const float *X;
    size_t ldx, cols;
    int one_block;
    float sx[VNNI_MAX_NB];
    uint8_t xu[VNNI_MAX_NB][RNND_Q8_BLOCK] __attribute__((aligned(64)));
} vnni_in;

/* Panels [P, P + NP) against NB input rows: NB * NP accumulators (at most 16, or 8 for one
 * row: enough chains to hide vpdpbusd's latency and keep the weight streams loading); each
 * weight line is loaded once and used by all NB rows. NB and NP are constants where this is
 * inlined, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void vnni_panels(const rnnd_packed *W,
                                                              const float *bias, vnni_in *in,
                                                              float *Y, size_t ldy, int row_end,
                                                              size_t p, const int NB, const int NP)
{
    const size_t cols = in->cols, kq = (cols + 3) / 4;
    const int8_t *w = W->data;
    __m512i acc[VNNI_MAX_NB][VNNI_MAX_NP];
    for (int b = 0; b < NB; b++)
        for (int i = 0; i < NP; i++)
            acc[b][i] = _mm512_setzero_si512();
    for (size_t k0 = 0; k0 < cols; k0 += RNND_Q8_BLOCK) {
        size_t n = rnnd_q8_min(cols - k0, RNND_Q8_BLOCK);
        if (!in->one_block)
            for (int b = 0; b < NB; b++)
                vnni_quantize(in->X + (size_t)b * in->ldx + k0, n, in->sx[b], in->xu[b]);
        const size_t g0 = k0 / 4, g1 = (k0 + n + 3) / 4;
        for (size_t g = g0; g < g1; g++) {
            const int8_t *l = w + (p * kq + g) * 64;
            __m512i wv[VNNI_MAX_NP];
            for (int i = 0; i < NP; i++) {
                _mm_prefetch((const char *)(l + (size_t)i * kq * 64 + 1024), _MM_HINT_T0);
                wv[i] = _mm512_load_si512((const void *)(l + (size_t)i * kq * 64));
            }
            for (int b = 0; b < NB; b++) {
                int32_t x4;
                memcpy(&x4, in->xu[b] + 4 * (g - g0), sizeof x4);
                const __m512i xv = _mm512_set1_epi32(x4);
                for (int i = 0; i < NP; i++)
                    acc[b][i] = _mm512_dpbusd_epi32(acc[b][i], xv, wv[i]);
            }
        }
    }
    for (int i = 0; i < NP; i++) {
        const size_t j0 = (p + (size_t)i) * RNND_PANEL;
        if (j0 >= (size_t)row_end)
            break;
        const size_t n = (size_t)row_end - j0 < RNND_PANEL ? (size_t)row_end - j0 : RNND_PANEL;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        const __m512i off = _mm512_slli_epi32(_mm512_load_si512((const void *)(W->qsum + j0)), 7);
        const __m512 sw = _mm512_load_ps(W->scale + j0);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + j0) : _mm512_setzero_ps();
        for (int b = 0; b < NB; b++) {
            __m512i a = _mm512_sub_epi32(acc[b][i], off);
            __m512 s = _mm512_mul_ps(sw, _mm512_set1_ps(in->sx[b]));
            _mm512_mask_storeu_ps(Y + (size_t)b * ldy + j0, m,
                                  _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s, bv));
        }
    }
}

/* NB batch rows: quantized, then every panel of the row range, NP at a time and the rest
 * one by one. */
static inline __attribute__((always_inline)) void vnni_tile(const rnnd_packed *W, const float *bias,
                                                            const float *X, size_t ldx, float *Y,
                                                            size_t ldy, int row_begin, int row_end,
                                                            const int NB, const int NP)
{
    vnni_in in;
    in.X = X;
    in.ldx = ldx;
    in.cols = (size_t)W->cols;
    in.one_block = in.cols <= RNND_Q8_BLOCK;
    for (int b = 0; b < NB; b++) {
        in.sx[b] = rnnd_q8_scale(rnnd_q8_absmax_bits(X + (size_t)b * ldx, in.cols));
        if (in.one_block)
            vnni_quantize(X + (size_t)b * ldx, in.cols, in.sx[b], in.xu[b]);
    }
    const size_t p_end = ((size_t)row_end + RNND_PANEL - 1) / RNND_PANEL;
    size_t p = (size_t)row_begin / RNND_PANEL;
    for (; p + (size_t)NP <= p_end; p += (size_t)NP)
        vnni_panels(W, bias, &in, Y, ldy, row_end, p, NB, NP);
    for (; p < p_end; p++)
        vnni_panels(W, bias, &in, Y, ldy, row_end, p, NB, 1);
}

/* One input row: the 8-panel tile with the weights as vpdpbusd's memory operand and the
 * quantized row in a small buffer of its own (measured faster at B = 1 than vnni_tile with
 * NB = 1: LSTM H = 1024 7,200 against 5,200 steps/s, interleaved). */
static void vnni_gemv_row(const rnnd_packed *W, const float *bias, const float *x, float *y,
                          int row_begin, int row_end)
{
    const size_t cols = (size_t)W->cols, kq = (cols + 3) / 4;
    const int8_t *w = W->data;
    const int one_block = cols <= RNND_Q8_BLOCK;
    uint8_t xu[RNND_Q8_BLOCK] __attribute__((aligned(64)));
    const float sxs = rnnd_q8_scale(rnnd_q8_absmax_bits(x, cols));
    const __m512 sx = _mm512_set1_ps(sxs);
    if (one_block)
        vnni_quantize(x, cols, sxs, xu);
    const size_t p_end = ((size_t)row_end + RNND_PANEL - 1) / RNND_PANEL;
    for (size_t p = (size_t)row_begin / RNND_PANEL; p < p_end; p += VNNI_MAX_NP) {
        const size_t np = rnnd_q8_min(p_end - p, VNNI_MAX_NP);
        __m512i acc[VNNI_MAX_NP];
        for (int i = 0; i < VNNI_MAX_NP; i++)
            acc[i] = _mm512_setzero_si512();
        for (size_t k0 = 0; k0 < cols; k0 += RNND_Q8_BLOCK) {
            size_t n = rnnd_q8_min(cols - k0, RNND_Q8_BLOCK);
            if (!one_block)
                vnni_quantize(x + k0, n, sxs, xu);
            const size_t g0 = k0 / 4, g1 = (k0 + n + 3) / 4;
            if (np == VNNI_MAX_NP) {
                for (size_t g = g0; g < g1; g++) {
                    int32_t x4;
                    memcpy(&x4, xu + 4 * (g - g0), sizeof x4);
                    const __m512i xv = _mm512_set1_epi32(x4);
                    const int8_t *l = w + (p * kq + g) * 64;
                    for (int i = 0; i < VNNI_MAX_NP; i++) {
                        _mm_prefetch((const char *)(l + i * kq * 64 + 1024), _MM_HINT_T0);
                        acc[i] =
                            _mm512_dpbusd_epi32(acc[i], xv,
                                                _mm512_load_si512((const void *)(l + i * kq * 64)));
                    }
                }
            } else {
                for (size_t g = g0; g < g1; g++) {
                    int32_t x4;
                    memcpy(&x4, xu + 4 * (g - g0), sizeof x4);
                    const __m512i xv = _mm512_set1_epi32(x4);
                    for (size_t i = 0; i < np; i++)
                        acc[i] =
                            _mm512_dpbusd_epi32(acc[i], xv,
                                                _mm512_load_si512(
                                                    (const void *)(w + ((p + i) * kq + g) * 64)));
                }
            }
        }
        for (size_t i = 0; i < np; i++) {
            const size_t j0 = (p + i) * RNND_PANEL;
            const size_t n = (size_t)row_end - j0 < RNND_PANEL ? (size_t)row_end - j0 : RNND_PANEL;
            const __mmask16 m = (__mmask16)((1u << n) - 1u);
            __m512i qs = _mm512_load_si512((const void *)(W->qsum + j0));
            __m512i a = _mm512_sub_epi32(acc[i], _mm512_slli_epi32(qs, 7));
            __m512 s = _mm512_mul_ps(_mm512_load_ps(W->scale + j0), sx);
            __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + j0) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(y + j0, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s, b));
        }
    }
}

/* Batch rows in tiles of 4 (the last 1-3 rows one tile; a single row vnni_gemv_row). */
static void vnni_gemv(const rnnd_packed *W, const float *bias, const float *X, size_t ldx, size_t B,
                      float *Y, size_t ldy, int row_begin, int row_end)
{
    for (size_t b = 0; b < B;) {
        const float *x = X + b * ldx;
        float *y = Y + b * ldy;
        switch (B - b < 4 ? B - b : 4) {
        case 1:
            vnni_gemv_row(W, bias, x, y, row_begin, row_end);
            b += 1;
            break;
        case 2:
            vnni_tile(W, bias, x, ldx, y, ldy, row_begin, row_end, 2, 4);
            b += 2;
            break;
        case 3:
            vnni_tile(W, bias, x, ldx, y, ldy, row_begin, row_end, 3, 4);
            b += 3;
            break;
        default:
            vnni_tile(W, bias, x, ldx, y, ldy, row_begin, row_end, 4, 4);
            b += 4;
            break;
        }
    }
}

void rnnd_gemv_i8_avx512(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                         size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    if (row_end <= row_begin)
        return;
    /* checked per call rather than stored: the layer keeps no mutable state */
    if (__builtin_cpu_supports("avx512vnni")) {
        vnni_gemv(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        return;
    }
    for (size_t b = 0; b < B; b++)
        madd_gemv_row(W, bias, X + b * ldx, Y + b * ldy, row_begin, row_end);
}
