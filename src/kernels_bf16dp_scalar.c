/* The bf16 compute mode's reference gemv (src/bf16dp.h states the arithmetic): one output
 * at a time, the input row rounded to bf16 per element, the pairs in column order. Every
 * path without AVX512-BF16 runs this; kernels_bf16dp_avx512.c is held to it bitwise. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "rnnd/kernels.h"
#include "bf16dp.h"
#include "kernels_internal.h"

void rnnd_gemv_bf16dp_scalar(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                             size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    const size_t cols = (size_t)W->cols, kp = (cols + 1) / 2;
    const uint16_t *w = W->data;
    for (size_t b = 0; b < B; b++) {
        const float *x = X + b * ldx;
        float *y = Y + b * ldy;
        for (int j = row_begin; j < row_end; j++) {
            const uint16_t *wr =
                w + (size_t)(j / RNND_PANEL) * kp * 2 * RNND_PANEL + (size_t)(j % RNND_PANEL) * 2;
            float acc = bias ? bias[j] : 0.0f;
            for (size_t i = 0; i < kp; i++) {
                uint16_t x0 = rnnd_bf16dp_round(x[2 * i]);
                uint16_t x1 = 2 * i + 1 < cols ? rnnd_bf16dp_round(x[2 * i + 1]) : 0;
                const uint16_t *l = wr + i * 2 * RNND_PANEL;
                acc = rnnd_bf16dp_pair(acc, l[0], l[1], x0, x1);
            }
            y[j] = acc;
        }
    }
}
