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

/* Panels per tile at one input row: 8 independent accumulators hide vpdpbusd's latency and
 * keep 8 weight streams loading. */
#define VNNI_NP 8

/* X[0, n) quantized with SX, offset to unsigned (q + 128), padded to a multiple of 4. */
static void vnni_quantize(const float *x, size_t n, float sx, uint8_t *xu)
{
    for (size_t k = 0; k < n; k++)
        xu[k] = (uint8_t)(rnnd_q8_one(x[k], sx) + 128);
    for (size_t k = n; k % 4; k++)
        xu[k] = 128;
}

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
    for (size_t p = (size_t)row_begin / RNND_PANEL; p < p_end; p += VNNI_NP) {
        const size_t np = p_end - p < VNNI_NP ? p_end - p : VNNI_NP;
        __m512i acc[VNNI_NP];
        for (int i = 0; i < VNNI_NP; i++)
            acc[i] = _mm512_setzero_si512();
        for (size_t k0 = 0; k0 < cols; k0 += RNND_Q8_BLOCK) {
            size_t n = cols - k0 < RNND_Q8_BLOCK ? cols - k0 : RNND_Q8_BLOCK;
            if (!one_block)
                vnni_quantize(x + k0, n, sxs, xu);
            const size_t g0 = k0 / 4, g1 = (k0 + n + 3) / 4;
            if (np == VNNI_NP) {
                for (size_t g = g0; g < g1; g++) {
                    int32_t x4;
                    memcpy(&x4, xu + 4 * (g - g0), sizeof x4);
                    const __m512i xv = _mm512_set1_epi32(x4);
                    const int8_t *l = w + (p * kq + g) * 64;
                    for (int i = 0; i < VNNI_NP; i++) {
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

void rnnd_gemv_i8_avx512(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                         size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    if (row_end <= row_begin)
        return;
    /* checked per call rather than stored: the layer keeps no mutable state */
    const int vnni = __builtin_cpu_supports("avx512vnni");
    for (size_t b = 0; b < B; b++) {
        if (vnni)
            vnni_gemv_row(W, bias, X + b * ldx, Y + b * ldy, row_begin, row_end);
        else
            madd_gemv_row(W, bias, X + b * ldx, Y + b * ldy, row_begin, row_end);
    }
}
